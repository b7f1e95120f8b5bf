"""Settings of one SuperOffice connector instance (``[connectors.<name>] plugin = "superoffice"``).

Everything an admin may need to change lives here, with defaults that work on a tenant where the fields
named below were created (``cxhub check`` lists the ones that are missing). Credentials are ``Secret``
references (``env:NAME`` / ``file:/path``), never values, so the config file can be shared safely.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub import EnvStr, Secret


class _Section(BaseModel):
    """Unknown keys are errors: a misspelt field name must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


# --- authentication -----------------------------------------------------------------------------


class SystemUserAuth(_Section):
    """SuperOffice CRM Online, server to server: the *system user* flow.

    The connector signs ``<system_user_token>.<yyyyMMddHHmm UTC>`` with the application's RSA key, exchanges
    it at PartnerSystemUser/Authenticate for a ticket and renews that ticket before SuperOffice expires it.
    """

    type: Literal["system_user"] = "system_user"
    application_token: Secret = Field(description="the application's client secret (sent as SO-AppToken)")
    system_user_token: Secret = Field(description="the tenant's system user token, from the app's approval")
    private_key: Secret = Field(description="the application's RSA private key, PEM (PKCS#1 or PKCS#8)")
    context_identifier: EnvStr = Field(description="the tenant, e.g. Cust12345")
    login_url: str | None = Field(
        None,
        description="PartnerSystemUser/Authenticate endpoint; default {scheme}://{host}/Login/api/"
        "PartnerSystemUser/Authenticate of base_url",
    )
    ticket_renew_seconds: float = Field(
        5 * 3600, gt=0, description="renew the ticket this long after getting it (tickets live about 6 h)"
    )


class RefreshTokenAuth(_Section):
    """An OpenID Connect app that holds a refresh token (interactive consent done once by an admin)."""

    type: Literal["refresh_token"] = "refresh_token"
    client_id: EnvStr
    client_secret: Secret
    refresh_token: Secret
    token_url: str | None = Field(
        None, description="token endpoint; default {scheme}://{host}/login/common/oauth/tokens of base_url"
    )
    redirect_uri: str | None = Field(None, description="sent with the refresh request if the app requires it")


class BasicAuth(_Section):
    """Onsite installations only: a user name and password (SuperOffice Online refuses Basic)."""

    type: Literal["basic"] = "basic"
    username: EnvStr
    password: Secret


Auth = Annotated[SystemUserAuth | RefreshTokenAuth | BasicAuth, Field(discriminator="type")]


# --- write-back mapping -------------------------------------------------------------------------


class PersonFields(_Section):
    """Where the person summary goes: a ProgId (``SuperOffice:12`` or a custom ProgId) or an extra field
    (``x_...``) per value; an empty name (or None) leaves that value out. Names starting with ``x_`` are
    written as extra fields, all others as user-defined fields."""

    latest_rating: str | None = "x_cxhub_last_rating"
    latest_score: str | None = None
    latest_category: str | None = "x_cxhub_last_category"
    latest_date: str | None = "x_cxhub_last_date"
    latest_comment: str | None = "x_cxhub_last_comment"
    average_rating: str | None = "x_cxhub_avg_rating"
    average_rating_30_days: str | None = "x_cxhub_avg_rating_30d"
    average_score: str | None = None
    count: str | None = "x_cxhub_count"

    def mapped(self) -> dict[str, str]:
        """Summary attribute -> field name, for the values that are written."""
        return {name: field for name, field in self.model_dump().items() if field}


class OptOutFields(_Section):
    """Where the hub's own opt-out of a person goes (an unsubscribe link, an SMS "STOP", and its end).

    Names as in ``person``. An opt-out ticks ``opted_out``, sets ``changed_at`` to when the person asked
    and ``reason`` to what they did ("replied STOPP by SMS"); an opt-in ("START") clears all three. With
    every name empty the connector writes nothing and reports the item written.
    """

    opted_out: str | None = "x_cxhub_opted_out"
    changed_at: str | None = "x_cxhub_opt_out_date"
    reason: str | None = "x_cxhub_opt_out_reason"

    def mapped(self) -> dict[str, str]:
        """Opt-out attribute -> field name, for the values that are written."""
        return {name: field for name, field in self.model_dump().items() if field}


class ExtraTableColumns(_Section):
    """Columns of the extra table that receives one row per answer (``timeline.mode = "extra_table"``)."""

    person: str = "x_person"
    rating: str | None = "x_rating"
    score: str | None = "x_score"
    category: str | None = "x_category"
    comment: str | None = "x_comment"
    answered_at: str | None = "x_answered_at"
    campaign: str | None = "x_campaign"
    ticket: str | None = "x_ticket"

    def mapped(self) -> dict[str, str]:
        return {name: column for name, column in self.model_dump().items() if column}


class TimelineSettings(_Section):
    """One entry per answer on the person's timeline.

    ``appointment``: a completed activity of ``task_id`` on the person, its text from ``template``; the hub's
    idempotency key is stored in the appointment's ``key_field`` and looked up before every create, so a
    retried write never makes a second entry. ``extra_table``: a row in ``table`` with ``key_field`` as the
    key column. ``off``: no timeline entries.
    """

    mode: Literal["appointment", "extra_table", "off"] = "appointment"
    key_field: str = Field("x_cxhub_response_id", description="custom field / column holding the hub's key")
    task_id: int | None = Field(
        None, description="TaskListItemId of the activity type; None = tenant default"
    )
    associate_id: int | None = Field(None, description="whose activity list it goes to; None = the API user")
    appointment_type: str = Field("InDiary", description="AppointmentEntity.Type of the activity")
    template: str = Field(
        "Customer feedback ([[campaign]]): [[rating]] ([[category]])\n[[comment]]",
        description="activity text; placeholders [[rating]] [[score]] [[category]] [[comment]] "
        "[[campaign]] [[channel]] [[ticket]] [[answered_at]]",
    )
    table: str = Field("y_cxhub_feedback", description="extra table for mode = extra_table")
    columns: ExtraTableColumns = Field(default_factory=ExtraTableColumns)


