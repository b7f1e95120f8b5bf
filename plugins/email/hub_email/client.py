"""The SMTP side of the email channel: a few connections, reused across sends, paced, reopened when lost.

Opening an SMTP connection costs a TCP and TLS handshake and a login, often more than the send itself, and
providers count logins, so sends reuse open sessions: consecutive sends share one. An SMTP session carries
one message at a time, each a handful of round trips, so sends that run at once (the channel's
``concurrency``) each take a session of their own, up to ``max_connections``: one session alone capped a
burst of invitations at what those round trips allow (about 50 a second to a local server). A session is
replaced after ``MAX_PER_CONNECTION`` messages (servers cap messages per session) or ``IDLE_SECONDS``
without use (servers drop idle sessions, RFC 5321 allows after five minutes), and reopened once when the
server closed it between two sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import structlog

from hub import AuthError, CheckResult, ConfigError, HubError, TransientError
from hub_email.config import EmailSettings
from hub_email.failures import classify
from hub_email.ratelimit import RateLimiter

log = structlog.get_logger("hub_email")

MAX_PER_CONNECTION = 100
IDLE_SECONDS = 60.0
#: how long a polite QUIT may take before the connection is simply closed
QUIT_TIMEOUT = 5.0


def _lost(exc: BaseException) -> bool:
    """The server closed the session (idle timeout, restart): a fresh connection will likely work."""
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return True
    return isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421


def not_sent(error: HubError) -> HubError:
    """``error`` as a failure before the server took the message (``TransientError(sent=False)``).

    The hub then knows that a refused connection or a deferral used no attempt: nothing was delivered.
    """
    if isinstance(error, TransientError) and error.sent:
        return TransientError(str(error), error.retry_after, sent=False)
    return error


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    """End a session politely if it is still up; never fails."""
    try:
        if smtp.is_connected:
            await smtp.quit(timeout=QUIT_TIMEOUT)
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


@dataclass(eq=False)
class _Session:
    """One open SMTP session and what decides whether it may carry the next message."""

    smtp: aiosmtplib.SMTP
    sent: int = 0
    last_used: float = 0.0


class SmtpClient:
    """Sends ready-made messages to one SMTP server and turns its failures into hub errors."""

    def __init__(self, settings: EmailSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.server = f"{settings.host}:{settings.effective_port}"
        self._clock = clock
        self._limiter = RateLimiter(settings.max_per_second, clock)
        #: one per send in progress, at most ``max_connections``: each send holds a session of its own
        self._slots = asyncio.Semaphore(settings.max_connections)
        #: open sessions no send holds now, the most recently used last (taken first: few stay warm)
        self._idle: list[_Session] = []
        #: every open session, idle or sending
        self._sessions: set[_Session] = set()
        self._available = True
        #: counters for diagnostics()
        self.connections_opened = 0
        self.messages_sent = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return any(session.smtp.is_connected for session in self._sessions)

    def _new_smtp(self, *, login: bool) -> aiosmtplib.SMTP:
        s = self.settings
        password = s.password.get_secret_value() if login and s.password is not None else None
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.effective_port,
            username=s.username if login else None,
            password=password,
            local_hostname=s.local_hostname,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            # True insists on STARTTLS (never falls back to plain text); False never upgrades
            start_tls=s.security == "starttls",
            validate_certs=s.verify_tls,
            cert_bundle=str(s.ca_bundle) if s.ca_bundle is not None else None,
        )

    def _redact(self, text: str) -> str:
        password = self.settings.password.get_secret_value() if self.settings.password else ""
        return text.replace(password, "**********") if password else text

    def _classify(self, exc: BaseException, recipient: str | None = None) -> HubError | None:
        """The hub error for ``exc``; None when it is not an SMTP or network failure."""
        error = classify(exc, server=self.server, recipient=recipient, sender=self.settings.from_address)
        if error is not None:
            text = self._redact(str(error))
            if text != str(error):  # a server that echoed the password: the same error, without it
                error.args = (text,)
        return error

    def _failure(self, exc: BaseException, recipient: str | None = None) -> HubError | None:
        """``_classify``, noting the failure and logging the server's unavailability once."""
        error = self._classify(exc, recipient)
        if error is None:
            return None
        self.last_error = str(error)
        if isinstance(error, TransientError | AuthError | ConfigError) and self._available:
            self._available = False
            log.warning("email.unavailable", server=self.server, error=str(error))
        return error

    def _succeeded(self) -> None:
        self.last_error = None
        if not self._available:
            self._available = True
            log.info("email.recovered", server=self.server)

    async def _end(self, session: _Session) -> None:
        """End a session politely (a QUIT) and forget it."""
        self._sessions.discard(session)
        await _quit(session.smtp)

    async def _session(self) -> tuple[_Session, bool]:
        """An idle session that may carry one more message (and True), or a new one (and False)."""
        while self._idle:
            session = self._idle.pop()
            if (
                session.smtp.is_connected
                and session.sent < MAX_PER_CONNECTION
                and self._clock() - session.last_used < IDLE_SECONDS
            ):
                return session, True
            await self._end(session)
        smtp = self._new_smtp(login=True)
        try:
            await smtp.connect()
        except Exception as exc:
            error = self._failure(exc)
            if error is None:
                raise
            raise not_sent(error) from exc  # no session, so no message went anywhere
        session = _Session(smtp)
        self._sessions.add(session)
        self.connections_opened += 1
        log.debug("email.connected", server=self.server, open=len(self._sessions))
        return session, False

    async def send(self, message: EmailMessage, recipient: str) -> str:
        """Hand ``message`` to the server for ``recipient``; returns the server's reply (often a queue id).

        Raises ``SkippableError`` when the server refuses the address for good, ``TransientError`` when it
        is unreachable or defers, ``AuthError`` / ``ConfigError`` when the settings are wrong.
        """
        await self._limiter.wait()
        async with self._slots:
            for attempt in (1, 2):
                session, reused = await self._session()
                try:
                    _, reply = await session.smtp.send_message(
                        message, sender=self.settings.from_address, recipients=[recipient]
                    )
                except asyncio.CancelledError:
                    # mid-transaction: the session cannot be trusted any more
                    self._sessions.discard(session)
                    session.smtp.close()
                    raise
                except Exception as exc:
                    if session.smtp.is_connected and isinstance(
                        exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused
                    ):
                        self._idle.append(session)  # the server said no to this message; the session is fine
                    else:
                        # the session is gone or in an unknown state: the next send starts afresh
                        await self._end(session)
                    if reused and attempt == 1 and _lost(exc):
                        # A session that sat idle was closed by the server. (Were it lost after the server
                        # took the message but before it said so, the retry duplicates it: the hub's own
                        # retry after a TransientError would do the same, and a lost invitation is worse.)
                        log.debug("email.reconnecting", server=self.server)
                        continue
                    error = self._failure(exc, recipient)
                    if error is None:
                        raise
                    if isinstance(exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused):
                        # the server answered "no" (a 4xx deferral included): it did not take the message.
                        # A session lost mid-send may have delivered it, and stays an attempt.
                        error = not_sent(error)
                    raise error from exc
                session.sent += 1
                session.last_used = self._clock()
                self._idle.append(session)
                self.messages_sent += 1
                self._succeeded()
                return reply
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def check(self) -> list[CheckResult]:
        """Connect, log in and offer the sender address on a fresh connection; one line per step.

        Never raises for a failure of the server or the settings: ``cxhub check`` shows every line.
        """
        s = self.settings
        smtp = self._new_smtp(login=False)
        step = f"connect to {self.server} ({s.security})"
        try:
            await smtp.connect()
        except Exception as exc:
            return [CheckResult(name=step, ok=False, detail=self._explain(exc))]
        results = [CheckResult(name=step, ok=True, detail=_encryption(smtp))]
        try:
            if s.username is not None and s.password is not None:
                step = f"log in as {s.username}"
                await smtp.login(s.username, s.password.get_secret_value())
                results.append(CheckResult(name=step, ok=True))
            step = f"sender {s.from_address} accepted"
            await smtp.mail(s.from_address)
            await smtp.rset()
            results.append(CheckResult(name=step, ok=True))
        except Exception as exc:
            results.append(CheckResult(name=step, ok=False, detail=self._explain(exc)))
        finally:
            await _quit(smtp)
        return results

    def _explain(self, exc: Exception) -> str:
        error = self._classify(exc)
        return str(error) if error is not None else self._redact(f"{type(exc).__name__}: {exc}")

    def state(self) -> dict[str, Any]:
        """Counters and connection state for diagnostics()."""
        return {
            "connected": self.connected,
            "connections_opened": self.connections_opened,
            "messages_sent": self.messages_sent,
            "last_error": self.last_error,
        }

    async def aclose(self) -> None:
        """Wait for the sends in progress, then end every session."""
        slots = self.settings.max_connections
        for _ in range(slots):
            await self._slots.acquire()
        try:
            while self._idle:
                await self._end(self._idle.pop())
        finally:
            for _ in range(slots):
                self._slots.release()


def _encryption(smtp: aiosmtplib.SMTP) -> str:
    ssl_object = smtp.get_transport_info("ssl_object")
    if ssl_object is None:
        return "not encrypted"
    return f"encrypted ({ssl_object.version()})"
