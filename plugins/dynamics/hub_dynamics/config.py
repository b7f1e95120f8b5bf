"""Settings of one Dynamics 365 / Dataverse connector instance (``[connectors.<name>] plugin = "dynamics"``).

Defaults match the unmanaged solution shipped with the plugin (publisher prefix ``cxhub``), so an org that
imported it needs only the URL, the tenant and the app registration. Credentials are ``Secret`` references
(``env:NAME`` / ``file:/path``), never values.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub import EnvStr, Secret

#: Dataverse accepts at most this many requests in one $batch
BATCH_LIMIT = 1000


class _Section(BaseModel):
    """Unknown keys are errors: a misspelt column name must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class ClientSecretAuth(_Section):
    """An app registration (application user in the environment) with a client secret."""

    type: Literal["client_secret"] = "client_secret"
    client_id: EnvStr = Field(description="Application (client) ID of the app registration")
    client_secret: Secret = Field(description="a client secret of the app registration")


class CertificateAuth(_Section):
    """An app registration with a certificate: a PEM holding the private key and the certificate."""

    type: Literal["certificate"] = "certificate"
    client_id: EnvStr = Field(description="Application (client) ID of the app registration")
    certificate: Secret = Field(
        description="PEM with the private key and the certificate uploaded to the app, e.g. file:/etc/cxhub/d365.pem"
    )
    passphrase: Secret | None = Field(None, description="passphrase of an encrypted private key")


Auth = Annotated[ClientSecretAuth | CertificateAuth, Field(discriminator="type")]


class WebhookSettings(_Section):
    """How the Dataverse service endpoint (contract Webhook) authenticates its POSTs to the hub.

    ``webhook_key``: the endpoint's WebhookKey, sent as ``?code=``; ``http_header``: a header name and value
    configured on the endpoint. Unset key = webhooks refused (polling still finds every event).
    """

    auth: Literal["webhook_key", "http_header"] = "webhook_key"
    key: Secret | None = Field(None, description="the WebhookKey, or the header's value")
    header_name: str = Field("x-cxhub-key", description="header name for auth = http_header")


class ContactColumns(_Section):
    """Columns of ``contact`` that receive the person summary; None leaves a value out."""

    latest_score: str | None = "cxhub_lastscore"
    latest_category: str | None = Field(
        "cxhub_lastcategory", description="a choice column (see category_options)"
    )
    latest_date: str | None = "cxhub_lastresponsedate"
    latest_comment: str | None = "cxhub_lastcomment"
    average_rating: str | None = "cxhub_averagescore"
    average_rating_30_days: str | None = "cxhub_averagescore30d"
    count: str | None = "cxhub_responsecount"

    def mapped(self) -> dict[str, str]:
        return {name: column for name, column in self.model_dump().items() if column}


class OptOutColumns(_Section):
    """Columns of ``contact`` that show the hub's own opt-out of the person (an unsubscribe link, an SMS
    "STOP") and its end ("START"); None leaves a value out, all None writes nothing.

    An opt-out sets the flag, the date and the reason ("replied STOPP by SMS"); an opt-in clears all three.
    The contact's own ``donot*`` columns are the CRM's, which the hub reads and never writes.
    """

    opted_out: str | None = Field("cxhub_surveyoptout", description="a Yes/No column")
    changed_at: str | None = Field("cxhub_surveyoptoutdate", description="a date and time column")
    reason: str | None = Field("cxhub_surveyoptoutreason", description="a text column (200 characters)")

    def mapped(self) -> dict[str, str]:
        return {name: column for name, column in self.model_dump().items() if column}


class TimelineSettings(_Section):
    """One row of a custom activity table per answer, regarding the case (or the contact without a case).

    The row's id is a uuid5 of the hub's key, and it is written with an upsert (PATCH by id), so a retry
    updates the row instead of adding a second.
    """

    enabled: bool = True
    table: str = Field("cxhub_surveyresponse", description="logical name of the activity table")
    entity_set: str = Field("cxhub_surveyresponses", description="its entity set name")
    score_column: str | None = "cxhub_score"
    category_column: str | None = "cxhub_category"
    comment_column: str | None = "cxhub_comment"
    response_id_column: str | None = "cxhub_responseid"


class CaseSettings(_Section):
    """What an answer writes on the incident that triggered it."""

    score_column: str | None = "cxhub_feedbackscore"
    comment_column: str | None = "cxhub_feedbackcomment"
    date_column: str | None = "cxhub_feedbackdate"
    status_reasons: dict[str, int] = Field(
        default_factory=dict,
        description='status names the hub may ask for -> statuscode, e.g. {"reopened" = 1}',
    )
    internal_note: bool = Field(True, description="add a note (annotation) to the case when the hub asks")
    note_subject: str = "Customer feedback"


class DynamicsSettings(_Section):
    """One Dataverse environment."""

    url: EnvStr = Field(description="the environment URL, e.g. https://contoso.crm4.dynamics.com")
    tenant_id: EnvStr = Field(description="Microsoft Entra tenant (directory) ID or domain")
    authority_host: str = Field(
        "https://login.microsoftonline.com",
        description="sovereign clouds: https://login.microsoftonline.us (GCC High), https://login.chinacloudapi.cn",
    )
    auth: Auth
    api_version: str = "v9.2"
    ca_bundle: str | None = Field(None, description="PEM file of CAs to trust; default: the system store")
    proxy: str | None = Field(None, description="outbound proxy for Entra ID and Dataverse calls")
    timeout_seconds: float = Field(30, gt=0)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    poll_cases: bool = True
    poll_opportunities: bool = True
    poll_page_size: int = Field(500, ge=1, le=5000, description="Prefer: odata.maxpagesize")
    poll_overlap_seconds: float = Field(300, ge=0, description="the modifiedon window re-reads this far back")
    initial_lookback_hours: float = Field(24, ge=0, description="where the very first poll starts")
    max_batch_requests: int = Field(BATCH_LIMIT, ge=1, le=BATCH_LIMIT, description="requests per $batch")
    window_request_share: float = Field(
        0.5, gt=0, le=1, description="share of the 6000 requests per 5 minutes the hub allows itself"
    )
    contact: ContactColumns = Field(default_factory=ContactColumns)
    opt_out: OptOutColumns = Field(default_factory=OptOutColumns)
    category_options: dict[str, int] = Field(
        default_factory=lambda: {"promoter": 100000000, "passive": 100000001, "detractor": 100000002},
        description="NPS category -> option value of the category choice columns",
    )
    timeline: TimelineSettings = Field(default_factory=TimelineSettings)
    case: CaseSettings = Field(default_factory=CaseSettings)
    comment_max_length: int = Field(
        2000, ge=1, description="longer comments are cut (the column's MaxLength)"
    )
    language_codes: dict[int, str] = Field(
        default_factory=lambda: {1033: "en", 1031: "de", 1036: "fr", 1043: "nl", 1030: "da", 1053: "sv"},
        description="LCID of the contact's preferred language column -> ISO 639-1",
    )
    language_column: str | None = Field(
        None, description="contact column holding an LCID (e.g. a custom one)"
    )

    @field_validator("url", "authority_host")
    @classmethod
    def _https_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.netloc:
            raise ValueError("must be an absolute https URL, e.g. https://contoso.crm.dynamics.com")
        return value.rstrip("/")

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/data/{self.api_version}"

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def scope(self) -> str:
        """The Dataverse resource's ``.default`` scope: the environment URL itself."""
        return f"{self.url}/.default"
