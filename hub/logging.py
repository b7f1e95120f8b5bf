"""Logging: structlog, with every configured secret value scrubbed from every line, whatever logged it.

Secrets are ``SecretStr`` in settings, so a repr never shows them; this filter is the second line of defence
for values that slip into an exception message or a URL.

Survey and unsubscribe links are secrets too: whoever holds ``/s/<token>`` can answer or change a customer's
answer, and ``/u/<token>`` unsubscribes them. The same filter replaces the token of every such path, in
uvicorn's access and error logs, in structlog lines and in tracebacks alike.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog
from pydantic import BaseModel, SecretStr

from hub.secrets import REDACTED, redact

_SECRETS: set[str] = set()
#: the configured secrets, longest first (a secret inside another is not left half shown); kept in step
#: with ``_SECRETS`` by ``register_secrets``, so a log line does not sort them again
_ORDERED: list[str] = []
#: a survey (``/s/``) or unsubscribe (``/u/``) link's token, wherever the path appears in a line
_TOKEN_PATH = re.compile(r"(/[su]/)[A-Za-z0-9_%~.-]+")
_TOKEN_REPLACEMENT = r"\1" + REDACTED.replace("\\", "\\\\")
#: set on a record once scrubbed: uvicorn's loggers and the hub's handler both filter, a line is scrubbed once
_SCRUBBED = "_cxhub_scrubbed"


def _collect(value: Any, into: set[str]) -> None:
    if isinstance(value, SecretStr):
        into.add(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), into)
    elif isinstance(value, dict):
        for item in value.values():
            _collect(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect(item, into)


def secret_values(*models: Any) -> set[str]:
    found: set[str] = set()
    for model in models:
        _collect(model, found)
    return {v for v in found if v}


def register_secrets(config: BaseModel, plugin_settings: Iterable[BaseModel]) -> None:
    """Remember every secret of the config so log lines can be scrubbed of them."""
    _SECRETS.update(secret_values(config, *plugin_settings))
    _ORDERED[:] = sorted(_SECRETS, key=len, reverse=True)


def scrub(text: str) -> str:
    """The text without any configured secret value and without the token of any survey link.

    Every request writes an access line through this, so the common cases are cheap: a line without ``/s/``
    or ``/u/`` skips the search for tokens, and the secrets are not sorted again for each line."""
    if "/s/" in text or "/u/" in text:
        text = _TOKEN_PATH.sub(_TOKEN_REPLACEMENT, text)
    return redact(text, _ORDERED)


def _scrub_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = scrub(value)
        elif not isinstance(value, int | float | bool | None):
            # a URL object, an exception, a dict: scrubbed as the text it would be shown as
            shown = str(value)
            if scrub(shown) != shown:
                event_dict[key] = scrub(shown)
    return event_dict


class _ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SCRUBBED, False):
            return True
        setattr(record, _SCRUBBED, True)
        record.msg = scrub(record.getMessage())
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment (tests and embedding apps swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", json: bool = False) -> None:
    """Configure stdlib logging and structlog for the hub's processes."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler = logging.StreamHandler(_CurrentStderr())
    handler.addFilter(_ScrubFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's loggers write through the hub's handler, and scrub even a record a handler of their own gets
    # (an embedding app or a second server may have configured uvicorn's logging after us)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_log = logging.getLogger(name)
        server_log.handlers[:] = []
        server_log.propagate = True
        server_log.setLevel(logging.NOTSET)
        if not any(isinstance(f, _ScrubFilter) for f in server_log.filters):
            server_log.addFilter(_ScrubFilter())
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # a tick skipped because the previous one still runs is normal; job errors are logged by the hub itself
    logging.getLogger("apscheduler").setLevel(max(numeric, logging.ERROR))
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            _scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
