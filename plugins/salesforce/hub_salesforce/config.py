"""Settings of one Salesforce connector instance (``[connectors.<name>] plugin = "salesforce"``).

Defaults match the metadata package in ``metadata/`` (fields on Contact and Case, the ``Survey_Response__c``
object), so an org that deployed it needs no mapping at all; ``cxhub check`` names any mapped field the org
lacks. Credentials are ``Secret`` references (``env:NAME`` / ``file:/path``), never values.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hub import EnvStr, Secret


class _Section(BaseModel):
    """Unknown keys are errors: a misspelt field name must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


def _https_origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(
            "must be an https URL, e.g. https://login.salesforce.com or https://acme.my.salesforce.com"
        )
    return f"{parts.scheme}://{parts.netloc}"


#: the shortest HMAC key accepted for the JSON callout
MIN_WEBHOOK_SECRET = 32


# --- authentication -----------------------------------------------------------------------------


class JwtBearerAuth(_Section):
    """Recommended: OAuth 2.0 JWT bearer flow of a connected app (no password, no interactive consent).

    The hub signs a short-lived RS256 assertion (iss = consumer key, sub = username, aud = login URL) with
    the private key whose certificate is uploaded to the connected app, and exchanges it for a session.
    """

    type: Literal["jwt_bearer"] = "jwt_bearer"
    consumer_key: EnvStr = Field(description="the connected app's consumer key (client id)")
    username: EnvStr = Field(description="the integration user the hub acts as")
    private_key: Secret = Field(
        description="PEM private key matching the app's certificate, e.g. file:/etc/..."
    )
    audience: str | None = Field(
        None,
        description="JWT aud; default https://login.salesforce.com, or https://test.salesforce.com when "
        "login_url is a sandbox (test.salesforce.com or *.sandbox.my.salesforce.com)",
    )


class ClientCredentialsAuth(_Section):
    """OAuth 2.0 client credentials flow: needs the org's My Domain as ``login_url`` and a run-as user."""

    type: Literal["client_credentials"] = "client_credentials"
    client_id: EnvStr
    client_secret: Secret


class PasswordAuth(_Section):
    """Legacy: username, password and security token (OAuth username-password flow).

    Salesforce is retiring this flow; use it only where a connected app with a certificate is not possible.
    """

    type: Literal["password"] = "password"
    client_id: EnvStr
    client_secret: Secret
    username: EnvStr
    password: Secret
    security_token: Secret | None = None


Auth = Annotated[JwtBearerAuth | ClientCredentialsAuth | PasswordAuth, Field(discriminator="type")]


# --- write-back mapping -------------------------------------------------------------------------


class ContactFields(_Section):
    """Contact fields of the person summary; an empty name (or None) leaves that value out."""

    latest_rating: str | None = "CXHub_Latest_Rating__c"
    latest_score: str | None = "CXHub_Latest_Score__c"
    latest_category: str | None = "CXHub_Latest_Category__c"
    latest_date: str | None = "CXHub_Latest_Response_Date__c"
    latest_comment: str | None = "CXHub_Latest_Comment__c"
    average_rating: str | None = "CXHub_Average_Rating__c"
    average_rating_30_days: str | None = "CXHub_Average_Rating_30d__c"
    average_score: str | None = "CXHub_Average_Score__c"
    count: str | None = "CXHub_Response_Count__c"

    def mapped(self) -> dict[str, str]:
        """Summary attribute -> field name, for the values that are written."""
        return {name: field for name, field in self.model_dump().items() if field}


class OptOutFields(_Section):
    """Contact fields that show the hub's own opt-out of the person (an unsubscribe link, an SMS "STOP")
    and its end ("START"); an empty name leaves that value out, all empty writes nothing.

    An opt-out ticks ``opted_out`` and sets ``changed_at`` and ``reason`` ("replied STOPP by SMS"); an
    opt-in clears all three. The contact's own HasOptedOutOfEmail / DoNotCall are the org's consent, which
    the hub reads and never writes.
    """

    opted_out: str | None = Field("CXHub_Survey_Opt_Out__c", description="a Checkbox")
    changed_at: str | None = Field("CXHub_Survey_Opt_Out_Date__c", description="a Date/Time")
    reason: str | None = Field("CXHub_Survey_Opt_Out_Reason__c", description="a Text(255)")

    def mapped(self) -> dict[str, str]:
        return {name: field for name, field in self.model_dump().items() if field}


