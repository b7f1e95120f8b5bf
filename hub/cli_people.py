"""``cxhub person ...``: a person's data from the command line: export it as JSON, or erase it.

The work is ``hub.privacy``'s, shared with the cockpit and the API; each export and erase is written to the
audit log as ``cli:<os user>`` in its own transaction.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hub.cli import ConfigOption, JsonOption, console, fail, print_json, run_with_store
from hub.cli_users import actor

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.store import Store

person_app = typer.Typer(help="One person's data: export it, or erase it.", no_args_is_help=True)

WhoArgument = Annotated[
    str, typer.Argument(help="the person's id (digits alone), or an email address or phone number")
]


async def _people_named(cfg: HubConfig, store: Store, who: str) -> list[int]:
    """The ids of the people ``who`` names; none is an error (exit 2) naming what was looked for."""
    from hub.privacy import resolve

    async with store.session() as s:
        found = [person.id for person in await resolve(s, who, cfg.hub.phone_region)]
    if not found:
        fail(f"nobody with {who} is known to the hub")
    return found


@person_app.command("export")
def person_export(who: WhoArgument, config: ConfigOption = Path("cxhub.toml")) -> None:
    """Print everything the hub holds about a person as JSON (every person at that address)."""
    from hub.privacy import export_person

    async def work(cfg: HubConfig, store: Store) -> list[dict[str, Any]]:
        return [
            (await export_person(store, person_id, actor())).model_dump(mode="json")
            for person_id in await _people_named(cfg, store, who)
        ]

    exports = run_with_store(config, work)
    sys.stdout.write(json.dumps(exports, indent=2, ensure_ascii=False) + "\n")


@person_app.command("erase")
def person_erase(
    who: WhoArgument,
    yes: Annotated[bool, typer.Option("--yes", help="erase without asking")] = False,
    config: ConfigOption = Path("cxhub.toml"),
    as_json: JsonOption = False,
) -> None:
    """Erase a person (every person at that address): contact data, identities, replies and free text go;
    answers stay, anonymised, for the statistics."""
    from hub.privacy import erase_person

    if not yes:
        typer.confirm(f"Erase everything the hub holds about {who}? This cannot be undone", abort=True)

    async def work(cfg: HubConfig, store: Store) -> list[dict[str, Any]]:
        return [
            (await erase_person(store, person_id, actor())).model_dump()
            for person_id in await _people_named(cfg, store, who)
        ]

    erased = run_with_store(config, work)
    if as_json:
        print_json(erased)
        return
    for counts in erased:
        console.print(
            f"erased person {counts['person_id']}: {counts['answers_anonymised']} answer(s) kept anonymised, "
            f"{counts['invitations_unlinked']} invitation(s) unlinked",
            markup=False,
        )
