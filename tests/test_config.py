"""A bad config stops start-up with one line per problem: the file, the key path and the fix."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hub.app import Hub
from hub.config import load_config, parse_config
from hub.errors import ConfigError
from tests.conftest import config_text


def problems_of(text: str, path: str = "config/cxhub.toml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), Path(path))
    return caught.value.problems


BASE = config_text("sqlite+aiosqlite:///x.db", "http://127.0.0.1:1")


def test_a_misspelt_channel_is_named_with_the_defined_ones() -> None:
    text = BASE.replace('channels = ["mail"]', 'channels = ["mail", "smss"]').replace(
        "[channels.mail]", '[channels.sms]\nplugin = "fakechannel"\nbase_url = "x"\n\n[channels.mail]'
    )
    assert problems_of(text) == [
        'config/cxhub.toml: campaigns.case_closed.channels[1]: no channel named "smss" (defined: mail, sms)'
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = BASE.replace('survey = "nps"', 'survey = "csat"').replace(
        'trigger = { connector = "crm"', 'trigger = { connector = "crmm"'
    )
    assert problems_of(text) == [
        'config/cxhub.toml: campaigns.case_closed.survey: no survey named "csat" (defined: nps)',
        'config/cxhub.toml: campaigns.case_closed.trigger.connector: no connector named "crmm" (defined: crm)',
    ]


def test_an_unknown_key_suggests_the_close_one() -> None:
    text = BASE.replace("min_days_between_surveys = 30", "min_days_between_survey = 30")
    assert problems_of(text) == [
        'config/cxhub.toml: policy.min_days_between_survey: unknown key; did you mean "min_days_between_surveys"?'
    ]


def test_a_retired_key_says_what_became_of_it() -> None:
    # a config written for an older hub: refused with what to do, not a bare "unknown key"
    text = BASE.replace("max_attempts = 3", "max_attempts = 3\nconcurrency = 4")
    assert problems_of(text) == [
        "config/cxhub.toml: sync.concurrency: no longer a setting: it never had an effect (each connector's"
        " write-backs go out one batch at a time, within the CRM's limits); delete the line"
    ]


def test_wrong_types_and_missing_keys_name_the_path() -> None:
    text = BASE.replace("max_attempts = 3", 'max_attempts = "three"').replace('survey = "nps"\n', "")
    lines = problems_of(text)
    assert (
        "config/cxhub.toml: sync.max_attempts: Input should be a valid integer; write a number without quotes"
        in lines
    )
    assert "config/cxhub.toml: campaigns.case_closed.survey: required: add it" in lines


def test_a_bad_time_zone_says_what_a_good_one_looks_like() -> None:
    text = BASE.replace("[policy]", '[policy]\ndefault_timezone = "Europe/Copenhagn"')
    assert problems_of(text) == [
        'config/cxhub.toml: policy.default_timezone: unknown time zone "Europe/Copenhagn"; '
        'use an IANA name such as "Europe/Oslo"'
    ]


def test_secrets_must_be_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CXHUB_TEST_API_TOKEN")
    text = BASE.replace('api_token = "env:CXHUB_TEST_API_TOKEN"', 'api_token = "hunter2hunter2"')
    assert problems_of(text) == [
        "config/cxhub.toml: hub.api_token: write secrets as env:NAME or file:/path, never the value itself"
    ]
    unset = BASE.replace("env:CXHUB_TEST_API_TOKEN", "env:CXHUB_NOT_SET")
    assert problems_of(unset) == [
        "config/cxhub.toml: hub.api_token: environment variable CXHUB_NOT_SET is not set; export it or use file:/path"
    ]


def test_secret_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    config = parse_config(
        tomllib.loads(BASE.replace("env:CXHUB_TEST_API_TOKEN", f"file:{secret}")), Path("c.toml")
    )
    assert config.hub.api_token is not None
    assert config.hub.api_token.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(config)


def test_not_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[hub\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file; create one with `cxhub init"):
        load_config(tmp_path / "nope.toml")


async def test_plugin_settings_are_validated_by_the_plugins_model(tmp_path: Path) -> None:
    text = BASE.replace('token = "env:FAKE_CRM_TOKEN"', 'tokn = "env:FAKE_CRM_TOKEN"').replace(
        'plugin = "fakechannel"', 'plugin = "fakechanel"'
    )
    config = parse_config(tomllib.loads(text), tmp_path / "cxhub.toml")
    with pytest.raises(ConfigError) as caught:
        await Hub.open(config, migrate=False)
    where = tmp_path / "cxhub.toml"
    assert caught.value.problems == [
        f"{where}: connectors.crm.token: required: add it",
        f'{where}: connectors.crm.tokn: unknown key; did you mean "token"?',
        f'{where}: channels.mail.plugin: no channel type "fakechanel" (installed: fakechannel); '
        "install its plugin or fix the name",
    ]


def test_the_starter_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[1] / "config" / "cxhub.example.toml")
    assert config.surveys["nps"].kind.value == "nps"


def _uncommented(text: str, header: str) -> str:
    """``text`` with the commented example section that starts at ``header`` (and its comments) written out."""
    lines = text.splitlines()
    start = lines.index(f"# {header}")
    ends = (i for i in range(start, len(lines)) if not lines[i].startswith("#") or lines[i] == "#")
    end = next(ends, len(lines))
    lines[start:end] = [line[2:] for line in lines[start:end]]
    return "\n".join(lines) + "\n"


def test_the_starter_configs_sms_examples_are_valid_once_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commented SMS channel and campaign answered by reply, as `cxhub init` writes them, pass the SMS
    plugin's own settings model and the campaign rules when an admin takes them as they are."""
    from hub.app import validate_instances
    from hub.plugins import PluginManager

    starter = (Path(__file__).parents[1] / "hub" / "starter.toml").read_text(encoding="utf-8")
    assert starter == (Path(__file__).parents[1] / "config" / "cxhub.example.toml").read_text(
        encoding="utf-8"
    )
    for header in ("[channels.mail]", "[channels.sms]", "[campaigns.case_closed_by_text]"):
        starter = _uncommented(starter, header)
    text = starter
    text += '\n[connectors.service]\nplugin = "fakecrm"\nbase_url = "http://127.0.0.1:1"\ntoken = "env:FAKE_CRM_TOKEN"\n'
    text += 'webhook_secret = "env:FAKE_WEBHOOK_SECRET"\n'
    text = text.replace(
        '# plugin_modules = ["my_company.cxhub_plugin"]', 'plugin_modules = ["tests.fakes.plugin"]'
    )
    for name, value in {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
        "SMTP_PASSWORD": "p",
    }.items():
        monkeypatch.setenv(name, value)
    config = parse_config(tomllib.loads(text), tmp_path / "cxhub.toml")
    campaign = config.campaigns["case_closed_by_text"]
    assert campaign.answer_by == "reply" and campaign.channels == ["sms", "mail"]
    plugins = PluginManager()
    plugins.load(["sms", "email"], config.hub.plugin_modules)
    settings = validate_instances(config, plugins)
    sms = settings["channels.sms"]
    assert sms.from_number == "+4552512345" and sms.default_region == "DK"  # type: ignore[attr-defined]
    assert sms.messages_per_second == 1  # type: ignore[attr-defined]


