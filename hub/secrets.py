"""Secrets in config are references, never values: ``env:NAME`` or ``file:/path``.

``Secret`` is the pydantic type plugin settings use for credentials. It resolves the reference when the config
is validated and holds the value as ``SecretStr``, which prints as ``**********`` in reprs, logs and
diagnostics. A literal value is refused, so a password never sits in a file that gets copied around.

``EnvStr`` is the type of every other string setting (user names, org ids, URLs): it takes a literal or an
``env:NAME`` reference, so a deployment that keeps its settings in the environment can do so for all of them.
A variable that is set but empty is refused for both: an empty user name or password is always a mistake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

REDACTED = "**********"


def from_environment(name: str, alternative: str = "") -> str:
    """The value of the variable ``name``; unset or empty is a config error that names the variable."""
    if not name:
        raise ValueError('"env:" needs a variable name, e.g. env:CXHUB_API_TOKEN')
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"environment variable {name} is not set; export it {alternative}".rstrip())
    if not value.strip():
        raise ValueError(
            f"environment variable {name} is set but empty; export its value {alternative}".rstrip()
        )
    return value


def resolve_env(value: Any) -> Any:
    """``env:NAME`` -> the variable's value; any other value is left for the field's own type to check."""
    if isinstance(value, str) and value.startswith("env:"):
        return from_environment(value[4:])
    return value


def resolve_secret(value: Any) -> Any:
    """Turn ``env:NAME`` / ``file:/path`` into the secret's value; refuse anything else."""
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret is written as env:NAME or file:/path")
    if value.startswith("env:"):
        return SecretStr(from_environment(value[4:], "or use file:/path"))
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            content = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        if not content.strip():
            raise ValueError(f"secret file {path} is empty; write the secret into it")
        return SecretStr(content)
    raise ValueError("write secrets as env:NAME or file:/path, never the value itself")


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
#: a string setting that may also be written ``env:NAME`` (user names, org ids, hosts, URLs)
EnvStr = Annotated[str, BeforeValidator(resolve_env)]


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret value in ``text``."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text
