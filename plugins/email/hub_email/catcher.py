"""A local mail catcher: an SMTP server on 127.0.0.1 that keeps every message instead of delivering it.

It is the demo's mailbox (``cxhub demo`` sends its invitations here and shows them at /admin/mailbox) and the
real SMTP server of the email channel's tests. It runs in its own thread with its own event loop
(aiosmtpd's ``Controller``), so synchronous and asynchronous code can use it alike, and a sender on the
caller's event loop never deadlocks against it.

With a ``directory`` every message is also stored there as a Maildir (one file per message, written to
``tmp/`` and moved to ``new/``, so a reader never sees half a message); ``load_messages(directory)`` reads
them back from another process. The envelope travels in ``Return-Path`` and ``X-Envelope-To`` headers
prepended to the stored file, as a delivering server would, and the file's time is the time of delivery.

Test switches: ``rejections`` answers RCPT TO for chosen addresses with a given reply (a bounce, a deferral),
``credentials`` requires that login before any mail, ``tls_context`` offers STARTTLS (or, with
``implicit_tls``, wraps the whole connection).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mailbox
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_PARSER = BytesParser(policy=policy.default)
_ENVELOPE_HEADERS = ("Return-Path", "X-Envelope-To")


@dataclass(frozen=True)
class CaughtMail:
    """One received message: the parsed message as sent, its envelope, and when and how it arrived.

    ``peer`` is the sender's ``host:port``: messages from one SMTP session share it (unknown, None, for
    messages loaded from a directory).
    """

    key: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    received_at: datetime
    message: EmailMessage
    peer: str | None = None

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def body(self, subtype: str) -> str | None:
        """The decoded text of the ``text/<subtype>`` body (``plain`` or ``html``), None if there is none.

        Line endings are ``\n`` whatever the message travelled with (SMTP uses CRLF).
        """
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return None
        content = part.get_content()
        return content.replace("\r\n", "\n") if isinstance(content, str) else None

    @property
    def text(self) -> str | None:
        return self.body("plain")

    @property
    def html(self) -> str | None:
        return self.body("html")


def _parse(raw: bytes) -> EmailMessage:
    message = _PARSER.parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def _with_envelope(raw: bytes, mail_from: str, rcpt_tos: list[str]) -> bytes:
    """The message as stored: envelope headers first, and the local line ending, as mail files have."""
    lines = [f"Return-Path: <{mail_from}>"] + [f"X-Envelope-To: {rcpt}" for rcpt in rcpt_tos]
    return ("\n".join(lines) + "\n").encode("utf-8") + raw.replace(b"\r\n", b"\n")


def _open_maildir(directory: Path) -> mailbox.Maildir:
    # Maildir(create=True) makes the folders only when the directory itself is new; an existing, empty
    # directory (a fresh temp dir, a mounted volume) needs them too
    for sub in ("tmp", "new", "cur"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(directory, factory=None, create=False)


def load_messages(directory: str | Path) -> list[CaughtMail]:
    """Every message a catcher stored in ``directory``, oldest first; empty when nothing arrived yet."""
    path = Path(directory)
    if not (path / "new").is_dir():
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    caught = []
    for key in box.iterkeys():
        try:
            raw = box.get_bytes(key)
            received = box.get_message(key).get_date()
        except (KeyError, FileNotFoundError):  # removed by clear() while we read
            continue
        message = _parse(raw)
        mail_from = str(message.get("Return-Path", "")).strip().strip("<>")
        rcpt_tos = tuple(str(value) for value in message.get_all("X-Envelope-To", []))
        for name in _ENVELOPE_HEADERS:
            del message[name]
        caught.append(
            CaughtMail(
                key=key,
                mail_from=mail_from,
                rcpt_tos=rcpt_tos,
                received_at=datetime.fromtimestamp(received, UTC),
                message=message,
            )
        )
    return sorted(caught, key=lambda mail: (mail.received_at, mail.key))


class _Handler:
    """aiosmtpd's hooks: accept or reject each recipient, then keep the message."""

    def __init__(self, catcher: MailCatcher) -> None:
        self.catcher = catcher

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.catcher.rejections.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer
        peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
        key = self.catcher._keep(raw, envelope.mail_from or "", list(envelope.rcpt_tos), peer_text)
        return f"250 OK queued as {key}"


class _Controller(Controller):
    """aiosmtpd's threaded controller, able to listen on a free port (``port=0``)."""

    def _trigger_server(self) -> None:
        # called once the server listens: learn the port the system chose before connecting to it
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@dataclass
class _Box:
    messages: list[CaughtMail] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)


