"""What the inbox makes searchable: its entries in the store's text indexes.

- Index `messages`: every message written into a thread (`thread.record`), found by the
  words of its body and scored by its creation time, so the newest come first. A blocked
  profile's web chat messages (kept, shown nowhere) are not in it.
- Index `profiles`: every profile, found by the words of its name, e-mail and phone
  (`ProfileActor` puts its own entry, in the batch that saves the profile).

The entries are written in the same batch as the record they describe, by its owner,
through the one commit path, so they cannot disagree with the records, even after a
crash. Schema version 3 (engine/store/schema.py) indexed what older versions stored the
same way. The searches themselves are in `search`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from tidings.actors.model import Message, Profile
from tidings.engine import Batch

MESSAGES: Final = "messages"
PROFILES: Final = "profiles"


def index_message(batch: Batch, message: Message) -> None:
    """Put a new message into the `messages` index (its owner's batch)."""
    created = datetime.fromisoformat(message.created_at).timestamp()
    batch.index_text(MESSAGES, message.id, created, message.body)


def profile_text(profile: Profile) -> str:
    """What a profile is found by: its name, e-mail and phone."""
    return " ".join(v for v in (profile.name, profile.email, profile.phone) if v)


def index_profile(batch: Batch, profile: Profile) -> None:
    """Put the profile into the `profiles` index (its own batch), or take it out when it
    has nothing to be found by. Profiles share one score: ties list by id."""
    batch.index_text(PROFILES, profile.id, 0.0, profile_text(profile))
