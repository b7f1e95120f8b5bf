"""``cxhub demo``: a whole hub on embedded defaults, against the emulators the plugins offer.

The story: a CRM user closes a ticket in the emulated CRM; its webhook reaches the hub; the hub sends the
survey to the local mail catcher; with ``--auto`` the demo answers it the way a browser does (GET the page,
POST the score with its CSRF token, POST a comment) and prints what the CRM user now sees on the person and
the ticket. Nothing here knows a particular CRM: it uses ``hub.ConnectorEmulator`` / ``hub.ChannelEmulator``.

With ``--channel sms`` the survey goes by text message instead (email stays the fallback), in
``answer_by = "reply"`` mode: the SMS emulator's phones (``hub.PhoneEmulator``) are shown at
``/admin/phone``, where the demo user texts the score and then the reason; with ``--auto`` the demo texts
them through the phone itself.

The cockpit: the demo's hub starts with twelve weeks of earlier answers (``hub.demo_history``) and two users
of the admin cockpit, ``admin`` and ``viewer``, with passwords made for this run and printed with the link.
With ``--auto --stay`` (``make demo``) the demo leaves the hub and its cockpit up after the story until
Ctrl-C; with ``--auto`` alone it ends there, as scripts want.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import time
import tomllib
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.panel import Panel
from rich.pretty import Pretty
from sqlalchemy import select

from hub import accounts
from hub.app import Hub
from hub.config import HubConfig, parse_config
from hub.contracts import ChannelEmulator, ConnectorEmulator, Emulator, EmulatorType, PhoneEmulator
from hub.demo_history import seed_history
from hub.models import SurveyKind
from hub.plugins import PluginManager
from hub.scheduler import Scheduler
from hub.store.tables import Person
from hub.web import create_app

CONNECTOR, CHANNEL, SMS = "crm", "mail", "sms"
#: the demo's base config, shipped with the hub (``cxhub demo`` copies it into a fresh folder)
DEMO_CONFIG = Path(__file__).with_name("demo.toml")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pick_emulators(crm: str) -> tuple[ConnectorEmulator, ChannelEmulator]:
    plugins = PluginManager()
    plugins.load()
    connector_type = plugins.emulator_types.get(("connector", crm))
    channel_type = plugins.emulator_types.get(("channel", "email"))
    if connector_type is None:
        offered = sorted(p for kind, p in plugins.emulator_types if kind == "connector")
        raise SystemExit(
            f'no emulator for connector "{crm}" is installed (installed: {", ".join(offered) or "none"})'
        )
    if channel_type is None:
        raise SystemExit("the email channel plugin (cxhub-email) is needed for the demo's mailbox")
    connector, channel = _create(connector_type), _create(channel_type)
    assert isinstance(connector, ConnectorEmulator) and isinstance(channel, ChannelEmulator)
    return connector, channel


def _create(emulator_type: EmulatorType) -> Emulator:
    """Build an emulator; one whose run-time needs are not installed names the extra that brings them.

    Emulators are not part of a production install: their factories import them (and what they need, such
    as aiosmtpd for the mail catcher or trustme for a test CA) only now.
    """
    try:
        return emulator_type.factory()
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        raise SystemExit(
            f'the {emulator_type.plugin} emulator needs the Python package "{missing}", which is not installed.\n'
            "The built-in plugins' emulators come with the demo extra: pip install 'cxhub[demo]' "
            "(another plugin's README names its own)"
        ) from exc


def pick_phone() -> PhoneEmulator:
    """The SMS plugin's emulator, with its phones."""
    plugins = PluginManager()
    plugins.load()
    phone_type = plugins.emulator_types.get(("channel", SMS))
    if phone_type is None:
        raise SystemExit("the SMS channel plugin (cxhub-sms) is needed for the demo's phone")
    phone = _create(phone_type)
    if not isinstance(phone, PhoneEmulator):
        raise SystemExit("the installed SMS emulator has no phone (hub.PhoneEmulator) for the demo")
    return phone