class ResponseObject(_Section):
    """The custom object holding one record per answer: the timeline entry on the Contact and the Case."""

    enabled: bool = True
    object: str = "Survey_Response__c"
    external_id_field: str = Field("Response_Id__c", description="External ID, unique: the hub's key")
    contact_field: str = "Contact__c"
    case_field: str | None = "Case__c"
    rating_field: str | None = "Rating__c"
    score_field: str | None = "Score__c"
    category_field: str | None = "Category__c"
    comment_field: str | None = "Comment__c"
    campaign_field: str | None = "Campaign__c"
    survey_kind_field: str | None = "Survey_Kind__c"
    channel_field: str | None = "Channel__c"
    answered_at_field: str | None = "Answered_At__c"

    def value_fields(self) -> dict[str, str]:
        """TimelineEntry attribute -> field name, for the optional value fields that are mapped."""
        names = {
            "rating": self.rating_field,
            "score": self.score_field,
            "category": self.category_field,
            "comment": self.comment_field,
            "campaign": self.campaign_field,
            "survey_kind": self.survey_kind_field,
            "channel": self.channel_field,
            "answered_at": self.answered_at_field,
        }
        return {name: field for name, field in names.items() if field}


#: where the Chatter post of an answer goes
ChatterTarget = Literal["off", "case", "contact", "both"]
ChatterFeed = Literal["case", "contact"]
CHATTER_FEEDS: dict[str, tuple[ChatterFeed, ...]] = {
    "off": (),
    "case": ("case",),
    "contact": ("contact",),
    "both": ("case", "contact"),
}


class CaseFields(_Section):
    """What an answer writes on the Case that triggered the survey.

    ``status_after_feedback`` sets Case.Status unless the hub names a status (``statuses`` maps the names
    the hub may ask for to the org's picklist values). The internal CaseComment (IsPublished = false) and the
    Chatter posts (on the Case, the contact, or both) are created once per answer: a field on the Case
    remembers the response id already noted, and it is written in the same transaction as the notes, so a
    retried write adds no second comment or post.
    """

    rating_field: str | None = "CXHub_Rating__c"
    score_field: str | None = None
    category_field: str | None = "CXHub_Category__c"
    comment_field: str | None = "CXHub_Comment__c"
    processed_field: str | None = "CXHub_Processed_At__c"
    response_id_field: str | None = Field(
        "CXHub_Response_Id__c", description="remembers the answer noted, so comments are not posted twice"
    )
    status_after_feedback: str | None = None
    statuses: dict[str, str] = Field(default_factory=dict, description='e.g. {"reopened" = "Escalated"}')
    internal_comment: bool = Field(True, description="add a private CaseComment when the hub asks for one")
    chatter_post: ChatterTarget = Field(
        "off",
        description='post the answer to Chatter: "case" (the Case\'s feed), "contact" (the feed of the contact '
        'who answered), "both" or "off"; true and false (older configs) mean "case" and "off"',
    )
    note_template: str = Field(
        "Customer feedback: {rating} ({category})\n{comment}",
        description="text of the comment and post; placeholders {rating} {score} {category} {comment}",
    )

    @field_validator("chatter_post", mode="before")
    @classmethod
    def _chatter_target(cls, value: object) -> object:
        """``chatter_post`` was a bool before the admin could pick the feed: old configs keep their meaning."""
        if isinstance(value, bool):
            return "case" if value else "off"
        if isinstance(value, str):
            return value.strip().lower()
        return value

    @property
    def chatter_feeds(self) -> tuple[ChatterFeed, ...]:
        """The feeds an answer is posted to, in the order the posts are created."""
        return CHATTER_FEEDS[self.chatter_post]

    def mapped(self) -> dict[str, str]:
        names = {
            "rating": self.rating_field,
            "score": self.score_field,
            "category": self.category_field,
            "comment": self.comment_field,
            "processed_at": self.processed_field,
            "response_id": self.response_id_field,
        }
        return {name: field for name, field in names.items() if field}


class PersonFields(_Section):
    """Contact fields the hub reads to reach a person and respect their wishes."""

    language_field: str | None = Field(None, description="e.g. Language__c; None = org default language")
    default_language: str | None = None


# --- the connector ------------------------------------------------------------------------------