class TicketSettings(_Section):
    """What an answer writes on the ticket that triggered the survey.

    Field names are ticket extra fields (``x_...``); an empty name (or None) leaves a value out. The
    internal message is posted with ``notify=false`` and ``Slevel`` Internal, so the customer never sees it;
    it carries a Message-Id derived from the hub's key, looked up before posting so a retry adds no second.
    """

    rating_field: str | None = "x_cxhub_rating"
    comment_field: str | None = "x_cxhub_comment"
    processed_field: str | None = "x_cxhub_processed"
    received_field: str | None = "x_cxhub_received"
    internal_message: bool = Field(True, description="post the internal message when the hub asks for one")
    message_template: str = Field(
        "Customer feedback: [[rating]] ([[category]])\n[[comment]]",
        description="text of the internal message; placeholders as in timeline.template",
    )
    status_after_feedback: int | None = Field(
        None, description="TicketStatusId to set after feedback unless the hub names a status"
    )
    status_ids: dict[str, int] = Field(
        default_factory=dict, description='names the hub may ask for -> TicketStatusId, e.g. {"reopened" = 1}'
    )


# --- the connector ------------------------------------------------------------------------------


class SuperOfficeSettings(_Section):
    """One SuperOffice tenant (Online) or installation (onsite)."""

    base_url: str = Field(
        description="e.g. https://sod.superoffice.com/Cust12345; the API is {base_url}/api/v1"
    )
    auth: Auth
    webhook_secret: Secret | None = Field(
        None, description="shared secret of the SuperOffice webhook; unset = webhooks refused, polling only"
    )
    verify: bool | str = Field(True, description="TLS verification: true, false, or a CA bundle path")
    timeout_seconds: float = Field(30, gt=0)
    max_in_flight: int = Field(
        8, ge=1, le=64, description="concurrent API calls (SuperOffice has no batch API)"
    )
    poll_tickets: bool = True
    poll_sales: bool = True
    poll_overlap_seconds: float = Field(
        120, ge=0, description="each poll re-reads this far before the watermark"
    )
    poll_page_size: int = Field(200, ge=1, le=1000)
    initial_lookback_hours: float = Field(24, ge=0, description="where the very first poll starts")
    person: PersonFields = Field(default_factory=PersonFields)
    opt_out: OptOutFields = Field(default_factory=OptOutFields)
    timeline: TimelineSettings = Field(default_factory=TimelineSettings)
    ticket: TicketSettings = Field(default_factory=TicketSettings)
    comment_max_length: int = Field(2000, ge=1, description="longer comments are cut before they are written")
    language_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_LANGUAGE_NAMES),
        description="Person.CustomerLanguage names -> ISO 639-1 codes",
    )
    country_languages: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_COUNTRY_LANGUAGES),
        description="ISO country -> language, used when a person has no CustomerLanguage",
    )
    ticket_url_template: str = Field("{base_url}/default.aspx?ticket_id={id}", description="link in alerts")
    sale_url_template: str = Field("{base_url}/default.aspx?sale_id={id}")

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "base_url must be an absolute http(s) URL, e.g. https://sod.superoffice.com/Cust12345"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _timeline_fields_are_extra_fields(self) -> SuperOfficeSettings:
        """The key is looked up through the dynamic archive, which sees extra fields (x_) and tables (y_)."""
        if self.timeline.mode == "extra_table" and not self.timeline.table.startswith("y_"):
            raise ValueError("timeline.table must name an extra table (y_...)")
        if self.timeline.mode != "off" and not self.timeline.key_field.startswith("x_"):
            raise ValueError("timeline.key_field must be an extra field or column (x_...)")
        return self

    @property
    def api_url(self) -> str:
        """Root of the REST API: ``{base_url}/api/v1``."""
        return f"{self.base_url}/api/v1"

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of base_url: where the Login endpoints live."""
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def login_url(self) -> str:
        if isinstance(self.auth, SystemUserAuth) and self.auth.login_url:
            return self.auth.login_url
        return f"{self.origin}/Login/api/PartnerSystemUser/Authenticate"

    @property
    def token_url(self) -> str:
        if isinstance(self.auth, RefreshTokenAuth) and self.auth.token_url:
            return self.auth.token_url
        return f"{self.origin}/login/common/oauth/tokens"


DEFAULT_LANGUAGE_NAMES: dict[str, str] = {
    "english": "en",
    "danish": "da",
    "dansk": "da",
    "norwegian": "no",
    "norsk": "no",
    "swedish": "sv",
    "svenska": "sv",
    "german": "de",
    "deutsch": "de",
    "dutch": "nl",
    "nederlands": "nl",
    "finnish": "fi",
    "suomi": "fi",
}

DEFAULT_COUNTRY_LANGUAGES: dict[str, str] = {
    "DK": "da",
    "NO": "no",
    "SE": "sv",
    "DE": "de",
    "AT": "de",
    "NL": "nl",
    "FI": "fi",
    "GB": "en",
    "IE": "en",
    "US": "en",
}
