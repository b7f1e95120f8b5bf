"""``cxhub demo --channel sms --auto`` completes the loop: the survey is texted, the demo texts a score through
the phone, the hub texts the follow-up question, the demo texts the reason, and the SuperOffice emulator
shows the answer with its reason. The SMS side is the two-way test channel and its phone (the demo finds a
``hub.PhoneEmulator``), served over real HTTP like every other part of the demo."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from hub import demo
from tests.fakes import twoway
from tests.fakes.phone import FakePhone


async def run_sms_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phone: FakePhone) -> str:
    """``cxhub demo --crm superoffice --channel sms --auto`` with the test phone; returns what it printed."""
    monkeypatch.setattr(demo, "pick_phone", lambda: phone)
    config = tmp_path / "demo.toml"
    base = demo.DEMO_CONFIG.read_text(encoding="utf-8")
    config.write_text(base.replace("[hub]\n", '[hub]\nplugin_modules = ["tests.fakes.twoway_sms"]\n', 1))
    out = io.StringIO()
    await demo.run_demo(config, "superoffice", True, Console(file=out, width=200), "sms")
    return out.getvalue()


async def test_the_sms_demo_answers_by_text_and_the_crm_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twoway.PROVIDER = twoway.Provider()
    phone = FakePhone()
    printed = await run_sms_demo(tmp_path, monkeypatch, phone)
    assert "The survey was texted to +" in printed and "Reply with a number from 0" in printed, printed
    assert 'Texted "9"; the hub asked "' in printed, printed
    [conversation] = phone.conversations()
    senders = [m["sender"] for m in conversation["messages"]]
    assert senders == ["hub", "phone", "hub", "phone"], conversation
    assert (
        "Written back" in printed
        and "Quick and friendly help, thank you!" in printed.split("Written back")[1]
    )


async def test_the_sms_demo_goes_on_by_email_when_the_person_cannot_be_texted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twoway.PROVIDER = twoway.Provider(unreachable={"+61491570156"})
    phone = FakePhone()
    printed = await run_sms_demo(tmp_path, monkeypatch, phone)
    assert "could not text the person" in printed and "21614" in printed, printed
    assert "The survey email arrived" in printed and "Written back" in printed, printed
    assert phone.conversations() == []