class SalesforceSettings(_Section):
    """One Salesforce org."""

    login_url: str = Field(
        "https://login.salesforce.com",
        description="token endpoint host: login / test (sandbox) or the org's My Domain",
    )
    instance_url: str | None = Field(
        None, description="override the instance_url the token endpoint returns (rarely needed)"
    )
    auth: Auth
    api_version: str = Field("59.0", pattern=r"^\d{2,3}\.0$")
    ca_bundle: str | None = Field(None, description="PEM file of CAs to trust; default: the system store")
    proxy: str | None = Field(
        None,
        description="outbound proxy for every call to Salesforce, e.g. http://proxy.internal:3128; the "
        "connector reads no proxy (or CA) variables from the environment, only its settings",
    )
    organization_id: EnvStr | None = Field(
        None, description="18-char org id; Outbound Messages from another org are refused"
    )
    webhook_secret: Secret | None = Field(
        None,
        description="HMAC-SHA256 key of the JSON callout webhook (Apex/Flow), at least 32 characters; "
        "unset = callouts refused",
    )
    api_budget_share: float = Field(
        0.10, gt=0, le=1, description="share of the org's daily API allowance the hub may spend"
    )
    budget_window_seconds: float = Field(86400, gt=0, description="Salesforce counts a rolling 24 h")
    limit_pause_seconds: float = Field(900, gt=0, description="how long to stop after REQUEST_LIMIT_EXCEEDED")
    max_workers: int = Field(
        4, ge=1, le=25, description="threads for API calls (Salesforce allows 25 long ones)"
    )
    timeout_seconds: float = Field(30, gt=0)
    poll_cases: bool = True
    poll_opportunities: bool = True
    poll_overlap_seconds: float = Field(
        300, ge=0, description="each poll re-reads this far before the watermark"
    )
    initial_lookback_hours: float = Field(24, ge=0, description="where the very first poll starts")
    contact: ContactFields = Field(default_factory=ContactFields)
    opt_out: OptOutFields = Field(default_factory=OptOutFields)
    person: PersonFields = Field(default_factory=PersonFields)
    response_object: ResponseObject = Field(default_factory=ResponseObject)
    case: CaseFields = Field(default_factory=CaseFields)
    comment_max_length: int = Field(
        32768,
        ge=1,
        description="longer comments are cut before they are written; the package's comment fields hold "
        "32,768 characters (cxhub check names a mapped comment field that holds fewer)",
    )
    bulk_threshold: int = Field(
        2000,
        ge=0,
        description=(
            "from this many records of one kind in a batch (a full re-sync), write them as one Bulk API 2.0 "
            "job instead of sObject Collections calls of 200; Salesforce recommends Bulk from 2,000 records. "
            "0 = never use Bulk"
        ),
    )

    @field_validator("login_url")
    @classmethod
    def _login_origin(cls, value: str) -> str:
        return _https_origin(value)

    @field_validator("webhook_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty or short key would let anyone who guesses it sign a callout."""
        if value is not None and len(value.get_secret_value()) < MIN_WEBHOOK_SECRET:
            raise ValueError(
                f"must be at least {MIN_WEBHOOK_SECRET} characters, e.g. the output of `openssl rand -hex 32`"
            )
        return value

    @model_validator(mode="after")
    def _notes_need_their_marker(self) -> SalesforceSettings:
        """Without the marker field a retried write would add a second comment or post."""
        if (
            self.case.internal_comment or self.case.chatter_post != "off"
        ) and not self.case.response_id_field:
            raise ValueError(
                "case.response_id_field is empty, but case.internal_comment or case.chatter_post adds notes: "
                "map it to a text field (default CXHub_Response_Id__c) so a retry never notes an answer "
                'twice, or set case.internal_comment = false and case.chatter_post = "off"'
            )
        return self

    @field_validator("instance_url")
    @classmethod
    def _instance_origin(cls, value: str | None) -> str | None:
        return None if value is None else _https_origin(value)

    @property
    def token_url(self) -> str:
        return f"{self.login_url}/services/oauth2/token"

    @property
    def jwt_audience(self) -> str:
        """Salesforce's authorization server, never the My Domain the assertion is posted to.

        Salesforce accepts only https://login.salesforce.com (production), https://test.salesforce.com
        (sandboxes) or an Experience Cloud site URL as ``aud``; a My Domain URL is "audience is invalid".
        """
        if isinstance(self.auth, JwtBearerAuth) and self.auth.audience:
            return self.auth.audience
        host = urlsplit(self.login_url).hostname or ""
        if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
            return "https://test.salesforce.com"
        return "https://login.salesforce.com"