def test_score_maps_stay_on_the_scale() -> None:
    text = BASE + '\n[surveys.smile]\nkind = "smiley"\nscore_map = { 1 = 0, 2 = 50, 4 = 100 }\n'
    assert problems_of(text) == [
        "config/cxhub.toml: surveys.smile.score_map: rating 4 is outside the smiley scale 1-3"
    ]


# --- strict types, typo hints, cron, environment references -----------------------------------------------------


def test_a_number_written_as_a_string_is_a_type_error() -> None:
    text = BASE.replace("[hub]", '[hub]\nport = "8080"').replace("max_attempts = 3", 'max_attempts = "3"')
    assert problems_of(text) == [
        "config/cxhub.toml: hub.port: Input should be a valid integer; write 8080 without quotes",
        "config/cxhub.toml: sync.max_attempts: Input should be a valid integer; write 3 without quotes",
    ]


def test_a_flag_written_as_a_string_is_a_type_error() -> None:
    text = BASE.replace('plugin = "fakechannel"', 'plugin = "fakechannel"\nenabled = "yes"')
    assert problems_of(text) == [
        "config/cxhub.toml: channels.mail.enabled: Input should be a valid boolean; write true or false without quotes"
    ]


def test_quiet_hours_and_score_maps_still_read_as_toml_writes_them() -> None:
    text = BASE.replace("[policy]", '[policy]\nquiet_hours = { start = "21:00", end = 08:00:00 }') + (
        '\n[surveys.smile]\nkind = "smiley"\nscore_map = { 1 = 0, 2 = 50, 3 = 100 }\n'
    )
    config = parse_config(tomllib.loads(text), Path("c.toml"))
    assert config.policy.quiet_hours is not None and str(config.policy.quiet_hours.start) == "21:00:00"
    assert config.surveys["smile"].score_map == {1: 0.0, 2: 50.0, 3: 100.0}


