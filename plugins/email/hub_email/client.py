"""The SMTP side of the email channel: one connection, reused across sends, paced, reopened when lost.

Opening an SMTP connection costs a TCP and TLS handshake and a login, often more than the send itself, and
providers count logins, so a burst of invitations shares one connection. It is replaced after
``MAX_PER_CONNECTION`` messages (servers cap messages per session) or ``IDLE_SECONDS`` without use (servers
drop idle sessions, RFC 5321 allows after five minutes), and reopened once when the server closed it
between two sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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


class SmtpClient:
    """Sends ready-made messages to one SMTP server and turns its failures into hub errors."""

    def __init__(self, settings: EmailSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.server = f"{settings.host}:{settings.effective_port}"
        self._clock = clock
        self._limiter = RateLimiter(settings.max_per_second, clock)
        self._lock = asyncio.Lock()
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._last_used = 0.0
        self._available = True
        #: counters for diagnostics()
        self.connections_opened = 0
        self.messages_sent = 0
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

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

    def _discard(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            await _quit(smtp)

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool]:
        """The open connection (and True), or a new one (and False) when there is none or it is spent."""
        smtp = self._smtp
        if (
            smtp is not None
            and smtp.is_connected
            and self._sent_on_connection < MAX_PER_CONNECTION
            and self._clock() - self._last_used < IDLE_SECONDS
        ):
            return smtp, True
        await self._drop()
        smtp = self._new_smtp(login=True)
        try:
            await smtp.connect()
        except Exception as exc:
            error = self._failure(exc)
            if error is None:
                raise
            raise not_sent(error) from exc  # no session, so no message went anywhere
        self._smtp = smtp
        self._sent_on_connection = 0
        self.connections_opened += 1
        log.debug("email.connected", server=self.server)
        return smtp, False

    async def send(self, message: EmailMessage, recipient: str) -> str:
        """Hand ``message`` to the server for ``recipient``; returns the server's reply (often a queue id).

        Raises ``SkippableError`` when the server refuses the address for good, ``TransientError`` when it
        is unreachable or defers, ``AuthError`` / ``ConfigError`` when the settings are wrong.
        """
        await self._limiter.wait()
        async with self._lock:
            for attempt in (1, 2):
                smtp, reused = await self._connection()
                try:
                    _, reply = await smtp.send_message(
                        message, sender=self.settings.from_address, recipients=[recipient]
                    )
                except asyncio.CancelledError:
                    self._discard()  # mid-transaction: the session cannot be trusted any more
                    raise
                except Exception as exc:
                    if not smtp.is_connected or not isinstance(
                        exc, aiosmtplib.SMTPResponseException | aiosmtplib.SMTPRecipientsRefused
                    ):
                        # the session is gone or in an unknown state: the next send starts afresh
                        await self._drop()
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
                self._sent_on_connection += 1
                self._last_used = self._clock()
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
        """Wait for a send in progress, then end the session."""
        async with self._lock:
            await self._drop()


def _encryption(smtp: aiosmtplib.SMTP) -> str:
    ssl_object = smtp.get_transport_info("ssl_object")
    if ssl_object is None:
        return "not encrypted"
    return f"encrypted ({ssl_object.version()})"
