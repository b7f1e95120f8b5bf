"""The ``cxhub`` command. Each subcommand is a thin shell over the hub's own objects."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from hub.app import Hub
    from hub.config import HubConfig
    from hub.store import Store
    from hub.store.tables import SyncRun

app = typer.Typer(
    help="CX Hub: closed-loop customer feedback between your CRM and your customers.",
    no_args_is_help=True,
    add_completion=False,
    # plain help text: rich's help formatter costs more start-up time than the whole command may take
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


class _LazyConsole:
    """A rich Console made on first use: importing rich is not free, and ``cxhub --help`` never needs it.

    When the output is not a terminal (piped into grep, a file, a script) the console is as wide as a line
    needs, so tables never cut or fold a value in two.
    """

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            width = None if stream.isatty() else 100_000
            self._console = Console(stderr=self._stderr, width=width)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


console: Any = _LazyConsole()
err: Any = _LazyConsole(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", envvar="CXHUB_CONFIG", help="the config file", show_default=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of a table")]
T = TypeVar("T")

#: a table cell: its text, or its text and a rich style
Cell = str | tuple[str, str]


class Report:
    """A command's table: drawn for people, or a JSON list of objects for scripts (``--json``).

    Cells are plain text (shown as :class:`rich.text.Text`, so a bracket in an error message is never read as
    markup); colour is a style beside the text, which JSON leaves out.
    """

    def __init__(self, title: str | None, columns: Sequence[str]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[tuple[Cell, ...]] = []

    def add(self, *cells: Cell) -> None:
        self.rows.append(cells)

    def records(self) -> list[dict[str, str]]:
        return [
            {
                column: cell if isinstance(cell, str) else cell[0]
                for column, cell in zip(self.columns, row, strict=True)
            }
            for row in self.rows
        ]

    def show(self, as_json: bool = False) -> None:
        if as_json:
            print_json(self.records())
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.title)
        for column in self.columns:
            table.add_column(column)
        for row in self.rows:
            table.add_row(
                *(Text(cell) if isinstance(cell, str) else Text(cell[0], style=cell[1]) for cell in row)
            )
        console.print(table)


def print_json(value: Any) -> None:
    """JSON on stdout, whole (no rich wrapping), secrets and survey tokens scrubbed."""
    from hub.logging import scrub

    sys.stdout.write(scrub(json.dumps(value, indent=2, default=str, ensure_ascii=False)) + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    from rich.text import Text

    from hub.logging import scrub

    err.print(Text("error: ", style="red") + Text(scrub(message)), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load(path: Path) -> HubConfig:
    from hub import logging as hub_logging
    from hub.config import load_config
    from hub.errors import ConfigError
    from hub.logging import scrub

    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.problems:
            err.print(scrub(line), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    hub_logging.configure(config.hub.log_level)
    return config


async def reach_database(config: HubConfig) -> None:
    """Connect once before anything else, so a wrong password, a database that does not exist or a server that
    is down is one line naming ``hub.database_url`` and what to check, not a traceback from deep inside."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from hub.store import Store

    url = config.database_url()
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = "(not a URL)"
    try:
        store = Store(url)
        if store.is_sqlite and ":memory:" not in url:
            Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        try:
            async with store.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await store.dispose()
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
        fail(
            f"{config.source}: hub.database_url: cannot open the database {shown}: {reason}; check the user, "
            "password, host, port and database name in hub.database_url (and that the database server runs)"
        )


