"""The brand's inbox settings (PROTOCOL.md "Settings object"): defaults, partial updates
merged key by key, and validation that names the field at fault."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tidings.actors import office_hours, quiet_hours
from tidings.actors.templates import Template, TemplateError

TEMPLATE_FIELDS = frozenset({"organization_prefix", "support_email", "account_name"})

DEFAULT_AUTORESPONDER = (
    "{{ organization_prefix }}: This inbox isn't monitored. For help, email "
    "{{ support_email }}. Msg&data rates may apply. Reply STOP to opt out."
)


class Autoresponder(msgspec.Struct, forbid_unknown_fields=True):
    """R20: the reply to an inbound SMS that is not a keyword."""

    mode: Literal["everyone", "non_consented", "off"] = "everyone"
    text: str = DEFAULT_AUTORESPONDER


class SmsSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Settings of the SMS channel."""

    shorten_links: bool = True
    autoresponder: Autoresponder = msgspec.field(default_factory=Autoresponder)


class OfficeHours(msgspec.Struct, forbid_unknown_fields=True):
    """R23: office hours of the web chat, in the brand's zone."""

    enabled: bool = False
    days: dict[str, list[list[str]]] = msgspec.field(
        default_factory=lambda: {
            "mon": [["09:00", "17:00"]],
            "tue": [["09:00", "17:00"]],
            "wed": [["09:00", "17:00"]],
            "thu": [["09:00", "17:00"]],
            "fri": [["09:00", "17:00"]],
            "sat": [],
            "sun": [],
        }
    )
    inside_message: str = ""
    outside_message: str = ""


class WebchatSettings(msgspec.Struct, forbid_unknown_fields=True):
    """Settings of the web chat channel."""

    followup_email: bool = True
    welcome_message: str = ""
    office_hours: OfficeHours = msgspec.field(default_factory=OfficeHours)


class NewTicketEmail(msgspec.Struct, forbid_unknown_fields=True):
    """R21: e-mail every listed recipient about each new ticket."""

    enabled: bool = False
    recipients: list[str] = []


class Notifications(msgspec.Struct, forbid_unknown_fields=True):
    """How agents are told of new things."""

    unread_badge: bool = True
    new_ticket_email: NewTicketEmail = msgspec.field(default_factory=NewTicketEmail)


class QuietHours(msgspec.Struct, forbid_unknown_fields=True):
    """R27: SMS may go out from `start` (inclusive) to `end` (exclusive), profile time."""

    start: str = "08:00"
    end: str = "20:00"


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    """The whole settings object."""

    sms: SmsSettings = msgspec.field(default_factory=SmsSettings)
    webchat: WebchatSettings = msgspec.field(default_factory=WebchatSettings)
    notifications: Notifications = msgspec.field(default_factory=Notifications)
    attribution_window_s: float = 86400.0
    quiet_hours: QuietHours = msgspec.field(default_factory=QuietHours)


def _merge(base: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in partial.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "days":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _field_of(error: msgspec.ValidationError) -> str:
    """`sms.autoresponder.mode: …` from msgspec's `… - at `$.sms.autoresponder.mode``."""
    text = str(error)
    if " - at `$." in text:
        reason, _, where = text.rpartition(" - at `$.")
        return f"{where.rstrip('`')}: {reason}"
    if "unknown field" in text:
        return text.replace("Object contains unknown field", "unknown key")
    return text


def apply(current: Settings, partial: object) -> Settings:
    """`current` with `partial` merged key by key, validated; ValueError naming the field."""
    if not isinstance(partial, dict):
        raise ValueError("settings: must be an object")
    merged = _merge(msgspec.to_builtins(current), partial)
    try:
        settings = msgspec.convert(merged, type=Settings)
    except msgspec.ValidationError as exc:
        raise ValueError(f"settings.{_field_of(exc)}") from None
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Check what types alone cannot: templates, time tables, required recipients."""
    try:
        Template(settings.sms.autoresponder.text, TEMPLATE_FIELDS)
    except TemplateError as exc:
        raise ValueError(f"settings.sms.autoresponder.text: {exc}") from None
    office_hours.validate_days(
        settings.webchat.office_hours.days, "settings.webchat.office_hours.days"
    )
    quiet_hours.validate(msgspec.to_builtins(settings.quiet_hours), "settings.quiet_hours")
    ticket_email = settings.notifications.new_ticket_email
    if ticket_email.enabled and not ticket_email.recipients:
        raise ValueError(
            "settings.notifications.new_ticket_email.recipients: at least one recipient is "
            "needed to switch it on"
        )
    if settings.attribution_window_s <= 0:
        raise ValueError("settings.attribution_window_s: must be more than 0")
