"""``cxhub user ...``: the cockpit's named users from the command line.

A password is never an argument (it would show in ``ps`` and the shell's history): it is typed twice at a
hidden prompt, or read from a file (``--password-file``, ``-`` for stdin) by scripts. Each change is written
to the audit log as ``cli:<os user>``, in the same transaction as the change (see ``hub.accounts``).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hub.cli import ConfigOption, JsonOption, Report, console, fail, run_with_store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from hub.config import HubConfig
    from hub.store import Store

user_app = typer.Typer(help="Users of the admin cockpit.", no_args_is_help=True)

PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="read the password from this file's first line (- for stdin) instead of a hidden prompt",
        show_default=False,
    ),
]
RoleOption = Annotated[str, typer.Option("--role", help="viewer (sees) or admin (also acts)")]


def actor() -> str:
    """Who ran the command, as the audit log names them."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        name = "unknown"
    return f"cli:{name}"


def read_password(source: Path | None) -> str:
    """The new password: from ``source`` (``-``: stdin), else typed twice at a hidden prompt."""
    if source is None:
        entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        return entered
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read the password file {source}: {exc.strerror}")
    lines = text.splitlines()
    return lines[0] if lines else ""


def change(config: Path, work: Callable[[AsyncSession, bool], Awaitable[None]]) -> None:
    """Run one change to the users in a transaction; a refused change is one line on stderr and exit code 2."""
    from hub.accounts import AccountError

    async def run(cfg: HubConfig, store: Store) -> None:
        try:
            async with store.session() as s:
                await work(s, cfg.hub.admin_password is not None)
        except AccountError as exc:
            fail(str(exc))

    run_with_store(config, run)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="the user name to sign in with")],
    role: RoleOption = "viewer",
    password_file: PasswordFile = None,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Add a user who signs in with a password."""
    from hub import accounts

    try:
        accounts.check_name(name)
        accounts.check_role(role)
        password = read_password(password_file)
        accounts.check_password(password)
    except accounts.AccountError as exc:
        fail(str(exc))
    change(config, lambda s, _builtin: accounts.add(s, actor(), name, role, password))
    console.print(f"added {name} ({role})")


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument()],
    password_file: PasswordFile = None,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Set a user's password; their sessions end at once."""
    from hub import accounts

    password = read_password(password_file)
    change(config, lambda s, _builtin: accounts.set_password(s, actor(), name, password))
    console.print(f"changed the password of {name}; their sessions have ended")


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument()],
    role: Annotated[str, typer.Argument(help="viewer or admin")],
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Change a user's role (the last admin cannot become a viewer)."""
    from hub import accounts

    change(config, lambda s, builtin: accounts.set_role(s, actor(), name, role, builtin_admin=builtin))
    console.print(f"{name} is now {role}")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument()],
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Remove a user; their sessions end at once (the last admin cannot be removed)."""
    from hub import accounts

    change(config, lambda s, builtin: accounts.remove(s, actor(), name, builtin_admin=builtin))
    console.print(f"removed {name}")


@user_app.command("list")
def user_list(config: ConfigOption = Path("cxhub.toml"), as_json: JsonOption = False) -> None:
    """The users, their roles and when they last signed in."""
    from hub import accounts

    async def work(cfg: HubConfig, store: Store) -> Report:
        async with store.session() as s:
            found = await accounts.list_accounts(s)
        report = Report("Cockpit users", ["name", "role", "last sign-in", "password"])
        for a in found:
            last = a.last_login_at.isoformat(timespec="seconds") if a.last_login_at else "never"
            report.add(a.name, a.role, last, "yes" if a.has_password else "no (single sign-on)")
        return report

    run_with_store(config, work).show(as_json)