def run_with_hub(path: Path, work: Callable[[Hub], Awaitable[T]]) -> T:
    import asyncio

    from hub.app import Hub
    from hub.errors import ConfigError
    from hub.logging import scrub

    config = load(path)

    async def main() -> T:
        await reach_database(config)
        try:
            hub = await Hub.open(config)
        except ConfigError as exc:
            for line in exc.problems:
                err.print(scrub(line), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        try:
            return await work(hub)
        finally:
            await hub.close()

    return asyncio.run(main())


def run_with_store(path: Path, work: Callable[[HubConfig, Store], Awaitable[T]]) -> T:
    """Run ``work`` with the config and the database only: for the commands that read what the running hub
    recorded (status, explain). No plugin is loaded and no connector built, so they answer at once."""
    import asyncio

    from hub.store import Store

    config = load(path)

    async def main() -> T:
        await reach_database(config)
        store = Store(config.database_url())
        try:
            if not await store.is_current():
                fail(f"{config.source}: the database schema is not current; run `cxhub db upgrade -c {path}`")
            return await work(config, store)
        finally:
            await store.dispose()

    return asyncio.run(main())


@app.command()
def init(path: Annotated[Path, typer.Argument()] = Path("cxhub.toml"), force: bool = False) -> None:
    """Write a commented starter config."""
    if path.exists() and not force:
        fail(f"{path} exists; pass --force to overwrite it")
    starter = Path(__file__).parent / "starter.toml"
    path.write_text(starter.read_text(encoding="utf-8"), encoding="utf-8")
    console.print(f"wrote {path}: edit it, then run `cxhub check -c {path}`")


@app.command()
def check(config: ConfigOption = Path("cxhub.toml"), as_json: JsonOption = False) -> None:
    """Validate the config and test every connector and channel (credentials, permissions, mapped fields)."""
    from hub.checks import check_all

    async def work(hub: Hub) -> bool:
        report = Report("cxhub check", ("instance", "check", "result", "detail"))
        report.add("config", str(config), ("ok", "green"), f"{len(hub.config.campaigns)} campaign(s)")
        all_ok = True
        for checked in await check_all(hub):
            all_ok &= checked.ok
            for result in checked.results:
                mark = ("ok", "green") if result.ok else ("failed", "red")
                report.add(checked.instance, result.name, mark, result.detail)
        _text_warnings(hub, report)
        report.show(as_json)
        return all_ok

    if not run_with_hub(config, work):
        raise typer.Exit(1)


def _text_warnings(hub: Hub, report: Report) -> None:
    """A row per warning a channel has about a campaign's text in one language: shown, never a failure."""
    from hub.engine.text_checks import text_warnings
    from hub.logging import scrub

    for found in text_warnings(hub):
        check = f"text of campaign {found.campaign} in {found.language}"
        report.add(found.channel, check, ("warning", "yellow"), scrub(found.warning))


@app.command()
def serve(
    config: ConfigOption = Path("cxhub.toml"),
    host: Annotated[str | None, typer.Option(help="overrides hub.host")] = None,
    port: Annotated[int | None, typer.Option(help="overrides hub.port")] = None,
    scheduler: Annotated[bool, typer.Option(help="run the scheduled jobs in this process")] = True,
) -> None:
    """Run the web server (webhooks, survey pages, admin API) and, by default, the scheduler."""
    import asyncio

    import uvicorn

    from hub.web import create_app

    cfg = load(config)
    asyncio.run(reach_database(cfg))
    web = create_app(config_path=config, scheduler=scheduler)
    uvicorn.Server(server_config(cfg, web, host=host, port=port)).run()


#: how long `cxhub serve` lets requests in flight finish on SIGTERM
SERVE_GRACE_SECONDS = 10


def server_config(cfg: HubConfig, web: Any, *, host: str | None = None, port: int | None = None) -> Any:
    """uvicorn's settings for the hub: the hub's logging (scrubbed of secrets and survey tokens) and
    forwarded headers believed only from ``hub.trusted_proxies`` (uvicorn would trust loopback by default,
    and then any local process or a proxy that passes the header on could pick its client address)."""
    import uvicorn

    trusted = list(cfg.hub.trusted_proxies)
    return uvicorn.Config(
        web,
        host=host or cfg.hub.host,
        port=port if port is not None else cfg.hub.port,
        log_config=None,
        access_log=cfg.hub.access_log,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted,
        # on SIGTERM requests in flight get this long, then the scheduled jobs their own grace: together they
        # stay within the systemd unit's TimeoutStopSec, so a hanging client cannot hold the stop until SIGKILL
        timeout_graceful_shutdown=SERVE_GRACE_SECONDS,
    )


@app.command()
def worker(
    config: ConfigOption = Path("cxhub.toml"),
    grace_seconds: Annotated[
        float | None,
        typer.Option(
            help="on SIGTERM, how long running jobs may finish before they are cancelled and their work "
            "handed back to the other processes [default: 20]"
        ),
    ] = None,
) -> None:
    """Run the scheduled jobs alone (dispatch, polling, sync, reminders, retention), without the web server."""
    import asyncio
    import signal

    from hub.app import freeze_start_up_objects
    from hub.scheduler import Scheduler

    async def work(hub: Hub) -> None:
        jobs = Scheduler(hub)
        jobs.start()
        freeze_start_up_objects()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        err.print("worker running; Ctrl-C stops it")
        await stop.wait()
        await jobs.shutdown(grace_seconds)

    run_with_hub(config, work)


@app.command()
def sync(
    connector: Annotated[str | None, typer.Argument(help="one connector; all if omitted")] = None,
    full: Annotated[bool, typer.Option(help="write every response again (idempotent)")] = False,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Write queued answers back to the CRMs now (a paused connector is left alone: `cxhub resume` it first)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hub import controls
    from hub.logging import scrub

    async def work(hub: Hub) -> int:
        names = [connector] if connector else list(hub.connectors)
        for name in names:
            if name not in hub.connectors:
                fail(f'no connector named "{name}" (defined: {", ".join(hub.connectors) or "none"})')
        failures = 0
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console._get()
        ) as bar:
            for name in names:
                if await controls.is_paused(hub, name):
                    bar.console.print(f"{name}: paused; `cxhub resume {name}` lets it sync again")
                    continue
                if full:
                    from hub.web.cockpit.access import audit  # the web's modules, loaded for a re-sync only

                    requeued = await hub.sync.requeue_all(name)
                    await audit(hub, cli_actor(), "sync.full", name, requeued=requeued)
                task = bar.add_task(name, total=await hub.sync.pending(name) or 1)
                stats = await hub.singleton(
                    f"job:sync:{name}",
                    lambda n=name, t=task: hub.sync.run(  # type: ignore[misc]
                        n,
                        kind="full" if full else "sync",
                        progress=lambda done, total: bar.update(t, completed=done, total=total),
                    ),
                )
                if stats is None:
                    bar.console.print(f"{name}: another process is syncing it; try again shortly")
                    continue
                bar.update(task, completed=bar.tasks[task].total)
                bar.console.print(
                    f"{name}: written {stats.written}, retrying {stats.retried}, dead letters {stats.dead}"
                    + (f", stopped: {scrub(stats.error)}" if stats.error else "")
                )
                failures += bool(stats.error)
        return failures

    if run_with_hub(config, work):
        raise typer.Exit(1)


ConnectorArgument = Annotated[str, typer.Argument(help="the connector instance")]


def cli_actor() -> str:
    """Who acts from the command line, as the audit log names them."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli:unknown"


def _pause(connector: str, config: Path, paused: bool) -> None:
    from hub import controls
    from hub.web.cockpit.access import audit

    async def work(hub: Hub) -> None:
        if connector not in hub.config.connectors:
            fail(f'no connector named "{connector}" (defined: {", ".join(hub.config.connectors) or "none"})')
        actor = cli_actor()
        await controls.set_paused(hub, connector, paused, actor)
        await audit(hub, actor, "sync.pause" if paused else "sync.resume", connector)

    run_with_hub(config, work)
    if paused:
        console.print(f"{connector}: paused; its sync and poll do not run until `cxhub resume {connector}`")
    else:
        console.print(f"{connector}: resumed; its sync and poll run on their schedule again")


@app.command()
def pause(
    connector: ConnectorArgument,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Stop a connector's scheduled sync and poll, in every hub process (webhooks are still stored)."""
    _pause(connector, config, True)


@app.command()
def resume(
    connector: ConnectorArgument,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Let a paused connector sync and poll on its schedule again."""
    _pause(connector, config, False)


@app.command("register-webhook")
def register_webhook(
    connector: ConnectorArgument,
    config: ConfigOption = Path("cxhub.toml"),
) -> None:
    """Register the hub's webhook in the CRM (run it while `cxhub serve` is reachable at hub.public_url)."""
    from hub.contracts import WebhookRegistrar
    from hub.errors import HubError

    async def work(hub: Hub) -> str:
        instance = hub.connectors.get(connector)
        if instance is None:
            fail(f'no connector named "{connector}" (defined: {", ".join(hub.connectors) or "none"})')
        if not isinstance(instance, WebhookRegistrar):
            fail(
                f'connector "{connector}" cannot register webhooks; configure the CRM by hand (see its README)'
            )
        try:
            return await instance.register_webhook()
        except HubError as exc:
            fail(f"{type(exc).__name__}: {exc}")

    console.print(run_with_hub(config, work))


@app.command()
def status(config: ConfigOption = Path("cxhub.toml"), as_json: JsonOption = False) -> None:
    """Per connector: last runs, watermark, queued items, dead letters, next scheduled sync (or paused)."""
    from sqlalchemy import func, select

    from hub.controls import last_runs, schedule
    from hub.logging import scrub
    from hub.store.tables import ConnectorControl, Cursor, WriteBack, utcnow

    async def work(cfg: HubConfig, store: Store) -> None:
        report = Report(
            "cxhub status",
            ("connector", "last sync", "last poll", "watermark", "queued", "dead", "next sync"),
        )
        problems: list[str] = []
        now = utcnow()
        async with store.session() as s:
            for name, instance in cfg.connectors.items():
                last = await last_runs(s, name)
                cursor = await s.get(Cursor, (name, "events"))
                counts = dict(
                    (
                        await s.execute(
                            select(WriteBack.state, func.count())
                            .where(WriteBack.connector == name)
                            .group_by(WriteBack.state)
                        )
                    ).all()
                )
                for kind, run in last.items():
                    if run is not None and run.error:
                        problems.append(
                            f"{name}: the last {kind} ({run.started_at:%Y-%m-%d %H:%M:%S}) stopped: "
                            f"{scrub(run.error)}"
                        )
                control = await s.get(ConnectorControl, name)
                synced = last["sync"].started_at if last["sync"] else None
                next_run = schedule(cfg, name, control).next_sync(synced, now)
                if not instance.enabled:
                    next_text = "disabled"
                elif control is not None and control.paused:
                    next_text = f"paused by {control.updated_by}"
                else:
                    next_text = f"{next_run:%Y-%m-%d %H:%M} UTC" if next_run else "-"
                report.add(
                    name,
                    _run_text(last["sync"]),
                    _run_text(last["poll"]),
                    (cursor.value or "-") if cursor else "-",
                    str(counts.get("queued", 0)),
                    str(counts.get("dead", 0)),
                    next_text,
                )
        if as_json:
            print_json({"connectors": report.records(), "problems": problems})
            return
        report.show()
        for problem in problems:
            console.print(problem, style="red", markup=False, overflow="fold")

    run_with_store(config, work)


def _run_text(run: SyncRun | None) -> Cell:
    if run is None:
        return "never"
    when = f"{run.started_at:%Y-%m-%d %H:%M:%S}"
    if run.error:
        return (f"{when} stopped (see below)", "red")
    if run.kind == "poll":
        return f"{when} ({run.events} new event(s))"
    return f"{when} ({run.written} ok)"


@app.command()
def plugins(config: ConfigOption = Path("cxhub.toml"), as_json: JsonOption = False) -> None:
    """List the plugins: name, version, built in or not, and the hooks each implements."""
    from hub.errors import ConfigError
    from hub.plugins import PluginManager

    manager = PluginManager()
    cfg = load(config) if config.exists() else None
    try:
        manager.load(cfg.hub.plugins if cfg else None, cfg.hub.plugin_modules if cfg else [])
    except ConfigError as exc:
        fail(str(exc))
    report = Report("cxhub plugins", ("plugin", "version", "built in", "provides", "hooks"))
    for info in manager.infos.values():
        module = manager.pm.get_plugin(info.name)
        provides = [f"connector {n}" for n, t in manager.connector_types.items() if _owned(t.factory, module)]
        provides += [f"channel {n}" for n, t in manager.channel_types.items() if _owned(t.factory, module)]
        report.add(
            info.name,
            info.version,
            "yes" if info.builtin else "no",
            ", ".join(provides),
            ", ".join(info.hooks),
        )
    report.show(as_json)


def _owned(factory: Any, module: Any) -> bool:
    name = getattr(module, "__name__", None)
    return bool(name) and str(getattr(factory, "__module__", "")).startswith(str(name))


@app.command()
def replay(
    connector: Annotated[str | None, typer.Option(help="only this connector's dead letters")] = None,
    item: Annotated[list[int] | None, typer.Option("--id", help="only these items")] = None,
    config: ConfigOption = Path("cxhub.toml"),
    as_json: JsonOption = False,
) -> None:
    """Re-queue dead letters, after the cause is fixed."""

    async def work(hub: Hub) -> int:
        return await hub.sync.replay(connector, item)

    count = run_with_hub(config, work)
    if as_json:
        print_json({"requeued": count})
    else:
        console.print(f"re-queued {count} dead letter(s); they are written at the next sync")


@app.command()
def explain(
    who: Annotated[str, typer.Argument(help="an email address or phone number")],
    config: ConfigOption = Path("cxhub.toml"),
    as_json: JsonOption = False,
) -> None:
    """Every invitation for one person, sent or suppressed, and why."""
    from hub.engine.optouts import people_at
    from hub.explain import invitation_lines, notes
    from hub.people import normalise_email, normalise_phone

    async def work(cfg: HubConfig, store: Store) -> None:
        if not (normalise_email(who) or normalise_phone(who, cfg.hub.phone_region)):
            fail(f'"{who}" is neither an email address nor a phone number with a country code')
        found: list[dict[str, Any]] = []
        async with store.session() as s:
            people = await people_at(s, who, cfg.hub.phone_region)
            if not people and not as_json:
                console.print(f"nobody with {who} is known to the hub", markup=False)
                return
            for person in people:
                said = notes(person)
                columns = ("created", "campaign", "event", "status", "channel", "delivery", "why")
                report = Report(None, columns)
                for line in await invitation_lines(s, person.id):
                    report.add(
                        f"{line.created_at:%Y-%m-%d %H:%M}",
                        line.campaign,
                        line.event,
                        line.status,
                        line.channel or "-",
                        line.delivery_status or "-",
                        line.why,
                    )
                found.append(
                    {
                        "name": person.name,
                        "email": person.email,
                        "phone": person.phone,
                        "notes": said,
                        "invitations": report.records(),
                    }
                )
                if not as_json:
                    from rich.text import Text

                    heading = Text(person.name or "(no name)", style="bold")
                    heading.append(f" {person.email or ''} {person.phone or ''}")
                    heading.append("".join(f", {note}" for note in said))
                    console.print(heading)
                    report.show()
        if as_json:
            print_json(found)

    run_with_store(config, work)


@app.command()
def demo(
    auto: Annotated[
        bool, typer.Option(help="answer the survey like a browser and print what the CRM shows")
    ] = False,
    stay: Annotated[
        bool,
        typer.Option(
            "--stay/--exit",
            help="with --auto: keep the hub and its cockpit up after the story until Ctrl-C (make demo), "
            "or exit there (scripts)",
        ),
    ] = False,
    crm: Annotated[str, typer.Option(help="the CRM emulator to use")] = "superoffice",
    channel: Annotated[
        str,
        typer.Option(help='how the survey goes: "email", or "sms" (answered by text on the phone page)'),
    ] = "email",
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="the demo's base config; default: the one shipped with the hub, in a fresh folder",
        ),
    ] = None,
) -> None:
    """Run a whole hub on SQLite against a CRM emulator and a local mail catcher (and with --channel sms an
    SMS emulator with phones), all on 127.0.0.1."""
    import asyncio
    import tempfile

    from hub import logging as hub_logging
    from hub.demo import DEMO_CONFIG, run_demo
    from hub.errors import ConfigError

    hub_logging.configure("warning")
    with tempfile.TemporaryDirectory(prefix="cxhub-demo-") as folder:
        if config is None:  # works wherever it is run, from a checkout or a pip install
            config = Path(folder) / "demo.toml"
            config.write_text(DEMO_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
        elif not config.is_file():
            fail(f"{config}: no such config file; leave --config out to use the demo's own")
        try:
            if channel not in ("email", "sms"):
                fail(f'--channel {channel}: the demo sends by "email" or "sms"')
            asyncio.run(run_demo(config, crm, auto, console._get(), channel, stay=stay))
        except ConfigError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            console.print("demo stopped")


@app.command("new-plugin")
def new_plugin(
    kind: Annotated[str, typer.Argument(help="connector (a CRM) or channel (SMS, chat, ...)")],
    name: Annotated[str, typer.Argument(help='the plugin name admins write as plugin = "NAME"')],
    directory: Annotated[Path, typer.Option("--dir", help="where to create cxhub-NAME/")] = Path("."),
) -> None:
    """Create a ready plugin package: its tests pass against an example service you then replace."""
    from hub.scaffold import ScaffoldError
    from hub.scaffold import new_plugin as scaffold

    try:
        folder = scaffold(kind, name, directory)  # type: ignore[arg-type]
    except ScaffoldError as exc:
        fail(str(exc))
    typer.echo(f"created {folder}\nnext: cd {folder} && pip install -e '.[test]' && pytest")


@app.command()
def diagnostics(config: ConfigOption = Path("cxhub.toml")) -> None:
    """Print settings and each connector's and channel's state as JSON for a support ticket, secrets redacted.

    ``recorded`` is what the running processes wrote to the database (last good poll and sync, a login that
    keeps failing, the queue, API calls, messages sent); ``connectors`` and ``channels`` are what the plugins
    report from this process.
    """
    from hub import __version__ as hub_version
    from hub.metrics import recorded_state

    async def work(hub: Hub) -> dict[str, Any]:
        return {
            "version": hub_version,
            "config": hub.config.model_dump(mode="json"),
            "plugins": {name: info.version for name, info in hub.plugins.infos.items()},
            "recorded": await recorded_state(hub.store, hub.connectors, hub.channels),
            "connectors": {name: c.diagnostics() for name, c in hub.connectors.items()},
            "channels": {name: c.diagnostics() for name, c in hub.channels.items()},
        }

    print_json(run_with_hub(config, work))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = Path("cxhub.toml")) -> None:
    """Apply pending database migrations."""
    import asyncio

    from hub.store import Store

    cfg = load(config)

    async def work() -> None:
        await reach_database(cfg)
        store = Store(cfg.database_url())
        try:
            await store.upgrade()
        finally:
            await store.dispose()

    asyncio.run(work())
    console.print("database is up to date")


@app.command()
def generate(
    check_only: Annotated[bool, typer.Option("--check", help="fail if the files are stale")] = False,
    root: Annotated[Path, typer.Option(help="the repository root")] = Path("."),
) -> None:
    """Write schemas/ and docs/hooks.md from the code (CI fails when they are stale)."""
    from hub.generate import generated_files

    stale = []
    for relative, content in generated_files().items():
        path = root / relative
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        stale.append(relative)
        if not check_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
    if check_only and stale:
        fail("stale generated files (run `make generate`): " + ", ".join(stale), code=1)
    console.print("up to date" if not stale else f"wrote {len(stale)} file(s)")


def _register_subcommands() -> None:
    """The command groups kept in their own modules (imported last: they use this module's helpers)."""
    from hub.cli_people import person_app
    from hub.cli_users import user_app

    app.add_typer(user_app, name="user")
    app.add_typer(person_app, name="person")


_register_subcommands()
