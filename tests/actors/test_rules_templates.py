"""R20: autoresponder (and keyword reply) templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.actors.keywords import HELP_REPLY, OPT_IN_REPLY, OPT_OUT_REPLY
from tidings.actors.templates import TEMPLATE_FIELDS, Template, TemplateError

BRAND = {
    "organization_prefix": "Acme",
    "support_email": "support@acme.example",
    "account_name": "Acme Inc.",
}
DEFAULT_AUTORESPONDER = (
    "{{ organization_prefix }}: This inbox isn't monitored. For help, email "
    "{{ support_email }}. Msg&data rates may apply. Reply STOP to opt out."
)


def test_r20_default_autoresponder_renders() -> None:
    template = Template(DEFAULT_AUTORESPONDER)
    assert template.fields == {"organization_prefix", "support_email"}
    assert template.render(BRAND) == (
        "Acme: This inbox isn't monitored. For help, email support@acme.example. "
        "Msg&data rates may apply. Reply STOP to opt out."
    )


def test_r20_template_fields_are_the_protocols() -> None:
    assert TEMPLATE_FIELDS == {"organization_prefix", "support_email", "account_name"}


@pytest.mark.parametrize(
    "text",
    [
        "{{account_name}}",
        "{{ account_name }}",
        "{{account_name }}",
        "{{   account_name}}",
        "{{\taccount_name\t}}",
    ],
)
def test_r20_spaces_inside_braces_are_optional(text: str) -> None:
    assert Template(text).render(BRAND) == "Acme Inc."


def test_r20_a_field_may_appear_several_times() -> None:
    template = Template("{{ account_name }}/{{account_name}}: {{ organization_prefix }}")
    assert template.render(BRAND) == "Acme Inc./Acme Inc.: Acme"
    assert template.fields == {"account_name", "organization_prefix"}


def test_r20_text_without_placeholders_is_kept() -> None:
    template = Template("We'll reply soon. {single braces} and } stay; so does {.")
    assert template.fields == frozenset()
    assert template.render(BRAND) == "We'll reply soon. {single braces} and } stay; so does {."


def test_r20_empty_template() -> None:
    assert Template("").render(BRAND) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Hi {{ first_name }}", r"unknown placeholder \{\{ first_name \}\}"),
        ("{{ Organization_Prefix }}", "unknown placeholder"),
        ("Hi {{ account_name", "never closed"),
        ("Hi {{", "never closed"),
        ("Hi account_name }}", "without"),
        ("}} {{ account_name }}", "without"),
        ("{{ account_name }} }}", "without"),
        ("{{}}", "not a placeholder"),
        ("{{ }}", "not a placeholder"),
        ("{{ account name }}", "not a placeholder"),
        ("{{ account-name }}", "not a placeholder"),
        ("{{{ account_name }}}", "not a placeholder"),
        ("{{ {{ account_name }} }}", "not a placeholder"),
    ],
)
def test_r20_bad_template_is_refused_at_construction(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template(text)


def test_r20_template_error_names_the_setting_and_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^sms\.autoresponder\.text: unknown placeholder"):
        Template("{{ coupon }}", setting="sms.autoresponder.text")


def test_r20_allowed_fields_can_be_narrowed_or_widened() -> None:
    with pytest.raises(TemplateError):
        Template("{{ support_email }}", allowed_fields={"organization_prefix"})
    assert (
        Template("{{ coupon }}", allowed_fields={"coupon"}).render({"coupon": "SAVE10"}) == "SAVE10"
    )


def test_r20_missing_value_renders_empty() -> None:
    assert Template("Email {{ support_email }}.").render({}) == "Email ."


def test_r20_values_are_not_expanded_again() -> None:
    template = Template("{{ account_name }}")
    assert template.render({"account_name": "{{ support_email }}"}) == "{{ support_email }}"


def test_r20_keyword_default_replies_are_valid_templates() -> None:
    for text in (OPT_OUT_REPLY, OPT_IN_REPLY, HELP_REPLY):
        rendered = Template(text).render(BRAND)
        assert rendered.startswith("Acme: ")
        assert "{" not in rendered


def test_r20_templates_compare_by_content() -> None:
    assert Template("{{a}}", {"a"}) == Template("{{ a }}", {"a"})
    assert Template("x") != Template("y")
    assert len({Template("x"), Template("x")}) == 1


brace_free = st.text(alphabet=st.characters(blacklist_characters="{}"))


@given(st.lists(st.one_of(brace_free, st.sampled_from(sorted(TEMPLATE_FIELDS))), max_size=8))
def test_r20_render_substitutes_every_placeholder(parts: list[str]) -> None:
    text = "".join(f"{{{{ {p} }}}}" if p in TEMPLATE_FIELDS else p for p in parts)
    expected = "".join(BRAND[p] if p in TEMPLATE_FIELDS else p for p in parts)
    assert Template(text).render(BRAND) == expected


@given(st.text())
def test_r20_any_text_either_parses_or_raises_template_error(text: str) -> None:
    try:
        template = Template(text)
    except TemplateError:
        return
    assert template.fields <= TEMPLATE_FIELDS
    if not template.fields:
        assert template.render(BRAND) == text
