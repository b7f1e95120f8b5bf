"""Settings of one email channel instance (``[channels.<name>] plugin = "email"``).

Validated when the hub loads its config, so a missing sender or a password sent in the clear is reported at
start-up with the key to fix, not when the first survey goes out.
"""

from __future__ import annotations

from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, field_validator, model_validator

from hub import EnvStr, Secret

Security = Literal["starttls", "tls", "none"]

#: the usual port of each kind of connection: submission (587), submissions (465), plain SMTP (25)
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


def check_address(value: str) -> str:
    """Accept a bare ``local@domain`` address and nothing else (no display name, no list)."""
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        raise ValueError(f'"{value}" is not an email address') from None
    if not address.username or not address.domain or address.addr_spec != value.strip():
        raise ValueError(f'"{value}" is not a single email address such as surveys@example.com')
    return value.strip()


class EmailSettings(BaseModel):
    """How the channel reaches its SMTP server and what its mail looks like to the recipient."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="SMTP server, e.g. smtp.office365.com")
    port: int | None = Field(
        None, ge=1, le=65535, description="unset: 587 for starttls, 465 for tls, 25 for none"
    )
    security: Security = Field(
        "starttls", description='"starttls" (upgrade a plain connection), "tls" (implicit TLS) or "none"'
    )
    username: EnvStr | None = Field(None, description="SMTP login; unset = send without logging in")
    password: Secret | None = Field(None, description="env:NAME or file:/path")
    from_address: str = Field(description="the sender address, e.g. feedback@example.com")
    from_name: str | None = Field(
        None, description="display name of the sender; unset = the company name of the survey's branding"
    )
    reply_to: str | None = Field(None, description="where replies go; unset = the sender address")
    max_per_second: float | None = Field(
        5, gt=0, description="send at most this many messages a second (provider limits); unset = no limit"
    )
    max_connections: int = Field(
        4,
        ge=1,
        le=32,
        description="SMTP sessions open at once, one per message being sent (the channel's concurrency "
        "hands it at most that many at once); 1 sends one message after the other",
    )
    timeout: float = Field(30, gt=0, description="seconds to wait for the server at each step")
    verify_tls: bool = Field(True, description="check the server's certificate; turn off only for testing")
    ca_bundle: FilePath | None = Field(
        None, description="PEM file of the CA that signed the server's certificate (a private CA)"
    )
    local_hostname: str | None = Field(
        None, description="the name this host gives in EHLO; unset = its fully qualified domain name"
    )

    @field_validator("from_address", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError('a host name such as "smtp.example.com"')
        return value

    @model_validator(mode="after")
    def _login(self) -> EmailSettings:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both, or neither to send without login")
        if self.password is not None and self.security == "none":
            raise ValueError('security = "none" would send the password unencrypted; use "starttls" or "tls"')
        return self

    @property
    def effective_port(self) -> int:
        """The configured port, or the usual one for the chosen security."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.security]

    @property
    def from_domain(self) -> str:
        """The sender's domain: the right-hand side of every Message-ID this channel makes."""
        return self.from_address.rpartition("@")[2]