class MailCatcher:
    """A local SMTP server that keeps what it receives. Use ``with MailCatcher() as catcher:`` (or ``async
    with``), or ``start()`` / ``stop()``.

    :param host: address to listen on; keep the default loopback address, it accepts mail for anyone.
    :param port: port to listen on; 0 picks a free one (read ``port`` after start).
    :param directory: also store each message there as a Maildir, for another process to read.
    :param tls_context: a server-side SSL context: offers STARTTLS, or with ``implicit_tls`` wraps the
        whole connection (like port 465).
    :param credentials: ``(username, password)`` the client must log in with before sending.
    :param rejections: recipient address -> SMTP reply to RCPT TO, e.g. ``"550 5.1.1 No such user"``.
    :param smtp_options: further keyword arguments of ``aiosmtpd.smtp.SMTP`` (e.g. ``timeout`` to make it
        drop idle sessions).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        directory: str | Path | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        rejections: Mapping[str, str] | None = None,
        **smtp_options: Any,
    ) -> None:
        if implicit_tls and tls_context is None:
            raise ValueError("implicit_tls needs a tls_context")
        self.host = host
        self.port = port
        self.directory = Path(directory) if directory is not None else None
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.credentials = credentials
        self.rejections: dict[str, str] = {k.lower(): v for k, v in (rejections or {}).items()}
        self.smtp_options = smtp_options
        self._box = _Box()
        self._maildir = _open_maildir(self.directory) if self.directory is not None else None
        self._controller: _Controller | None = None

    # --- running -------------------------------------------------------------------------------------------

    def start(self) -> MailCatcher:
        """Listen; returns when the server answers. ``port`` then holds the real port."""
        if self._controller is not None:
            raise RuntimeError("the mail catcher is already running")
        options: dict[str, Any] = {"server_hostname": "localhost", **self.smtp_options}
        if self.tls_context is not None:
            if self.implicit_tls:
                options["ssl_context"] = self.tls_context
            else:
                options["tls_context"] = self.tls_context
        if self.credentials is not None:
            options.setdefault("authenticator", self._authenticate)
            options.setdefault("auth_required", True)
        controller = _Controller(_Handler(self), hostname=self.host, port=self.port, **options)
        controller.start()
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening and close every session; kept messages stay."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> MailCatcher:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def channel_settings(self) -> dict[str, Any]:
        """The connection part of ``EmailSettings`` that reaches this catcher (add from_address etc.)."""
        security = "none" if self.tls_context is None else ("tls" if self.implicit_tls else "starttls")
        return {"host": self.host, "port": self.port, "security": security}

    # --- what arrived --------------------------------------------------------------------------------------

    @property
    def messages(self) -> list[CaughtMail]:
        """A snapshot of every message received so far, oldest first."""
        with self._box.condition:
            return list(self._box.messages)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[CaughtMail]:
        """Block until at least ``count`` messages arrived; ``TimeoutError`` after ``timeout`` seconds.

        For a sender on another thread or process; from async code use ``wait_for_async``.
        """
        with self._box.condition:
            if not self._box.condition.wait_for(lambda: len(self._box.messages) >= count, timeout):
                raise TimeoutError(f"{len(self._box.messages)} of {count} messages arrived within {timeout}s")
            return list(self._box.messages)

    async def wait_for_async(self, count: int, timeout: float = 5.0) -> list[CaughtMail]:  # noqa: ASYNC109
        """``wait_for`` without blocking the event loop (the sender may run on it)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages
            if len(messages) >= count:
                return messages
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(messages)} of {count} messages arrived within {timeout}s")
            await asyncio.sleep(0.02)

    def clear(self) -> None:
        """Forget every message, in memory and in the directory."""
        with self._box.condition:
            self._box.messages.clear()
            if self._maildir is not None:
                self._maildir.clear()

    # --- called from the server thread ---------------------------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        username, password = self.credentials
        ok = auth_data.login == username.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, handled=False)

    def _keep(self, raw: bytes, mail_from: str, rcpt_tos: list[str], peer: str | None) -> str:
        received = time.time()
        message = _parse(raw)
        with self._box.condition:
            key = uuid.uuid4().hex
            if self._maildir is not None:
                key = self._maildir.add(_with_envelope(raw, mail_from, rcpt_tos))
            self._box.messages.append(
                CaughtMail(
                    key=key,
                    mail_from=mail_from,
                    rcpt_tos=tuple(rcpt_tos),
                    received_at=datetime.fromtimestamp(received, UTC),
                    message=message,
                    peer=peer,
                )
            )
            self._box.condition.notify_all()
        return key


def main(argv: list[str] | None = None) -> None:
    """``python -m hub_email.catcher``: run a catcher until Ctrl-C, storing mail in a Maildir."""
    parser = argparse.ArgumentParser(description="Local SMTP server that keeps every message it receives.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", default="mail", help="directory to store messages in (Maildir)")
    args = parser.parse_args(argv)
    catcher = MailCatcher(args.host, args.port, args.maildir)
    with catcher:
        print(f"catching mail on {catcher.host}:{catcher.port}, storing it in {args.maildir}/ (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
