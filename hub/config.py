"""Loading and validating the config file (TOML).

One file configures the whole hub: ``[hub]``, ``[policy]``, ``[sync]``, named ``[connectors.<name>]`` and
``[channels.<name>]`` instances (hub keys plus the plugin's own settings, inline), ``[surveys.<name>]`` and
``[campaigns.<name>]``. Validation collects *every* problem and reports each as one line naming the file, the
key path and the fix, so an admin fixes a config in one pass rather than one error per start.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from datetime import time
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
)

from hub.errors import ConfigError
from hub.models import SCALES, Branding, SurveyKind
from hub.secrets import EnvStr, Secret


class Section(BaseModel):
    """Strict: ``port = "8080"`` or ``enabled = "yes"`` is a type error, not silently converted. Only the types
    TOML cannot write natively (a time as "21:00", a choice by name, an integer as a table key) are parsed."""

    model_config = ConfigDict(extra="forbid", strict=True)


def check_cron(value: str) -> str:
    """A crontab expression APScheduler accepts (five fields), checked at load time, not when a job starts."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f'"{value}" is not a crontab expression ({exc}); write five fields: minute hour day month '
            'weekday, e.g. "0 * * * *" for every hour'
        ) from None
    return value


_DATABASE_EXAMPLES = 'write "sqlite+aiosqlite:///cxhub.db" or "postgresql+asyncpg://user@host/database"'


