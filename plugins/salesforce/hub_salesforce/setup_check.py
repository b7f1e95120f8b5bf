"""What ``cxhub check`` verifies in an org: every field the config maps exists and the hub may write it.

A mapped field the org lacks, or one the integration user may not edit, would otherwise show up only as
failed write-backs, one answer at a time; describe calls find them all before the first answer. Each
problem names the config key that maps the field and the fix, because the admin reading it knows their org
but not our config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from hub import CheckResult
from hub_salesforce.config import SalesforceSettings
from hub_salesforce.mapping import CASE_FIELDS, OPPORTUNITY_FIELDS, PRIMARY_ROLE_FIELDS, contact_fields

Access = Literal["read", "create", "update", "upsert"]

PACKAGE_FIX = (
    "Deploy the CX Hub package (the Salesforce plugin's README, 'Admin setup'), or point those keys at fields "
    'that exist, or set them to "" to leave the values out.'
)
PERMISSION_FIX = "Assign the integration user the permission set CXHub_Integration, or give it edit access to those fields."
#: a response id (a UUID, 36 characters) and "+comment": what the case's noted-answer marker holds
MARKER_LENGTH = 36 + len("+comment")
OPTIONAL_NOTE = (
    "optional: won opportunities then survey Opportunity.ContactId instead of the primary contact role"
)


@dataclass(frozen=True)
class Need:
    """One field the hub uses: on which object, how, and which config key names it (None: a fixed field)."""

    sobject: str
    field: str
    access: Access
    key: str | None = None
    holds_comments: bool = False
    #: the fewest characters the field must hold (0: any)
    min_length: int = 0
    #: the connector copes without it (it falls back), so its absence is a warning, not a failure
    optional: bool = False


def _mapped(section: str, model: BaseModel, sobject: str, access: Access, every: bool = False) -> list[Need]:
    """The fields a config section maps: every string value (``every``), else the keys ending in ``_field``."""
    needs = []
    for attr, value in model:
        if isinstance(value, str) and value and (every or attr.endswith("_field")):
            comments = attr in ("latest_comment", "comment_field")
            shortest = MARKER_LENGTH if (section, attr) == ("case", "response_id_field") else 0
            needs.append(Need(sobject, value, access, f"{section}.{attr}", comments, shortest))
    return needs


def needs(settings: SalesforceSettings) -> list[Need]:
    """Every field the connector reads (polling, person look-up) or writes with these settings."""
    language = settings.person.language_field
    found = [
        Need("Contact", name, "read", "person.language_field" if name == language else None)
        for name in contact_fields(settings)
    ]
    found += [Need("Case", name, "read") for name in CASE_FIELDS if "." not in name]
    if settings.poll_opportunities:
        found += [Need("Opportunity", name, "read") for name in OPPORTUNITY_FIELDS if "." not in name]
        found += [Need("OpportunityContactRole", name, "read", optional=True) for name in PRIMARY_ROLE_FIELDS]
    found += _mapped("contact", settings.contact, "Contact", "update", every=True)
    found += _mapped("opt_out", settings.opt_out, "Contact", "update", every=True)
    case = settings.case
    found += _mapped("case", case, "Case", "update")
    if case.status_after_feedback or case.statuses:
        found.append(Need("Case", "Status", "update", "case.status_after_feedback"))
    if settings.response_object.enabled:
        found += _mapped(
            "response_object", settings.response_object, settings.response_object.object, "upsert"
        )
    if case.internal_comment:
        found += [
            Need("CaseComment", name, "create", "case.internal_comment")
            for name in ("ParentId", "CommentBody", "IsPublished")
        ]
    if case.chatter_feeds:
        found += [Need("FeedItem", name, "create", "case.chatter_post") for name in ("ParentId", "Body")]
    return found


def _allowed(field: dict[str, Any], access: Access) -> bool:
    if access == "read":
        return True  # describe lists only the fields the user can see
    if access == "create":
        return bool(field.get("createable"))
    if access == "update":
        return bool(field.get("updateable"))
    return bool(field.get("createable")) and bool(field.get("updateable"))


def _named(need: Need) -> str:
    return f"{need.field} ({need.key})" if need.key else need.field


def judge_object(
    sobject: str, wanted: list[Need], describe: dict[str, Any] | None, comment_max_length: int
) -> CheckResult:
    """One line of ``cxhub check`` for one object, from its describe (None: the object is not visible)."""
    if describe is None and all(need.optional for need in wanted):
        return CheckResult(name=sobject, ok=True, detail=f"{OPTIONAL_NOTE}: {sobject} is not visible")
    if describe is None:
        keys = sorted({need.key for need in wanted if need.key})
        return CheckResult(
            name=sobject,
            ok=False,
            detail=f"object {sobject} is missing or not visible to the integration user (used by "
            f"{', '.join(keys)}). {PACKAGE_FIX} {PERMISSION_FIX}",
        )
    known = {field["name"]: field for field in describe.get("fields", [])}
    missing = [need for need in wanted if need.field not in known and need.key]
    hidden = [need for need in wanted if need.field not in known and not need.key]
    locked = [need for need in wanted if need.field in known and not _allowed(known[need.field], need.access)]
    short = [
        (need, int(known[need.field].get("length") or 0))
        for need in wanted
        if need.holds_comments
        and need.field in known
        and 0 < int(known[need.field].get("length") or 0) < comment_max_length
    ]
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(_named(n) for n in missing)}. {PACKAGE_FIX}")
    if hidden:  # standard fields exist in every org: the user may not see them (field-level security)
        problems.append(
            f"not visible to the integration user: {', '.join(n.field for n in hidden)}. Assign it the "
            "permission set CXHub_Integration, which grants read on them."
        )
    if locked:
        problems.append(
            f"read-only for the integration user: {', '.join(_named(n) for n in locked)}. {PERMISSION_FIX}"
        )
    for need, length in short:
        problems.append(
            f"{_named(need)} holds {length} characters, fewer than comment_max_length = {comment_max_length}: "
            f"set comment_max_length = {length}, or lengthen the field."
        )
    for need in wanted:
        length = int((known.get(need.field) or {}).get("length") or 0)
        if 0 < length < need.min_length:
            problems.append(
                f"{_named(need)} holds {length} characters; it needs {need.min_length} (an answer's id and "
                "+comment): lengthen it (the package's holds 64)."
            )
    if problems and all(need.optional for need in wanted):
        return CheckResult(name=sobject, ok=True, detail=f"{OPTIONAL_NOTE}. " + "\n".join(problems))
    fields = len({need.field for need in wanted})
    return CheckResult(
        name=sobject,
        ok=not problems,
        detail="\n".join(problems) or f"{fields} fields present and accessible",
    )


def budget_line(state: dict[str, Any]) -> CheckResult:
    """The API budget: what the org used, what the hub spent of its share, and whether sync waits."""
    detail = (
        f"org used {state['org_used']}/{state['org_max']} calls in 24 h; the hub spent "
        f"{state['hub_spent_in_window']} of its {state['hub_allowance']}"
    )
    paused = state["paused_for_seconds"]
    allowance = state["hub_allowance"]
    spent = allowance is not None and state["hub_spent_in_window"] >= allowance
    if paused:
        detail += f"; Salesforce refused calls (REQUEST_LIMIT_EXCEEDED): the hub waits {paused:.0f} s"
    elif spent:
        detail += "; the hub's share is spent: sync waits for the window (queued items stay queued)"
    if paused or spent:
        detail += "; raise api_budget_share to give the hub more"
    return CheckResult(name="api budget", ok=not (paused or spent), detail=detail)
