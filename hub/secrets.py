"""Secrets in config are references, never values: ``env:NAME`` or ``file:/path``.

``Secret`` is the pydantic type plugin settings use for credentials. It resolves the reference when the config
is validated and holds the value as ``SecretStr``, which prints as ``**********`` in reprs, logs and
diagnostics. A literal value is refused, so a password never sits in a file that gets copied around.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, SecretStr

REDACTED = "**********"


def resolve_secret(value: Any) -> Any:
    """Turn ``env:NAME`` / ``file:/path`` into the secret's value; refuse anything else."""
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret is written as env:NAME or file:/path")
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError('"env:" needs a variable name, e.g. env:CXHUB_API_TOKEN')
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set; export it or use file:/path")
        return SecretStr(os.environ[name])
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    raise ValueError("write secrets as env:NAME or file:/path, never the value itself")


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]


def redact(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret value in ``text``."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text