def check_database_url(value: str) -> str:
    """A URL of a database the hub can use: parsable, an asyncio driver, and that driver installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL; {_DATABASE_EXAMPLES}") from None
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(f'unsupported database "{url.drivername}"; {_DATABASE_EXAMPLES}') from None
    if not getattr(dialect, "is_async", False):
        raise ValueError(f'"{url.drivername}" is not an asyncio driver; {_DATABASE_EXAMPLES}')
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ValueError(
            f'the driver of "{url.drivername}" is not installed ({exc}); {_DATABASE_EXAMPLES}'
        ) from None
    return value


def _check_proxy(value: str) -> str:
    try:
        ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f'"{value}" is not an IP address or network; write e.g. "10.0.0.5" or "10.0.0.0/8"'
        ) from None
    return value


def _check_region(value: str | None) -> str | None:
    """An ISO 3166 country code that libphonenumber knows ("DK", "gb" -> "GB")."""
    if value is None:
        return None
    import phonenumbers  # only when the setting is used

    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f'"{value}" is no country code for phone numbers; write e.g. "DK", "SE" or "GB"')
    return region


#: a crontab expression (``sync.cron``, a connector's ``sync_cron``); may be written ``env:NAME``
Cron = Annotated[EnvStr, AfterValidator(check_cron)]
#: a time of day; TOML writes it natively (21:00:00) or as a string ("21:00")
TimeOfDay = Annotated[time, Strict(False)]


class SsoSettings(Section):
    """Single sign-on to the cockpit with OpenID Connect (authorization code flow with PKCE). Who may enter,
    and in which role, is decided by the rules below from the ID token's ``email`` (only when the provider
    says it is verified) and its groups claim; anyone the rules do not name is refused."""

    issuer: EnvStr = Field(description="the provider's issuer URL, as its ID tokens name it")
    discovery_url: EnvStr | None = Field(
        None, description="its discovery document; unset = <issuer>/.well-known/openid-configuration"
    )
    client_id: EnvStr
    client_secret: Secret
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "profile"], description="asked for at sign-in"
    )
    groups_claim: str = Field("groups", description="the ID token claim that lists the user's groups")
    admin_emails: list[str] = Field(default_factory=list, description="these addresses sign in as admin")
    admin_domains: list[str] = Field(default_factory=list, description="addresses at these domains: admin")
    admin_groups: list[str] = Field(default_factory=list, description="members of these groups: admin")
    viewer_emails: list[str] = Field(default_factory=list, description="these addresses sign in as viewer")
    viewer_domains: list[str] = Field(default_factory=list, description="addresses at these domains: viewer")
    viewer_groups: list[str] = Field(default_factory=list, description="members of these groups: viewer")

    def metadata_url(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class HubSettings(Section):
    public_url: EnvStr = Field("http://127.0.0.1:8000", description="where customers and CRMs reach the hub")
    phone_region: Annotated[str | None, AfterValidator(_check_region)] = Field(
        None,
        description='country of the phone numbers a CRM stores without a country code (e.g. "DK": '
        '"31 22 44 66" is +4531224466); unset = such numbers cannot be read and are not used',
    )
    host: EnvStr = Field("127.0.0.1", description="address `cxhub serve` listens on")
    port: int = Field(8000, ge=0, le=65535)
    trusted_proxies: list[Annotated[EnvStr, AfterValidator(_check_proxy)]] = Field(
        default_factory=list,
        description="addresses or networks of the reverse proxies in front of the hub; only from these are "
        "X-Forwarded-For / X-Forwarded-Proto believed (client address for rate limits); empty = none",
    )
    database_url: Annotated[EnvStr, AfterValidator(check_database_url)] = Field(
        "sqlite+aiosqlite:///cxhub.db",
        description="SQLAlchemy async URL; a relative SQLite path is relative to this config file",
    )
    secret_key: Secret | None = Field(None, description="signs CSRF tokens; generated and stored if unset")
    api_token: Secret | None = Field(
        None, description="bearer token of the JSON admin API and its OpenAPI document; unset = API off"
    )
    metrics_token: Secret | None = Field(
        None, description="bearer token Prometheus sends to /metrics; unset = /metrics off (404)"
    )
    admin_password: Secret | None = Field(
        None,
        description="password of the built-in cockpit user `admin` (role admin); named users are added with "
        "`cxhub user add`; with neither (and no single sign-on) the cockpit is off",
    )
    admin_session_idle_minutes: float = Field(
        30, gt=0, description="a cockpit session ends after this long without a request"
    )
    admin_session_hours: float = Field(
        12, gt=0, description="a cockpit session ends this long after the sign-in, however active"
    )
    sso: SsoSettings | None = Field(None, description="single sign-on to the cockpit; unset = off")
    plugins: list[str] | None = Field(None, description="plugins to enable; unset = every installed plugin")
    plugin_modules: list[str] = Field(
        default_factory=list, description="extra plugin modules to load by import path (local plugins)"
    )
    branding: Branding = Field(default_factory=Branding)
    webhook_max_bytes: int = Field(1_000_000, gt=0)
    token_ttl_days: int = Field(30, gt=0, description="how long a survey link works")
    amend_window_hours: float = Field(24, ge=0, description="how long an answer can be amended")
    retention_days: int = Field(730, gt=0, description="raw event payloads older than this are deleted")
    rejected_retention_days: int = Field(
        14,
        gt=0,
        description="rejected webhook and inbound requests kept for inspection are deleted after this",
    )
    rejected_keep_per_target: int = Field(
        1000,
        gt=0,
        description="at most this many rejected requests are kept per connector or channel (the newest)",
    )
    demo: bool = Field(False, description="demo mode: shows the local mail catcher at /admin/mailbox")
    mailbox_dir: EnvStr | None = Field(
        None,
        description="demo mode: the mail catcher's Maildir folder shown at /admin/mailbox; "
        "a relative path is relative to this config file",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(
        True,
        description="a line per HTTP request in the log (survey tokens scrubbed); off when a reverse proxy in "
        "front of the hub logs the requests already, which saves about a tenth of a survey page's CPU",
    )


class QuietHours(Section):
    start: TimeOfDay = Field(description='e.g. "21:00"')
    end: TimeOfDay = Field(description='e.g. "08:00"')

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class PolicySettings(Section):
    """One contact policy for every campaign and channel."""

    min_days_between_surveys: float = Field(30, ge=0)
    quiet_hours: QuietHours | None = None
    default_timezone: EnvStr = "UTC"
    honour_crm_opt_out: bool = True

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return _check_zone(value)


class SyncSettings(Section):
    max_attempts: int = Field(8, ge=1, description="attempts before an item becomes a dead letter")
    backoff_base_seconds: float = Field(30, ge=0)
    backoff_max_seconds: float = Field(3600, ge=0)
    # 2 s: the freshness target (an answer in the CRM within 5 s at the 95th percentile, under a steady stream
    # of answers) must hold on a busy machine too, where storing the answer and calling the CRM took up to 2 s
    # more (bench/hot_paths.py); 2 s still lets a follow-up answered with a click (a topic) share the score's
    # write. A comment typed for longer costs a second write of the same keys, never a later first one (see
    # ``SyncService._ready``).
    prompt_seconds: float = Field(
        2,
        gt=0,
        description=(
            "how long a score alone waits for its follow-up comment before the CRM gets it (a complete answer"
            " goes at once; a key re-armed without a pause waits at most ten times this)"
        ),
    )
    cron: Cron = Field("0 * * * *", description="safety-net sync of every connector (crontab syntax)")
    lease_seconds: float = Field(
        60, gt=0, description="how long a claimed item or a running job is reserved for a worker (renewed)"
    )


class ConnectorInstance(BaseModel):
    """``[connectors.<name>]``: the hub's keys; every other key belongs to the plugin's settings model."""

    model_config = ConfigDict(extra="allow", strict=True)

    plugin: str
    enabled: bool = True
    poll_interval_seconds: float = Field(300, ge=0, description="0 turns polling off")
    sync_cron: Cron | None = Field(None, description="this connector's safety-net sync; unset = sync.cron")
    concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="events of this connector processed at once by one hub process, so at most this many "
        "reads of a person from the CRM in flight (the connector's own limits still apply)",
    )

    def plugin_settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ChannelInstance(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    plugin: str
    enabled: bool = True
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="messages one hub process hands to this channel at once (the provider's own rate "
        "limits still apply)",
    )

    def plugin_settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SurveySettings(Section):
    kind: Annotated[SurveyKind, Strict(False)] = SurveyKind.NPS
    question: dict[str, str] = Field(default_factory=dict, description="per language; built-in text if unset")
    comment: bool = True
    topics: dict[str, list[str]] = Field(
        default_factory=dict, description='per language: the choices of "What was it mostly about?"'
    )
    score_map: dict[Annotated[int, Strict(False)], float] | None = Field(
        None, description="rating -> 0-100 score (CSAT/CES/smiley)"
    )
    thank_you_link: EnvStr | None = None

    def topics_in(self, language: str) -> list[str]:
        """The topics offered in a language (English's where that language has none)."""
        return self.topics.get(language) or self.topics.get("en") or []

    def has_followup(self, language: str) -> bool:
        """Whether the score leads to a follow-up page; a survey without comment and topics ends with it."""
        return self.comment or bool(self.topics_in(language))

    def score_of(self, rating: int) -> float:
        if self.score_map is not None and rating in self.score_map:
            return float(self.score_map[rating])
        low, high = SCALES[self.kind]
        return round(100.0 * (rating - low) / (high - low), 2)


class Trigger(Section):
    connector: str
    event: str = Field(description='event type, e.g. "case.closed"')
    filters: dict[str, str | int | bool | list[str | int | bool]] = Field(default_factory=dict)


class AlertRule(Section):
    when: Literal["detractor", "passive", "promoter", "any"] = "detractor"
    channel: str
    to: EnvStr = Field("owner", description='"owner" (the case owner) or an email address')


class WriteBackSettings(Section):
    person_summary: bool = True
    timeline: bool = True
    case_feedback: bool = True
    case_status_after_feedback: EnvStr | None = None
    internal_comment: bool = False


class Campaign(Section):
    enabled: bool = True
    trigger: Trigger
    survey: str
    channels: list[str] = Field(min_length=1, description="in order of preference")
    delay_minutes: float = Field(0, ge=0)
    reminder_after_hours: float | None = Field(None, gt=0)
    default_language: str = "en"
    answer_by: Literal["link", "reply"] = Field(
        "link",
        description='how people answer: "link" opens the survey page; "reply" asks them to reply with the '
        "number (SMS, chat): the invitation says how, the follow-up question is sent as a reply and the next "
        "reply within the amend window is the comment. Channels without replies still send the link",
    )
    comment_wait_minutes: float = Field(
        10,
        ge=0,
        description='answer_by = "reply": how long the write-back of a texted score waits for the reason '
        "the follow-up question asks for, so the CRM gets score and reason as one write",
    )
    write_back_to: list[str] | None = Field(None, description="connectors to write to; unset = the trigger's")
    write_back: WriteBackSettings = Field(default_factory=WriteBackSettings)
    alerts: list[AlertRule] = Field(default_factory=list)

    def targets(self) -> list[str]:
        return self.write_back_to if self.write_back_to is not None else [self.trigger.connector]


class HubConfig(Section):
    hub: HubSettings = Field(default_factory=HubSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    connectors: dict[str, ConnectorInstance] = Field(default_factory=dict)
    channels: dict[str, ChannelInstance] = Field(default_factory=dict)
    surveys: dict[str, SurveySettings] = Field(default_factory=dict)
    campaigns: dict[str, Campaign] = Field(default_factory=dict)

    #: where it was read from; relative paths in it are relative to this file's folder
    _source: Path = PrivateAttr(default=Path("cxhub.toml"))

    @property
    def source(self) -> Path:
        return self._source

    def database_url(self) -> str:
        """The database URL, a relative SQLite path anchored at the config file's folder."""
        url = self.hub.database_url
        prefix = "sqlite+aiosqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str((self.source.parent / url[len(prefix) :]).resolve())
        return url


# --- error reporting --------------------------------------------------------------------------------------------


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("campaigns", "x", "channels", 1)`` -> ``campaigns.x.channels[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


#: keys that were settings once, and what to do about each: a config written for an older hub is refused with
#: this instead of a bare "unknown key"
RETIRED_KEYS = {
    "sync.concurrency": "it never had an effect (each connector's write-backs go out one batch at a time, "
    "within the CRM's limits); delete the line",
}


def _fix_for(error: dict[str, Any], model: type[BaseModel] | None, also_known: Iterable[str] = ()) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required: add it"
    if kind == "extra_forbidden" and model is not None:
        retired = RETIRED_KEYS.get(key_path(error["loc"]))
        if retired is not None:
            return f"no longer a setting: {retired}"
        name = str(error["loc"][-1])
        known = sorted({*_known_keys(model, error["loc"][:-1]), *also_known})
        return f"unknown key{_nearest(name, known)}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    given = error.get("input")
    if kind in ("int_type", "float_type", "bool_type") and isinstance(given, str):
        # strict types: a quoted number or flag is a string in TOML
        example = "true or false" if kind == "bool_type" else "a number"
        if kind != "bool_type" and _is_number(given):
            example = given.strip()
        return f"{message}; write {example} without quotes"
    return message


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _nearest(name: str, known: list[str]) -> str:
    """The hint of an unknown key: the nearest known key by similarity, or the whole list when none is near."""
    close = difflib.get_close_matches(name, known, n=1)
    return f'; did you mean "{close[0]}"?' if close else f" (known: {', '.join(known)})"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                # a dict value (e.g. campaigns.<name>): keep the value type
                continue
            current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def problems_from(
    error: ValidationError, source: Path, prefix: tuple[Any, ...] = (), model: type[BaseModel] | None = None
) -> list[str]:
    """One line per pydantic error: ``file: key.path: what to do``.

    A plugin's settings share their table with the hub's own keys of an instance (``plugin``,
    ``poll_interval_seconds``, ...), so a misspelt hub key there is matched against both.
    """
    instance_keys: set[str] = set()
    if len(prefix) == 2 and prefix[0] == "connectors":
        instance_keys = set(ConnectorInstance.model_fields)
    elif len(prefix) == 2 and prefix[0] == "channels":
        instance_keys = set(ChannelInstance.model_fields)
    lines = []
    for item in error.errors():
        loc = tuple(prefix) + tuple(item["loc"])
        also = instance_keys if len(item["loc"]) == 1 else set()
        lines.append(f"{source}: {key_path(loc)}: {_fix_for(dict(item), model, also)}")
    return lines


def _check_zone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone "{name}"; use an IANA name such as "Europe/Oslo"') from None
    return name


def _names(d: dict[str, Any]) -> str:
    return ", ".join(sorted(d)) or "none"


def cross_check(config: HubConfig) -> list[str]:
    """References between sections: campaigns name surveys, channels and connectors that exist."""
    src = config.source
    problems = []
    for name, campaign in config.campaigns.items():
        at = f"{src}: campaigns.{name}"
        if campaign.survey not in config.surveys:
            problems.append(
                f'{at}.survey: no survey named "{campaign.survey}" (defined: {_names(config.surveys)})'
            )
        if campaign.trigger.connector not in config.connectors:
            problems.append(
                f'{at}.trigger.connector: no connector named "{campaign.trigger.connector}" '
                f"(defined: {_names(config.connectors)})"
            )
        for i, channel in enumerate(campaign.channels):
            if channel not in config.channels:
                problems.append(
                    f'{at}.channels[{i}]: no channel named "{channel}" (defined: {_names(config.channels)})'
                )
        for i, target in enumerate(campaign.write_back_to or []):
            if target not in config.connectors:
                problems.append(
                    f'{at}.write_back_to[{i}]: no connector named "{target}" '
                    f"(defined: {_names(config.connectors)})"
                )
        for i, rule in enumerate(campaign.alerts):
            if rule.channel not in config.channels:
                problems.append(
                    f'{at}.alerts[{i}].channel: no channel named "{rule.channel}" '
                    f"(defined: {_names(config.channels)})"
                )
    for name, survey in config.surveys.items():
        if survey.score_map is not None:
            low, high = SCALES[survey.kind]
            for rating in survey.score_map:
                if not low <= rating <= high:
                    problems.append(
                        f"{src}: surveys.{name}.score_map: rating {rating} is outside the "
                        f"{survey.kind.value} scale {low}-{high}"
                    )
    return problems


def parse_config(data: dict[str, Any], source: Path) -> HubConfig:
    """Validate a config already read as a dict. Raises ConfigError listing every problem."""
    try:
        config = HubConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid config", problems_from(exc, source, model=HubConfig)) from None
    config._source = source
    problems = cross_check(config)
    if problems:
        raise ConfigError(f"{source}: invalid config", problems)
    return config


def load_config(path: str | Path) -> HubConfig:
    """Read and validate a config file. Raises ConfigError naming the file, each key and its fix."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no such file; create one with `cxhub init {source}` or pass --config"
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return parse_config(data, source)
