"""The `cxhub` command, run as an admin would, against a real database and the fake CRM."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.store.tables import Cursor, SyncRun
from tests.conftest import config_text
from tests.helpers import survey_flow

runner = CliRunner()


@pytest.fixture
def config_file(database_url, fake_crm, tmp_path) -> Path:
    path = tmp_path / "cxhub.toml"
    path.write_text(config_text(database_url, fake_crm.url))
    return path


def cxhub(*args: str):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def cxhub_json(*args: str):
    """The command's exit code and its standard output read as JSON (logs go to standard error)."""
    import json

    result = runner.invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout) if result.exit_code in (0, 1) else result.output


async def answered(make_hub, crm_state, rating: int = 4) -> None:
    hub = await make_hub()
    token = await survey_flow(hub, crm_state)
    _, page = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(page.invitation_id, rating, comment="meh")
    await hub.close()


def test_check_passes_with_good_credentials(config_file) -> None:
    code, out = cxhub("check", "-c", str(config_file))
    assert code == 0, out
    assert "credentials" in out and "token accepted" in out and "1 campaign(s)" in out


def test_check_fails_with_bad_credentials(config_file, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_CRM_TOKEN", "wrong-token-value")
    code, out = cxhub("check", "-c", str(config_file))
    assert code == 1 and "token refused" in out and "failed" in out


def test_a_bad_config_exits_2_naming_the_key(config_file) -> None:
    config_file.write_text(config_file.read_text().replace('channels = ["mail"]', 'channels = ["smss"]'))
    code, out = cxhub("check", "-c", str(config_file))
    assert code == 2
    assert f'{config_file}: campaigns.case_closed.channels[0]: no channel named "smss" (defined: mail)' in out


def test_plugins_lists_name_version_builtin_and_hooks(config_file) -> None:
    code, out = cxhub("plugins", "-c", str(config_file))
    assert code == 0
    assert "tests.fakes.plugin" in out and "connector fakecrm" in out
    assert "hub_register_connectors" in out


def test_plugins_lists_installed_builtins(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = cxhub("plugins")
    assert code == 0
    assert "email" in out and "yes" in out and "channel email" in out


async def test_check_says_when_the_last_sync_stopped_and_clears_when_one_gets_through(
    config_file, make_hub, crm_state
) -> None:
    await answered(make_hub, crm_state)
    # long enough that the next two commands (each a process started) run while it holds
    crm_state.write_failures = (1, 503, {"Retry-After": "5"})
    code, out = await asyncio.to_thread(cxhub, "sync", "-c", str(config_file))
    held_until = time.monotonic() + 5  # refused before that command ended
    code, out = await asyncio.to_thread(cxhub, "check", "-c", str(config_file))
    assert code == 1, out
    text = " ".join(out.split())
    assert "last sync" in text and "stopped: TransientError" in text and "503" in text, out
    # the hourly cron runs while everything is held back: a run with nothing to do hides nothing
    code, out = await asyncio.to_thread(cxhub, "sync", "-c", str(config_file))
    code, out = await asyncio.to_thread(cxhub, "check", "-c", str(config_file))
    assert code == 1 and "stopped: TransientError" in " ".join(out.split()), out
    await asyncio.sleep(max(0.0, held_until - time.monotonic()) + 0.1)  # the CRM's Retry-After
    code, out = await asyncio.to_thread(cxhub, "sync", "-c", str(config_file))
    assert code == 0 and "written 3" in out, out
    code, out = await asyncio.to_thread(cxhub, "check", "-c", str(config_file))
    assert code == 0 and "3 written, 0 to retry, 0 dead letters" in " ".join(out.split()), out


async def test_check_prints_error_text_with_brackets_as_it_is(config_file, make_hub, crm_state) -> None:
    """Stored errors often hold [brackets] (pydantic, URLs): they are text, not table markup."""
    hub = await make_hub()
    async with hub.store.session() as s:
        s.add(
            SyncRun(connector="crm", kind="sync", error="Field required [type=missing, input=[/services/x]]")
        )
    code, out = await asyncio.to_thread(cxhub, "check", "-c", str(config_file))
    assert code == 1, out
    assert "[type=missing,input=[/services/x]]" in "".join(out.split()), out


async def test_sync_status_explain_and_replay(config_file, make_hub, crm_state) -> None:
    await answered(make_hub, crm_state)
    code, out = await asyncio.to_thread(cxhub, "status", "-c", str(config_file))
    assert code == 0 and "crm" in out and "never" in out
    code, out = await asyncio.to_thread(cxhub, "sync", "-c", str(config_file))
    assert code == 0, out
    assert "crm: written 3, retrying 0, dead letters 0" in out
    assert sorted(batch[0]["payload"]["kind"] for batch in crm_state.batches) == [
        "case_feedback",
        "person_summary",
        "timeline_entry",
    ]
    code, out = await asyncio.to_thread(cxhub, "explain", "ada@example.com", "-c", str(config_file))
    assert code == 0 and "case_closed" in out and "answered" in out and "case.closed C1" in out
    code, out = await asyncio.to_thread(cxhub, "explain", "bob@example.com", "-c", str(config_file))
    assert "nobody with bob@example.com" in out
    code, out = await asyncio.to_thread(cxhub, "replay", "-c", str(config_file))
    assert code == 0 and "re-queued 0 dead letter(s)" in out
    code, out = await asyncio.to_thread(cxhub, "sync", "crm", "--full", "-c", str(config_file))
    assert code == 0 and "written 3" in out
    assert (crm_state.creates, crm_state.updates) == (3, 3)


async def test_explain_says_why_someone_was_not_surveyed(config_file, make_hub, crm_state) -> None:
    hub = await make_hub()
    from tests.helpers import case_event

    await hub.engine.receive("crm", [case_event("C5", "P2")], source="webhook")
    await hub.engine.process_pending()
    await hub.close()
    code, out = await asyncio.to_thread(cxhub, "explain", "BOB@example.com", "-c", str(config_file))
    assert code == 0 and "suppressed" in out and "opted out in crm: no mailings" in out


def test_db_upgrade_and_init(config_file, tmp_path) -> None:
    code, out = cxhub("db", "upgrade", "-c", str(config_file))
    assert code == 0 and "database is up to date" in out
    target = tmp_path / "new.toml"
    assert cxhub("init", str(target))[0] == 0
    assert "[policy]" in target.read_text()
    code, out = cxhub("init", str(target))
    assert code == 2 and "exists" in out


def test_secrets_never_appear_in_check_or_diagnostics(config_file, monkeypatch) -> None:
    # a sloppy plugin puts its token in a check detail; the hub scrubs it anyway
    monkeypatch.setenv("FAKE_CRM_TOKEN", "sup3r-s3cret-t0ken")
    monkeypatch.setattr(
        "tests.fakes.plugin.FakeCrmConnector.check",
        _leaky_check,
    )
    code, out = cxhub("check", "-c", str(config_file))
    assert "sup3r-s3cret-t0ken" not in out and "**********" in out
    code, out = cxhub("diagnostics", "-c", str(config_file))
    assert code == 0
    assert "sup3r-s3cret-t0ken" not in out and "api-token-for-tests-42" not in out
    assert "whsec-test" not in out
    assert '"base_url"' in out


async def _leaky_check(self):
    from hub import CheckResult

    return [
        CheckResult(name="credentials", ok=False, detail=f"refused: {self.settings.token.get_secret_value()}")
    ]


# --- database, cron and poll: what an admin sees ------------------------------------------------------------


def _config_with(tmp_path: Path, fake_crm, database_url: str, sync: str = "") -> Path:
    path = tmp_path / "cxhub.toml"
    path.write_text(config_text(database_url, fake_crm.url, sync=sync))
    return path


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+asyncpg://cxhub:hunter2-db-pw@127.0.0.1:1/cxhub", "Connect call failed"),
        (
            "postgresql+asyncpg://no_such_role_x:hunter2-db-pw@127.0.0.1:5432/postgres",
            'role "no_such_role_x"',
        ),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line_naming_the_key(tmp_path, fake_crm, url, reason) -> None:
    config = _config_with(tmp_path, fake_crm, url)
    for command in (["check"], ["status"], ["worker"], ["serve"], ["db", "upgrade"], ["sync"]):
        code, out = cxhub(*command, "-c", str(config))
        assert code == 2, (command, out)
        [line] = out.strip().splitlines()
        assert line.startswith(f"error: {config}: hub.database_url: cannot open the database ")
        assert reason in line and "check the user, password, host, port and database name" in line
        assert "hunter2-db-pw" not in out and "Traceback" not in out


def test_an_unsupported_database_url_is_one_config_line(tmp_path, fake_crm) -> None:
    config = _config_with(tmp_path, fake_crm, "mysql://cxhub:pw@db.internal/cxhub")
    for command in (["check"], ["serve"], ["db", "upgrade"]):
        code, out = cxhub(*command, "-c", str(config))
        assert code == 2 and out.strip().splitlines() == [
            f'{config}: hub.database_url: "mysql" is not an asyncio driver; write "sqlite+aiosqlite:///cxhub.db" '
            'or "postgresql+asyncpg://user@host/database"'
        ]


def test_an_invalid_cron_fails_check_before_serve_or_worker_could_die_of_it(tmp_path, fake_crm) -> None:
    config = _config_with(
        tmp_path, fake_crm, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", sync='cron = "0 */0 * * *"'
    )
    for command in ("check", "worker", "serve", "status"):
        code, out = cxhub(command, "-c", str(config))
        assert code == 2 and "Traceback" not in out
        [line] = out.strip().splitlines()
        assert line.startswith(f'{config}: sync.cron: "0 */0 * * *" is not a crontab expression')


async def test_status_shows_a_poll_that_found_nothing_new(config_file, make_hub, crm_state) -> None:
    hub = await make_hub()
    await hub.sync.poll("crm")  # the fake CRM has no closed case: nothing new, the watermark is stored
    await hub.close()
    code, out = await asyncio.to_thread(cxhub, "status", "-c", str(config_file))
    assert code == 0, out
    [row] = [line for line in out.splitlines() if "crm" in line]
    assert "(0 new event(s))" in row
    assert row.count("never") == 1  # the last sync: nothing written yet


async def test_every_table_command_speaks_json_for_scripts(config_file, make_hub, crm_state) -> None:
    await answered(make_hub, crm_state)
    config = str(config_file)
    code, out = await asyncio.to_thread(cxhub_json, "status", "-c", config)
    [crm] = out["connectors"]
    assert (code, crm["connector"], crm["queued"], crm["dead"]) == (0, "crm", "3", "0")
    code, out = await asyncio.to_thread(cxhub_json, "check", "-c", config)
    assert code == 0, out
    assert {
        "instance": "crm",
        "check": "last sync",
        "result": "ok",
        "detail": "nothing written back yet",
    } in out
    code, out = await asyncio.to_thread(cxhub_json, "explain", "ada@example.com", "-c", config)
    [person] = out
    assert person["email"] == "ada@example.com" and person["invitations"][0]["status"] == "answered"
    code, out = await asyncio.to_thread(cxhub_json, "plugins", "-c", config)
    assert any(row["plugin"] == "tests.fakes.plugin" for row in out), out
    code, out = await asyncio.to_thread(cxhub_json, "replay", "-c", config)
    assert out == {"requeued": 0}


async def test_a_piped_table_never_cuts_a_value(config_file, make_hub) -> None:
    """Piped into grep or a file (not a terminal), a long watermark or error is printed whole on its line."""
    hub = await make_hub()
    watermark = "2026-12-05T10:00:00Z|" + "page-token-" * 12
    async with hub.store.session() as s:
        s.add(Cursor(connector="crm", stream="events", value=watermark))
    await hub.close()
    code, out = await asyncio.to_thread(cxhub, "status", "-c", str(config_file))
    assert code == 0, out
    [row] = [line for line in out.splitlines() if line.lstrip("│ ").startswith("crm")]
    assert watermark in row


async def test_diagnostics_show_what_the_running_processes_recorded(config_file, make_hub, crm_state) -> None:
    import json

    hub = await make_hub()
    await survey_flow(hub, crm_state, "C1", "P1")
    await hub.close()
    result = await asyncio.to_thread(runner.invoke, app, ["diagnostics", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    recorded = json.loads(result.stdout)["recorded"]
    assert recorded["channels"]["mail"]["sent_last_24h"] == 1
    assert recorded["connectors"]["crm"]["login_failing"] is False
