"""The hub's own opt-out of a person on the Contact: which fields an item writes, apart from how they travel.

Opt-outs ride in the per-Contact update of the person summaries (``writeback.Writer._summaries``): a contact's
summary and opt-out in one batch are one record of one call. The hub keeps one person's changes in order
(one write-back key per person and connector), so writing the newest change of a batch is enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hub import PersonOptOut, PersonSummary, WriteBackItem
from hub_salesforce.config import OptOutFields

#: CXHub_Survey_Opt_Out_Reason__c is a Text(255)
REASON_LENGTH = 255


def is_contact_item(item: WriteBackItem) -> bool:
    """Whether the item writes fields on the Contact (a summary or an opt-out)."""
    return isinstance(item.payload, PersonSummary | PersonOptOut)


def contact_order(item: WriteBackItem) -> tuple[Any, ...]:
    """Opt-outs first, then summaries oldest to newest: the last item of a contact's group is its newest
    summary when it has one."""
    payload = item.payload
    if isinstance(payload, PersonSummary):
        return (1, payload.latest_date, payload.count, item.id)
    return (0, item.id)


def opt_out_fields(fields: OptOutFields, items: Sequence[WriteBackItem]) -> dict[str, Any]:
    """Contact field -> value for the newest opt-out change among ``items`` ({} without one).

    An opt-in clears the tick, the date and the reason; the values depend on the item alone, so a retried
    item writes what it wrote before.
    """
    changes = [i.payload for i in items if isinstance(i.payload, PersonOptOut)]
    if not changes:
        return {}
    shown = max(changes, key=lambda change: change.changed_at).shown()
    values = shown | {
        "changed_at": _datetime(shown["changed_at"]),
        "reason": _cut(shown["reason"], REASON_LENGTH),
    }
    return {field: values[name] for name, field in fields.mapped().items()}


def writes_nothing(fields: OptOutFields, items: Sequence[WriteBackItem]) -> bool:
    """A contact's group of opt-outs only, with no opt-out field mapped: nothing to send, nothing to call."""
    return not fields.mapped() and all(isinstance(i.payload, PersonOptOut) for i in items)


def _datetime(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(text: str | None, limit: int) -> str | None:
    """At most ``limit`` UTF-16 code units, as Salesforce counts a Text field (an emoji is two)."""
    if text is None:
        return None
    return text.encode("utf-16-le")[: 2 * limit].decode("utf-16-le", errors="ignore")