def demo_config(
    path: Path,
    crm: str,
    connector: Emulator,
    channel: Emulator,
    port: int,
    phone: Emulator | None = None,
) -> HubConfig:
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    hub = data.setdefault("hub", {})
    hub["port"] = port
    hub["public_url"] = f"http://127.0.0.1:{port}"
    hub["demo"] = True
    mailbox = getattr(channel, "mailbox_dir", None)  # a mail catcher keeps a Maildir the admin pages show
    if mailbox is not None:
        hub["mailbox_dir"] = str(mailbox)
    data["connectors"] = {
        CONNECTOR: {"plugin": crm, "poll_interval_seconds": 30, **connector.instance_settings()}
    }
    data["channels"] = {CHANNEL: {"plugin": "email", **channel.instance_settings()}}
    if phone is not None:  # surveys by text, answered by reply; email stays the fallback
        data["channels"][SMS] = {"plugin": SMS, **phone.instance_settings()}
        for campaign in data.get("campaigns", {}).values():
            campaign["channels"] = [SMS, *campaign.get("channels", [])]
            campaign["answer_by"] = "reply"
    return parse_config(data, path)


async def wait_for(what: str, probe: Callable[[], Awaitable[Any]], seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the demo waited {seconds:g}s for {what}")


async def answer_like_a_browser(survey_url: str, score: int, comment: str) -> None:
    """GET the page, POST the score with the page's CSRF token and cookie, then the comment."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        page = await browser.get(survey_url)
        page.raise_for_status()
        followup = await browser.post(survey_url, data={"csrf": _csrf(page.text), "score": str(score)})
        followup.raise_for_status()
        thanks = await browser.post(survey_url, data={"csrf": _csrf(followup.text), "comment": comment})
        thanks.raise_for_status()


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    if match is None:
        raise RuntimeError("the survey page has no CSRF field")
    return match.group(1)


def prepare_workdir(config_path: Path) -> tuple[Path, int]:
    """The demo's folder (next to its SQLite file), emptied of an earlier run's database, and a free port.

    Only the ``[hub]`` section is read here: the connectors and channels come from the emulators.
    """
    section = tomllib.loads(config_path.read_text(encoding="utf-8")).get("hub", {})
    hub = HubConfig.model_validate({"hub": section})
    hub._source = config_path
    workdir = Path(hub.database_url().split(":///", 1)[1]).parent
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("cxhub.db*"):
        stale.unlink()
    port = hub.hub.port if _port_free("127.0.0.1", hub.hub.port) else _free_port("127.0.0.1")
    return workdir, port


async def cockpit_users(hub: Hub) -> dict[str, str]:
    """The demo's users of the cockpit, by role, with a password made for this run: user name -> password."""
    made = {"admin": secrets.token_urlsafe(9), "viewer": secrets.token_urlsafe(9)}
    async with hub.store.session() as s:
        for name, password in made.items():
            await accounts.add(s, "demo", name, name, password)
    return made


async def run_demo(
    config_path: Path,
    crm: str,
    auto: bool,
    console: Console,
    channel_name: str = "email",
    stay: bool = False,
) -> None:
    """The story; with ``auto`` it answers by itself, and with ``stay`` too the hub stays up after it."""
    connector, channel = pick_emulators(crm)
    phone = pick_phone() if channel_name == SMS else None
    workdir, port = prepare_workdir(config_path)
    hub_url = f"http://127.0.0.1:{port}"
    connector.start(workdir, hub_url, CONNECTOR)
    channel.start(workdir, hub_url, CHANNEL)
    if phone is not None:
        phone.start(workdir, hub_url, SMS)
    os.environ.update(
        {**connector.environment(), **channel.environment(), **(phone.environment() if phone else {})}
    )
    server: uvicorn.Server | None = None
    hub: Hub | None = None
    jobs: Scheduler | None = None
    try:
        config = demo_config(config_path, crm, connector, channel, port, phone)
        hub = await Hub.open(config)
        nps = [
            n for n, c in hub.config.campaigns.items() if hub.config.surveys[c.survey].kind is SurveyKind.NPS
        ]
        if nps:  # a config of its own (--config) may ask otherwise: then the cockpit starts empty
            await seed_history(hub, CONNECTOR, nps[0], [SMS, CHANNEL] if phone else [CHANNEL])
        logins = await cockpit_users(hub)
        app = create_app(hub, scheduler=False)
        app.state.phone = phone  # the /admin/phone page shows it
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        )
        serving = asyncio.create_task(server.serve())
        jobs = Scheduler(hub, tick_seconds=1)
        jobs.start()
        await wait_for("the web server", lambda: asyncio.sleep(0, server.started))
        by = "an SMS emulator with phones and a local mail catcher" if phone else "a local mail catcher"
        console.print(Panel.fit(f"CX Hub runs at {hub_url} on SQLite, with the {crm} emulator and {by}"))
        cockpit = (
            f"The cockpit: {hub_url}/admin (sign in as admin / {logins['admin']}, "
            f"or as viewer / {logins['viewer']})"
        )
        console.print(cockpit)

        case = await asyncio.to_thread(connector.close_case)
        console.print(f"[bold]1.[/bold] {case.description}")
        if phone is None or not await _by_text(phone, channel, hub, case.links, auto, console):
            await _by_email(channel, hub_url, case.links, auto, console)
        if not auto:
            console.print("Ctrl-C stops the demo.")
            await serving
            return
        await wait_for("the write-back", lambda: asyncio.to_thread(connector.written_back, case))
        console.print("[bold]4.[/bold] Written back. The CRM now shows:")
        console.print(Pretty(await asyncio.to_thread(connector.show, case), expand_all=True))
        if stay:
            console.print(
                f"[bold]5.[/bold] {cockpit}, with twelve weeks of earlier answers. Ctrl-C stops the demo."
            )
            await serving
            return
        await jobs.shutdown()
        server.should_exit = True
        await serving
    finally:
        if server is not None:
            server.should_exit = True
        if jobs is not None:  # stopped (Ctrl-C) while it stays up: its jobs end before the database closes
            with suppress(Exception):
                await jobs.shutdown()
        if hub is not None:
            with suppress(Exception):
                await hub.close()
        connector.stop()
        channel.stop()
        if phone is not None:
            phone.stop()


