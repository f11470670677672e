"""The brand the inbox serves: its account details and the timings of web chat."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Account:
    """Who the brand is and where it is reachable (PROTOCOL.md `[account]`, `[sms]`,
    `[email]`, `server.public_url`, `chat.page_url`)."""

    name: str = "Acme"
    organization_prefix: str = "Acme"
    timezone: str = "America/New_York"
    logo_url: str = ""
    privacy_url: str = ""
    terms_url: str = ""
    ecommerce: str = ""
    support_email: str = ""
    sms_sender: str = ""
    public_url: str = "http://127.0.0.1:8080"
    chat_page_url: str = ""  # `chat.page_url`: the brand's page hosting the widget

    def chat_page(self) -> str:
        """The page a follow-up e-mail links back to: `chat.page_url`, else
        `{public_url}/chat` (contract v3)."""
        return self.chat_page_url or f"{self.public_url.rstrip('/')}/chat"

    def template_values(self) -> dict[str, str]:
        """The fields message templates may use (R20)."""
        return {
            "organization_prefix": self.organization_prefix,
            "support_email": self.support_email,
            "account_name": self.name,
        }


@dataclass(slots=True, frozen=True)
class Timing:
    """Web chat timings (PROTOCOL.md `[timing]`), in seconds."""

    followup_delay_s: float = 180.0
    offline_grace_s: float = 10.0
    idle_timeout_s: float = 30.0
