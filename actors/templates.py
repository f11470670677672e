"""Message templates with `{{ field }}` placeholders (R20): autoresponder and keyword
replies filled in with the brand's fields."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

TEMPLATE_FIELDS: frozenset[str] = frozenset(
    {"organization_prefix", "support_email", "account_name"}
)
"""The brand fields a template may use."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLAUSE_END = re.compile(r"(?<=[.!?:])(\s+)")  # a clause ends at . ! ? or : and a space


class TemplateError(ValueError):
    """A template that cannot be used: an unknown placeholder or unbalanced braces.
    The message names the setting the template came from."""


class Template:
    """A text with `{{ field }}` placeholders (spaces inside the braces optional),
    checked when it is made so that a bad one is refused with the configuration.
    Single braces are ordinary text."""

    __slots__ = ("_pieces", "fields", "text")

    text: str
    fields: frozenset[str]
    """The placeholders the text uses."""

    def __init__(
        self,
        text: str,
        allowed_fields: Iterable[str] = TEMPLATE_FIELDS,
        *,
        setting: str = "template",
    ) -> None:
        allowed = frozenset(allowed_fields)
        # Even positions are literal text, odd positions are field names.
        pieces: list[str] = []
        position = 0
        while True:
            opening = text.find("{{", position)
            closing = text.find("}}", position)
            if closing != -1 and (opening == -1 or closing < opening):
                raise TemplateError(f'{setting}: "}}}}" without "{{{{" at character {closing + 1}')
            if opening == -1:
                pieces.append(text[position:])
                break
            end = text.find("}}", opening + 2)
            if end == -1:
                raise TemplateError(f'{setting}: "{{{{" at character {opening + 1} is never closed')
            inner = text[opening + 2 : end]
            name = inner.strip()
            if not _NAME.fullmatch(name):
                raise TemplateError(
                    f"{setting}: {{{{{inner}}}}} at character {opening + 1} is not a placeholder"
                )
            if name not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                raise TemplateError(
                    f"{setting}: unknown placeholder {{{{ {name} }}}} (known: {known})"
                )
            pieces.append(text[position:opening])
            pieces.append(name)
            position = end + 2
        self.text = text
        self._pieces = tuple(pieces)
        self.fields = frozenset(pieces[1::2])

    def render(self, values: Mapping[str, str], *, leave_out_empty: bool = False) -> str:
        """The text with each placeholder replaced by its value (a field with no value
        becomes empty). Values are inserted as they are, never read as templates.

        With `leave_out_empty`, a clause — text ending in `.`, `!`, `?` or `:` followed by
        a space, or the end — that holds a field with no value is left out, so that
        `"Acme: For help, email {{ support_email }}. Reply STOP to opt out."` reads
        `"Acme: Reply STOP to opt out."` rather than `"…email . Reply…"`."""
        if not leave_out_empty:
            return "".join(
                piece if index % 2 == 0 else values.get(piece, "")
                for index, piece in enumerate(self._pieces)
            )
        clauses: list[tuple[str, bool]] = []  # (text, holds a field with no value)
        text, empty = "", False
        for index, piece in enumerate(self._pieces):
            if index % 2:
                value = values.get(piece, "")
                text, empty = text + value, empty or not value.strip()
                continue
            parts = _CLAUSE_END.split(piece)  # text, space, text, space, …, text
            for i in range(0, len(parts) - 1, 2):
                clauses.append((text + parts[i] + parts[i + 1], empty))
                text, empty = "", False
            text += parts[-1]
        clauses.append((text, empty))
        kept = "".join(clause for clause, left_out in clauses if not left_out)
        return kept.strip() if any(left_out for _, left_out in clauses) else kept

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other._pieces == self._pieces

    def __hash__(self) -> int:
        return hash(self._pieces)
