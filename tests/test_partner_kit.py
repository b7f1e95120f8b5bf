"""The partner kit's test suites run in a partner's project, whatever its asyncio setup.

Each test writes a small partner test module into a fresh folder with its own pytest.ini (so this
repository's ``asyncio_mode = auto`` does not apply) and runs pytest there in a new process: under
pytest-asyncio's strict mode (its default), auto mode, anyio's plugin, and neither. The connector is the
test connector of tests/fakes; a poll-only variant of it shows the capability flags.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub import BadInput, ConnectorType, PluginContext, WebhookReply, WebhookRequest, hookimpl
from hub.testing import Capabilities
from tests.fakes.crm import TOKEN, FakeState, sign
from tests.fakes.plugin import FakeCrmConnector, FakeCrmSettings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "whsec-partner-kit-0123"


class FakeCrmHarness:
    """The test CRM with signed webhooks and polling."""

    plugin = "fakecrm"
    plugin_modules = ("tests.fakes.plugin",)
    capabilities = Capabilities(webhooks=True, polling=True, timeline=True)

    def __init__(self, state: FakeState, url: str) -> None:
        self.state = state
        self.url = url

    def settings(self) -> dict[str, Any]:
        return {"base_url": self.url, "token": "env:KIT_CRM_TOKEN", "webhook_secret": "env:KIT_HOOK_SECRET"}

    def bad_settings(self) -> dict[str, Any]:
        return {**self.settings(), "token": "env:KIT_BAD_TOKEN"}

    def environment(self) -> dict[str, str]:
        return {"KIT_CRM_TOKEN": TOKEN, "KIT_HOOK_SECRET": SECRET, "KIT_BAD_TOKEN": "nope"}

    def close_case(self) -> str:
        seq = len(self.state.cases) + 1
        self.state.cases.append({"seq": seq, "id": f"S{seq}", "person_id": "P1"})
        return f"S{seq}"

    def closed_case_webhook(self) -> WebhookRequest:
        body = json.dumps({"id": self.close_case(), "person_id": "P1"}).encode()
        headers = {"content-type": "application/json", "x-fake-signature": sign(SECRET, body)}
        return WebhookRequest(method="POST", url="http://127.0.0.1:9/hooks/crm", body=body, headers=headers)

    def tamper(self, request: WebhookRequest) -> WebhookRequest:
        return request.model_copy(update={"body": request.body.replace(b'"P1"', b'"P2"')})

    def fail_writes(self, count: int, status: int, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
        self.state.write_failures = (count, status, headers)

    def timeline_entries(self, response_id: str) -> int:
        return sum(1 for key in self.state.records if key == f"timeline:{response_id}")


class PollOnlyConnector(FakeCrmConnector):
    """A CRM that can only be polled: it has no webhooks to verify."""

    async def parse_webhook(self, request: WebhookRequest) -> WebhookReply:
        raise BadInput("this CRM sends no webhooks", 404)


@hookimpl
def hub_register_connectors(register: Any) -> None:
    register(ConnectorType(name="polled", settings=FakeCrmSettings, factory=_poll_only))


def _poll_only(settings: FakeCrmSettings, ctx: PluginContext) -> PollOnlyConnector:
    return PollOnlyConnector(settings, ctx)


class PollOnlyHarness(FakeCrmHarness):
    plugin = "polled"
    plugin_modules = ("tests.fakes.plugin", "tests.test_partner_kit")
    capabilities = Capabilities(webhooks=False, polling=True, timeline=True)


SUITE_MODULE = """
import pytest
from hub.app import Hub
from hub.testing import BackgroundServer, ConnectorSuite
from hub.testing.harness import CONNECTOR
from tests.fakes.crm import FakeState, create_app
from tests.test_partner_kit import {harness}

{pytestmark}


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def state():
    state = FakeState()
    state.people["P1"] = {{"id": "P1", "email": "ada@example.com", "first_name": "Ada"}}
    return state


@pytest.fixture
def server(state):
    with BackgroundServer(create_app(state)) as server:
        yield server


class TestPartnerConnector(ConnectorSuite):
    @pytest.fixture
    def harness(self, state, server):
        return {harness}(state, server.url)

    {mark}
    async def test_added_by_the_partner(self, hub: Hub, harness) -> None:
        results = await hub.connectors[CONNECTOR].check()
        assert results and all(r.ok for r in results)
"""


def run_partner_tests(folder: Path, module: str, ini: str, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest in a new process on ``module`` in ``folder``, with ``ini`` as its pytest.ini."""
    (folder / "pytest.ini").write_text(f"[pytest]\n{ini}\n", encoding="utf-8")
    (folder / "test_partner.py").write_text(module, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *options, "test_partner.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def outcome(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}


MODES = {
    "strict": ("asyncio_mode = strict", [], "", "@pytest.mark.asyncio"),
    "auto": ("asyncio_mode = auto", [], "", ""),
    "anyio": ("", ["-p", "no:asyncio"], "pytestmark = pytest.mark.anyio", ""),
    "no asyncio plugin": ("", ["-p", "no:asyncio", "-p", "no:anyio"], "", ""),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_connector_suite_passes_in_every_asyncio_mode(mode: str, tmp_path: Path) -> None:
    ini, options, pytestmark, mark = MODES[mode]
    module = SUITE_MODULE.format(harness="FakeCrmHarness", pytestmark=pytestmark, mark=mark)
    result = run_partner_tests(tmp_path, module, ini, *options)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert outcome(result) == {"passed": 10}, result.stdout[-2000:]


@pytest.mark.slow
def test_poll_only_connector_passes_with_webhook_tests_reported_not_applicable(tmp_path: Path) -> None:
    module = SUITE_MODULE.format(harness="PollOnlyHarness", pytestmark="", mark="@pytest.mark.asyncio")
    result = run_partner_tests(tmp_path, module, "asyncio_mode = strict")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert outcome(result) == {"passed": 9, "skipped": 1}, result.stdout[-2000:]
    report = result.stdout.split("cxhub suites: tests not applicable to this plugin", 1)[1]
    assert "test_webhook_signature_accepted_and_refused: the CRM sends no signed webhooks" in report


def test_a_suite_test_is_a_plain_function_for_pytest() -> None:
    """What makes every mode work: pytest's asyncio plugins leave plain functions alone."""
    import inspect

    from hub.testing import ConnectorSuite

    test = ConnectorSuite.test_duplicate_event_ignored
    assert not inspect.iscoroutinefunction(test)
    assert list(inspect.signature(test).parameters) == ["self", "harness", "tmp_path"]
    assert not [m for m in getattr(test, "pytestmark", []) if m.name in ("asyncio", "anyio")]


def test_background_server_is_public_and_serves_https() -> None:
    import ssl

    import httpx
    from fastapi import FastAPI

    from hub.testing import TlsServer

    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with TlsServer(app) as server:
        assert server.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=server.ca_file)
        assert httpx.get(f"{server.url}/ping", verify=context).json() == {"pong": "yes"}
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/ping")  # nothing else trusts the throwaway CA
