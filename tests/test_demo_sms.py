"""``cxhub demo --channel sms --auto`` completes the loop: the survey is texted, the demo texts a score through
the phone, the hub texts the follow-up question, the demo texts the reason, and the SuperOffice emulator
shows the answer with its reason. The SMS side is the SMS plugin with its Twilio emulator and phones, served
over real HTTP like every other part of the demo."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hub_sms.emulator import SmsEmulator
from rich.console import Console

from hub import demo

#: the demo person's mobile (SuperOffice emulator seed): a number reserved for fiction, valid as a mobile
EMMA = "+61491570156"


async def run_sms_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phone: SmsEmulator) -> str:
    """``cxhub demo --crm superoffice --channel sms --auto`` with ``phone``; returns what it printed."""
    monkeypatch.setattr(demo, "pick_phone", lambda: phone)
    config = tmp_path / "demo.toml"  # the demo keeps its database and mail beside its config
    config.write_text(demo.DEMO_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    out = io.StringIO()
    await demo.run_demo(config, "superoffice", True, Console(file=out, width=200), "sms")
    return out.getvalue()


async def test_the_sms_demo_answers_by_text_and_the_crm_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone = SmsEmulator()
    printed = await run_sms_demo(tmp_path, monkeypatch, phone)
    assert f"The survey was texted to {EMMA}" in printed and "Reply with a number from 0" in printed, printed
    assert 'Texted "9"; the hub asked "' in printed, printed
    [conversation] = phone.conversations()
    assert conversation["number"] == EMMA
    senders = [m["sender"] for m in conversation["messages"]]
    assert senders == ["hub", "phone", "hub", "phone"], conversation
    assert (
        "Written back" in printed
        and "Quick and friendly help, thank you!" in printed.split("Written back")[1]
    )


async def test_the_sms_demo_goes_on_by_email_when_the_person_cannot_be_texted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phone = SmsEmulator()
    phone.state.landlines.add(EMMA)  # the provider says 21614: not a mobile
    printed = await run_sms_demo(tmp_path, monkeypatch, phone)
    assert "could not text the person" in printed and "21614" in printed, printed
    assert "The survey email arrived" in printed and "Written back" in printed, printed
    assert [c for c in phone.conversations() if any(m["sender"] == "phone" for m in c["messages"])] == []