async def _by_email(
    channel: ChannelEmulator, hub_url: str, case_links: dict[str, str], auto: bool, console: Console
) -> None:
    survey_url = await wait_for("the survey email", lambda: asyncio.to_thread(channel.survey_link))
    links = {"the survey email": f"{hub_url}{channel.links().get('mailbox', '')}", "the survey": survey_url}
    console.print("[bold]2.[/bold] The survey email arrived. Open:")
    for name, url in {**links, **case_links}.items():
        console.print(f"   {name}: {url}")
    if not auto:
        console.print("Answer the survey in your browser.")
        return
    comment = "Quick and friendly help, thank you! 👍"
    await answer_like_a_browser(survey_url, 9, comment)
    console.print(f'[bold]3.[/bold] Answered 9 with the comment "{comment}" (as a browser: GET, then POST).')


def texts_from_hub(phone: PhoneEmulator) -> dict[str, list[str]]:
    """Per number, the texts the hub sent to that phone so far, oldest first."""
    return {
        str(c["number"]): [str(m["text"]) for m in c.get("messages", []) if m.get("sender") == "hub"]
        for c in phone.conversations()
    }


async def _by_text(
    phone: PhoneEmulator,
    mailbox: ChannelEmulator,
    hub: Hub,
    case_links: dict[str, str],
    auto: bool,
    console: Console,
) -> bool:
    """The survey by text; False when the SMS channel could not reach the person and email took over (the
    campaign's next channel), so the demo goes on by email."""
    hub_url = hub.config.hub.public_url

    def first_survey() -> tuple[str, str] | None:
        for number, texts in texts_from_hub(phone).items():
            if texts:
                return number, texts[0]
        return ("", "") if mailbox.survey_link() else None

    number, survey = await wait_for("the survey", lambda: asyncio.to_thread(first_survey))
    if not number:
        async with hub.store.session() as s:
            refused = await s.scalar(select(Person.phone_rejected).where(Person.phone_rejected.is_not(None)))
        why = f" ({refused})" if refused else ""
        console.print(f"   The SMS channel could not text the person{why}: the survey went by email instead.")
        return False
    console.print(f"[bold]2.[/bold] The survey was texted to {number}: {survey}")
    for name, url in {"the phone": f"{hub_url}/admin/phone", **case_links}.items():
        console.print(f"   {name}: {url}")
    if not auto:
        console.print("Reply on the phone page: a number, then the reason the hub asks for.")
        return True
    await asyncio.to_thread(phone.reply, number, "9")

    def followup() -> str | None:
        texts = texts_from_hub(phone).get(number, [])
        return texts[1] if len(texts) > 1 else None

    question = await wait_for("the follow-up question", lambda: asyncio.to_thread(followup))
    reason = "Quick and friendly help, thank you!"
    await asyncio.to_thread(phone.reply, number, reason)
    console.print(f'[bold]3.[/bold] Texted "9"; the hub asked "{question}"; texted "{reason}".')
    return True
