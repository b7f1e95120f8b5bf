"""``cxhub check`` for Dataverse: every mapped column exists, read from ``EntityDefinitions`` metadata.

Each missing column is named with its config key and the fix (import the cxhub solution, or create the
column, or clear the key to leave that value out).
"""

from __future__ import annotations

from hub import CheckResult
from hub_dynamics.client import DataverseClient
from hub_dynamics.config import DynamicsSettings

FIX = "import the cxhub solution (python -m hub_dynamics.solution) or create the column"


def wanted_columns(settings: DynamicsSettings) -> dict[str, dict[str, str]]:
    """table -> {column: config key} of every column the connector writes."""
    contact = {column: f"contact.{name}" for name, column in settings.contact.mapped().items()}
    contact |= {column: f"opt_out.{name}" for name, column in settings.opt_out.mapped().items()}
    case = settings.case
    incident = {
        column: f"case.{key}"
        for key, column in (
            ("score_column", case.score_column),
            ("comment_column", case.comment_column),
            ("date_column", case.date_column),
        )
        if column
    }
    tables = {"contact": contact, "incident": incident}
    timeline = settings.timeline
    if timeline.enabled:
        tables[timeline.table] = {
            column: f"timeline.{key}"
            for key, column in (
                ("score_column", timeline.score_column),
                ("category_column", timeline.category_column),
                ("comment_column", timeline.comment_column),
                ("response_id_column", timeline.response_id_column),
            )
            if column
        }
    return tables


async def table_columns(client: DataverseClient, table: str) -> set[str] | None:
    """The logical names of a table's columns; None when the table does not exist."""
    data = await client.get_json(
        f"EntityDefinitions(LogicalName='{table}')/Attributes", {"$select": "LogicalName"}
    )
    if data is None:
        return None
    return {str(a.get("LogicalName")) for a in data.get("value", []) if isinstance(a, dict)}


async def check_tracking(client: DataverseClient, settings: DynamicsSettings) -> list[CheckResult]:
    """Polling reads changes with change tracking: the polled tables must have it on."""
    tables = [
        t for t, on in (("incident", settings.poll_cases), ("opportunity", settings.poll_opportunities)) if on
    ]
    results: list[CheckResult] = []
    for table in tables:
        data = await client.get_json(
            f"EntityDefinitions(LogicalName='{table}')", {"$select": "ChangeTrackingEnabled"}
        )
        ok = bool(data and data.get("ChangeTrackingEnabled") is True)
        results.append(
            CheckResult(
                name=f"{table} change tracking",
                ok=ok,
                detail=""
                if ok
                else f"turn on Track changes for the {table} table (Power Apps: table settings > Advanced "
                "options), or set "
                + ("poll_cases" if table == "incident" else "poll_opportunities")
                + " = false",
            )
        )
    return results


async def check_columns(client: DataverseClient, settings: DynamicsSettings) -> list[CheckResult]:
    results: list[CheckResult] = await check_tracking(client, settings)
    for table, columns in wanted_columns(settings).items():
        existing = await table_columns(client, table)
        if existing is None:
            results.append(
                CheckResult(
                    name=table,
                    ok=False,
                    detail=f"table {table} does not exist: import the cxhub solution "
                    "(python -m hub_dynamics.solution) or set timeline.enabled = false",
                )
            )
            continue
        for column, key in columns.items():
            ok = column in existing
            results.append(
                CheckResult(
                    name=f"{table}.{column}",
                    ok=ok,
                    detail="" if ok else f'{table} has no column {column} ({key}): {FIX}, or set {key} = ""',
                )
            )
    return results
