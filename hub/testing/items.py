"""Write-back items as the hub queues them, for a connector's own tests of kinds the suite cannot reach."""

from __future__ import annotations

from datetime import UTC, datetime

from hub.models import PersonOptOut, WriteBackItem

#: when ``opt_out_item`` says the person changed their mind, unless told otherwise (fixed, so tests can
#: assert the date the CRM shows)
CHANGED_AT = datetime(2026, 12, 5, 14, 2, tzinfo=UTC)


def opt_out_item(
    item_id: int,
    record_id: str,
    *,
    opted_out: bool = True,
    changed_at: datetime = CHANGED_AT,
    channel: str | None = "sms",
    reason: str | None = None,
    attempt: int = 1,
) -> WriteBackItem:
    """A ``person_opt_out`` item for the CRM person ``record_id``, under the one key the hub gives each
    person (``opt_out:<record_id>``); the reason defaults to a reply of STOP (or START for an opt-in)."""
    word = "STOP" if opted_out else "START"
    return WriteBackItem(
        id=item_id,
        key=f"opt_out:{record_id}",
        record_id=record_id,
        attempt=attempt,
        payload=PersonOptOut(
            opted_out=opted_out,
            changed_at=changed_at,
            channel=channel,
            reason=reason if reason is not None else f"replied {word} by SMS",
        ),
    )