async def test_a_misspelt_hub_key_of_a_connector_suggests_the_nearest_key(tmp_path: Path) -> None:
    text = BASE.replace("poll_interval_seconds = 0", "poll_intervall_seconds = 0")
    config = parse_config(tomllib.loads(text), tmp_path / "cxhub.toml")
    with pytest.raises(ConfigError) as caught:
        await Hub.open(config, migrate=False)
    assert caught.value.problems == [
        f"{tmp_path / 'cxhub.toml'}: connectors.crm.poll_intervall_seconds: unknown key; "
        'did you mean "poll_interval_seconds"?'
    ]


@pytest.mark.parametrize(
    ("setting", "where"),
    [
        ('[sync]\ncron = "61 * * * *"', "sync.cron"),
        ('[sync]\ncron = "every hour"', "sync.cron"),
        ('poll_interval_seconds = 0\nsync_cron = "0 25 * * *"', "connectors.crm.sync_cron"),
    ],
)
def test_an_invalid_cron_is_a_config_error_naming_the_key(setting: str, where: str) -> None:
    before = "[sync]" if setting.startswith("[sync]") else "poll_interval_seconds = 0"
    [line] = problems_of(BASE.replace(before, setting))
    assert line.startswith(f"config/cxhub.toml: {where}: ")
    assert "is not a crontab expression" in line and 'e.g. "0 * * * *"' in line


def test_an_empty_environment_variable_is_not_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXHUB_TEST_API_TOKEN", "")
    assert problems_of(BASE) == [
        "config/cxhub.toml: hub.api_token: environment variable CXHUB_TEST_API_TOKEN is set but empty; "
        "export its value or use file:/path"
    ]


def test_plain_settings_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXHUB_TEST_HOST", "0.0.0.0")
    monkeypatch.setenv("CXHUB_TEST_CRON", "*/5 * * * *")
    text = BASE.replace("[hub]", '[hub]\nhost = "env:CXHUB_TEST_HOST"').replace(
        "[sync]", '[sync]\ncron = "env:CXHUB_TEST_CRON"'
    )
    config = parse_config(tomllib.loads(text), Path("c.toml"))
    assert (config.hub.host, config.sync.cron) == ("0.0.0.0", "*/5 * * * *")
    monkeypatch.setenv("CXHUB_TEST_HOST", "")
    assert problems_of(text) == [
        "config/cxhub.toml: hub.host: environment variable CXHUB_TEST_HOST is set but empty; export its value"
    ]


def test_trusted_proxies_are_addresses_or_networks() -> None:
    ok = parse_config(
        tomllib.loads(BASE.replace("[hub]", '[hub]\ntrusted_proxies = ["10.0.0.5", "10.1.0.0/16"]')),
        Path("c.toml"),
    )
    assert ok.hub.trusted_proxies == ["10.0.0.5", "10.1.0.0/16"]
    assert problems_of(BASE.replace("[hub]", '[hub]\ntrusted_proxies = ["proxy.local"]')) == [
        'config/cxhub.toml: hub.trusted_proxies[0]: "proxy.local" is not an IP address or network; '
        'write e.g. "10.0.0.5" or "10.0.0.0/8"'
    ]


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("\n")
    assert problems_of(BASE.replace("env:CXHUB_TEST_API_TOKEN", f"file:{secret}")) == [
        f"config/cxhub.toml: hub.api_token: secret file {secret} is empty; write the secret into it"
    ]
