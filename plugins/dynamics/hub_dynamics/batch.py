"""OData ``$batch`` bodies for Dataverse: building the multipart request, reading the multipart reply.

A batch holds *groups*: a group of one request goes as its own part; a group of several goes as a changeset
(one transaction: all or nothing). With ``Prefer: odata.continue-on-error`` a failing group does not stop
the others, and the reply has one part per request (a failed changeset answers with one error part).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(r"^HTTP/1\.1 (\d{3})")


@dataclass(frozen=True)
class Operation:
    """One request inside a batch; ``url`` is relative to the API root (e.g. ``contacts(<id>)``)."""

    method: str
    url: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartReply:
    """One answer inside the batch reply."""

    status: int
    headers: dict[str, str]
    body: Any
    content_id: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> tuple[str, str]:
        """(code, message) of a Dataverse error body."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            return str(error.get("code", "")), str(error.get("message", ""))[:500]
        return "", f"HTTP {self.status}"


def _request_lines(op: Operation, api_url: str, content_id: str | None) -> list[str]:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{op.method} {api_url}/{op.url} HTTP/1.1"]
    if op.body is not None:
        lines.append("Content-Type: application/json")
    lines += [f"{name}: {value}" for name, value in op.headers.items()]
    lines.append("")
    lines.append(json.dumps(op.body, separators=(",", ":")) if op.body is not None else "")
    return lines


def encode(groups: list[list[Operation]], api_url: str) -> tuple[str, bytes]:
    """(Content-Type header, body) of a batch of ``groups``."""
    boundary = f"batch_{uuid.uuid4()}"
    lines: list[str] = []
    content_id = 0
    for group in groups:
        lines.append(f"--{boundary}")
        if len(group) == 1:
            lines += _request_lines(group[0], api_url, None)
            continue
        changeset = f"changeset_{uuid.uuid4()}"
        lines += [f"Content-Type: multipart/mixed; boundary={changeset}", ""]
        for op in group:
            content_id += 1
            lines.append(f"--{changeset}")
            lines += _request_lines(op, api_url, str(content_id))
        lines.append(f"--{changeset}--")
    lines.append(f"--{boundary}--")
    lines.append("")
    return f"multipart/mixed; boundary={boundary}", CRLF.join(lines).encode("utf-8")


def _split(body: str, boundary: str) -> list[str]:
    """The parts between ``--boundary`` delimiters (preamble and epilogue dropped)."""
    parts = re.split(rf"(?:\r?\n)?--{re.escape(boundary)}(?:--)?[ \t]*\r?\n?", body)
    return [part for part in parts[1:] if part.strip()]


def _headers_and_rest(text: str) -> tuple[dict[str, str], str]:
    head, _, rest = text.partition("\r\n\r\n") if "\r\n\r\n" in text else text.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _http_part(text: str) -> PartReply:
    mime, rest = _headers_and_rest(text)
    status_line, _, rest = rest.lstrip("\r\n").partition("\n")
    match = _STATUS_LINE.match(status_line.strip())
    if match is None:
        raise ValueError(f"batch reply part without a status line: {status_line[:80]!r}")
    headers, payload = _headers_and_rest(rest)
    payload = payload.strip()
    try:
        body: Any = json.loads(payload) if payload else None
    except ValueError:
        body = payload
    return PartReply(int(match.group(1)), headers, body, mime.get("content-id"))


def decode(content_type: str, body: bytes) -> list[PartReply]:
    """Every answer of a batch reply, in request order (a changeset's answers flattened in place)."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise ValueError("batch reply without a multipart boundary")
    replies: list[PartReply] = []
    for part in _split(body.decode("utf-8"), match.group(1)):
        headers, rest = _headers_and_rest(part)
        inner = _BOUNDARY.search(headers.get("content-type", ""))
        if headers.get("content-type", "").startswith("multipart/mixed") and inner:
            replies += [_http_part(p) for p in _split(rest, inner.group(1))]
        else:
            replies.append(_http_part(part))
    return replies
