"""``cxhub check`` says when a campaign's text costs more than one SMS: the real SMS plugin, pointed at its
Twilio emulator, describes the survey message the hub would send in each language it ships."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_sms.emulator import SmsEmulator
from typer.testing import CliRunner

from hub.cli import app
from hub.texts import LANGUAGES
from tests.conftest import config_text

runner = CliRunner()

#: a German question of the survey's own with a smiley: outside GSM-7, so the German text is UCS-2
SMILEY_QUESTION = "Wie wahrscheinlich ist es, dass Sie {company} einem Freund empfehlen? \U0001f642"


@pytest.fixture
def phone(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmsEmulator]:
    with SmsEmulator() as running:
        for name, value in running.environment().items():
            monkeypatch.setenv(name, value)
        running.forward_to("http://127.0.0.1:8000", "text")  # the config's public URL: the sender is set up
        yield running


def sms_config(tmp_path: Path, database_url: str, crm_url: str, phone: SmsEmulator, extra: str) -> Path:
    """The test config with the SMS plugin enabled as channel ``text`` and ``extra`` surveys and campaigns."""
    settings = "\n".join(
        f"{key} = {json.dumps(value)}"
        for key, value in phone.instance_settings().items()
        if value is not None
    )
    text = config_text(database_url, crm_url, f'\n[channels.text]\nplugin = "sms"\n{settings}\n{extra}')
    path = tmp_path / "cxhub.toml"
    path.write_text(text.replace("plugins = []", 'plugins = ["sms"]'))
    return path


CAMPAIGNS = f"""
[surveys.smiley]
kind = "nps"
question = {{ de = "{SMILEY_QUESTION}" }}

[surveys.csat]
kind = "csat"

[campaigns.smiley_by_text]
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "smiley"
channels = ["text", "mail"]
answer_by = "reply"

[campaigns.csat_by_text]
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "csat"
channels = ["mail", "text"]

[campaigns.switched_off]
enabled = false
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "smiley"
channels = ["text"]
"""


def warnings(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["result"] == "warning"]


def test_check_warns_of_a_text_that_takes_more_than_one_segment_naming_campaign_channel_and_language(
    tmp_path: Path, database_url: str, fake_crm, phone: SmsEmulator
) -> None:
    config = sms_config(tmp_path, database_url, fake_crm.url, phone, CAMPAIGNS)
    result = runner.invoke(app, ["check", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output  # a warning is no failure: the hub still works
    rows = json.loads(result.stdout)
    assert [r for r in rows if r["result"] == "failed"] == []
    [row] = warnings(rows)
    assert row["instance"] == "text"
    assert row["check"] == "text of campaign smiley_by_text in de"
    assert "UCS-2" in row["detail"] and "segments" in row["detail"] and "reply mode" in row["detail"]
    # the CSAT campaign by link and the other languages of the reply campaign fit one segment: no rows;
    # the campaign that is switched off is not looked at
    assert not any("csat_by_text" in r["check"] or "switched_off" in r["check"] for r in rows)

    table = runner.invoke(app, ["check", "-c", str(config)])
    assert table.exit_code == 0, table.output
    line = next(line for line in table.output.splitlines() if "smiley_by_text in de" in line)
    assert "warning" in line and "UCS-2" in line


def test_every_language_of_the_hubs_own_texts_fits_one_segment_by_reply_and_by_link(
    tmp_path: Path, database_url: str, fake_crm, phone: SmsEmulator
) -> None:
    """All survey kinds, both ways of answering, every shipped language: no warning at all."""
    kinds = ("nps", "csat", "ces", "smiley")
    surveys = "".join(f'\n[surveys.{kind}_survey]\nkind = "{kind}"\n' for kind in kinds)
    extra = surveys + "".join(
        f"""
[campaigns.{kind}_{answer_by}]
trigger = {{ connector = "crm", event = "case.closed" }}
survey = "{kind}_survey"
channels = ["text"]
answer_by = "{answer_by}"
"""
        for kind in kinds
        for answer_by in ("reply", "link")
    )
    config = sms_config(tmp_path, database_url, fake_crm.url, phone, extra)
    result = runner.invoke(app, ["check", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["detail"] == f"{2 * len(kinds) + 1} campaign(s)"
    assert warnings(rows) == [], f"languages looked at: {LANGUAGES}"


def test_a_reply_asked_from_an_alphanumeric_sender_is_a_warning_in_every_language(
    tmp_path: Path, database_url: str, fake_crm, phone: SmsEmulator
) -> None:
    extra = CAMPAIGNS.replace('"smiley"', '"csat"').replace(
        'channels = ["mail", "text"]', 'channels = ["text"]'
    )
    config = sms_config(tmp_path, database_url, fake_crm.url, phone, extra)
    config.write_text(
        config.read_text().replace(f'from_number = "{phone.state.number}"', 'from_number = "Acme"')
    )
    result = runner.invoke(app, ["check", "-c", str(config), "--json"])
    rows = json.loads(result.stdout)
    found = {r["check"] for r in warnings(rows) if "alphanumeric" in r["detail"]}
    assert found == {f"text of campaign smiley_by_text in {language}" for language in LANGUAGES}
