"""Hooks: every one documented and exercised; one plugin's failure never stops another; typos fail at load."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from hub import hookimpl, hookspecs
from hub.errors import ConfigError
from hub.generate import generated_files, hook_functions
from hub.plugins import PluginManager
from tests.helpers import case_event, survey_flow

ROOT = Path(__file__).parents[1]


class Recorder:
    """Implements every event and lifecycle hook, recording what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def hub_startup(self, hub: Any) -> None:
        self.calls.append(("hub_startup", {"hub": hub}))

    @hookimpl
    async def hub_shutdown(self, hub: Any) -> None:
        self.calls.append(("hub_shutdown", {"hub": hub}))

    @hookimpl
    async def hub_on_case_event_received(self, connector: str, event: Any, new: bool) -> None:
        self.calls.append(
            ("hub_on_case_event_received", {"connector": connector, "event": event, "new": new})
        )

    @hookimpl
    def hub_on_invitation_suppressed(self, invitation: Any, reason: str) -> None:
        self.calls.append(("hub_on_invitation_suppressed", {"invitation": invitation, "reason": reason}))

    @hookimpl
    async def hub_on_survey_sent(self, invitation: Any, channel: str, delivery: Any) -> None:
        self.calls.append(("hub_on_survey_sent", {"invitation": invitation, "channel": channel}))

    @hookimpl
    async def hub_on_response_received(self, response: Any, invitation: Any) -> None:
        self.calls.append(("hub_on_response_received", {"response": response}))

    @hookimpl
    def hub_on_response_written_back(self, connector: str, item: Any, result: Any) -> None:
        self.calls.append(("hub_on_response_written_back", {"item": item, "result": result}))

    @hookimpl
    async def hub_on_write_back_failed(
        self, connector: str, item: Any, error: str, dead_letter: bool
    ) -> None:
        self.calls.append(("hub_on_write_back_failed", {"item": item, "error": error, "dead": dead_letter}))

    def names(self) -> set[str]:
        return {name for name, _ in self.calls}

    def of(self, name: str) -> list[dict[str, Any]]:
        return [args for n, args in self.calls if n == name]


class Raiser:
    @hookimpl
    def hub_on_response_received(self, response: Any) -> None:
        raise RuntimeError("plugin bug")


class AsyncRaiser:
    @hookimpl
    async def hub_on_response_received(self, response: Any) -> None:
        raise RuntimeError("async plugin bug")


def hook_errors(plugin: str) -> float:
    value = REGISTRY.get_sample_value(
        "cxhub_hook_errors_total", {"plugin": plugin, "hook": "hub_on_response_received"}
    )
    return value or 0.0


async def test_every_hook_fires_in_one_flow(make_hub, crm_state) -> None:
    recorder = Recorder()
    hub = await make_hub(plugin_objects=[("recorder", recorder)])
    token = await survey_flow(hub, crm_state)
    # a duplicate event, a suppressed person (P2 has "no mailings" in the CRM), an answer, a sync
    await hub.engine.receive("crm", [case_event("C1")], source="poll")
    await hub.engine.receive("crm", [case_event("C2", "P2")], source="webhook")
    await hub.engine.process_pending()
    _, page = await hub.engine.page_for_token(token)
    await hub.engine.record_answer(page.invitation_id, 10, comment="great")
    crm_state.fail_next.append((503, {"Retry-After": "0"}))
    await hub.sync.run("crm")
    await hub.sync.run("crm")
    await hub.close()

    fired = recorder.names()
    specs = {f.__name__ for f in hook_functions() if not f.__name__.startswith("hub_register_")}
    assert specs <= fired, f"hooks never exercised: {specs - fired}"
    received = recorder.of("hub_on_case_event_received")
    assert [r["new"] for r in received] == [True, False, True]
    suppressed = recorder.of("hub_on_invitation_suppressed")[0]
    assert suppressed["reason"] == "opted out in crm: no mailings"
    assert recorder.of("hub_on_response_received")[0]["response"].rating == 10
    failed = recorder.of("hub_on_write_back_failed")
    # the refused batch held one kind of item (a batch never mixes kinds) and the run stopped there
    assert len(failed) == 1 and not failed[0]["dead"] and failed[0]["error"] == "write batch: HTTP 503"
    assert len(recorder.of("hub_on_response_written_back")) == 3


async def test_a_raising_plugin_does_not_stop_the_others(make_hub, crm_state) -> None:
    recorder = Recorder()
    before = hook_errors("raiser"), hook_errors("async-raiser")
    hub = await make_hub(
        plugin_objects=[("raiser", Raiser()), ("async-raiser", AsyncRaiser()), ("recorder", recorder)]
    )
    token = await survey_flow(hub, crm_state)
    _, page = await hub.engine.page_for_token(token)
    response = await hub.engine.record_answer(page.invitation_id, 3)
    assert [r["response"].id for r in recorder.of("hub_on_response_received")] == [response.id]
    assert (hook_errors("raiser"), hook_errors("async-raiser")) == (before[0] + 1, before[1] + 1)
    # the event is not lost: the response is stored and its write-backs are queued
    assert await hub.sync.pending("crm") == 3


class Typo:
    @hookimpl
    def hub_on_response_recieved(self, response: Any) -> None:  # misspelt on purpose
        pass


def test_an_unknown_hook_fails_at_load_naming_the_plugin() -> None:
    manager = PluginManager()
    with pytest.raises(
        ConfigError, match=r'plugin "typo-plugin" \(object\) implements an unknown hook.*recieved'
    ):
        manager.register_object(Typo(), "typo-plugin")


def test_every_hook_is_documented_and_the_docs_are_current() -> None:
    for func in hook_functions():
        doc = inspect.getdoc(func) or ""
        assert len(doc) > 60, f"{func.__name__} needs a docstring that says when it fires"
        params = set(inspect.signature(func).parameters)
        for name in params:
            assert f":param {name}:" in doc, f"{func.__name__} does not document {name}"
    hooks_doc = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    for func in hook_functions():
        assert f"## `{func.__name__}(" in hooks_doc


def test_generated_files_are_not_stale() -> None:
    stale = [
        path
        for path, content in generated_files().items()
        if not (ROOT / path).exists() or (ROOT / path).read_text(encoding="utf-8") != content
    ]
    assert not stale, f"run `make generate`: stale {stale}"


def test_registration_hooks_collect_connectors_channels_and_emulators() -> None:
    manager = PluginManager()
    manager.load(modules=["tests.fakes.plugin"])
    assert {"fakecrm", "superoffice"} <= set(manager.connector_types)
    assert {"fakechannel", "email"} <= set(manager.channel_types)
    assert ("channel", "email") in manager.emulator_types


def test_hook_names_follow_the_convention() -> None:
    for name in (f.__name__ for f in hook_functions()):
        assert name.startswith(("hub_register_", "hub_on_")) or name in ("hub_startup", "hub_shutdown"), name
    assert hookspecs.__doc__
