"""Webhooks as SuperOffice runs them: a signed test POST on registration, then fire-and-forget delivery.

Each event is POSTed to every active webhook that subscribed to it, signed with
``base64(HMAC-SHA256(secret, body))``. A delivery is tried three times (at once, then after each of
``retry_delays``) and then dropped; after ``failures_before_stop`` failed attempts in a row the webhook
goes to ``TooManyErrors`` and receives nothing more. Delivery runs on worker threads, so it neither blocks
the API nor depends on an event loop; ``wait()`` lets a test wait for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from hub_superoffice.emulation.store import ApiError

EVENTS = frozenset(
    {
        "contact.created",
        "contact.changed",
        "contact.deleted",
        "person.created",
        "person.changed",
        "person.deleted",
        "person.consented",
        "person.unconsented",
        "sale.created",
        "sale.changed",
        "sale.deleted",
        "sale.sold",
        "sale.lost",
        "ticket.created",
        "ticket.changed",
        "appointment.created",
        "appointment.changed",
        "project.created",
        "project.changed",
    }
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
USER_AGENT = "NetServer-Webhook/emulator"


@dataclass
class Webhook:
    webhook_id: int
    name: str
    events: list[str]
    target_url: str
    secret: str
    state: str = "Active"
    registered: datetime = field(default_factory=lambda: datetime.now(UTC))
    consecutive_failures: int = 0

    def to_json(self) -> dict[str, Any]:
        """The WebhookEntity (the secret is never shown back)."""
        return {
            "WebhookId": self.webhook_id,
            "Name": self.name,
            "Events": list(self.events),
            "TargetUrl": self.target_url,
            "Secret": "",
            "State": self.state,
            "Type": "webhook",
            "Headers": {},
            "Properties": {},
            "Registered": self.registered.isoformat(),
        }


@dataclass
class Delivery:
    """One event to one webhook: the status of each attempt (or the error), and how it ended."""

    webhook_id: int
    event: str
    primary_key: int
    event_id: str
    body: bytes
    attempts: list[int | str] = field(default_factory=list)
    delivered: bool = False


def sign(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")


class Hooks:
    """Registered webhooks and their deliveries."""

    def __init__(
        self,
        context_identifier: str,
        retry_delays: tuple[float, float] = (1.0, 4.0),
        failures_before_stop: int = 9,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.context_identifier = context_identifier
        self.retry_delays = retry_delays
        self.failures_before_stop = failures_before_stop
        self.timeout_seconds = timeout_seconds
        self.webhooks: dict[int, Webhook] = {}
        self.deliveries: deque[Delivery] = deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._next_id = 0
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="so-webhook")
        self._pending: list[Future[None]] = []

    def register(self, body: Any, test: bool = True) -> Webhook:
        """Validate, send the test POST, and save only if it was answered 200.

        ``test=False`` skips the test POST: for a demo that registers its hub before the hub listens.
        """
        hook = self._validate(body)
        if test:
            payload = self._payload(hook, "test", "test", 0, [])
            status = self._post(hook, payload, "test", {"X-Hook-Test": "true"})
            if status != 200:
                raise ApiError(
                    400, f"Webhook test POST to {hook.target_url} failed: {status}", "WebhookException"
                )
        with self._lock:
            self._next_id += 1
            hook.webhook_id = self._next_id
            self.webhooks[hook.webhook_id] = hook
        return hook

    def _validate(self, body: Any) -> Webhook:
        if not isinstance(body, dict):
            raise ApiError(400, "The body must be a WebhookEntity")
        if str(body.get("Type", "webhook")).lower() != "webhook":
            raise ApiError(400, "Type must be 'webhook'")
        events = body.get("Events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise ApiError(400, "Events must list at least one event")
        unknown = sorted(set(events) - EVENTS)
        if unknown:
            raise ApiError(400, f"Unknown events: {', '.join(unknown)}")
        url = str(body.get("TargetUrl") or "")
        parts = urlsplit(url)
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)
        ):
            raise ApiError(400, "TargetUrl must be an https URL")
        state = str(body.get("State") or "Active")
        if state not in ("Active", "Stopped"):
            raise ApiError(400, "State must be Active or Stopped")
        return Webhook(
            0, str(body.get("Name") or "webhook"), events, url, str(body.get("Secret") or ""), state
        )

    def delete(self, webhook_id: int) -> bool:
        with self._lock:
            return self.webhooks.pop(webhook_id, None) is not None

    def _payload(self, hook: Webhook, event: str, entity: str, primary_key: int, changes: list[str]) -> bytes:
        body = {
            "EventId": str(uuid.uuid4()),
            "Timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "Changes": changes,
            "Event": event,
            "PrimaryKey": primary_key,
            "Entity": entity,
            "ContextIdentifier": self.context_identifier,
            "ChangedByAssociateId": 1,
            "WebhookName": hook.name,
        }
        return json.dumps(body).encode("utf-8")

    def request(
        self, secret: str, event: str, entity: str, primary_key: int, changes: list[str] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body SuperOffice would POST for ``event``, signed with ``secret`` (not sent)."""
        hook = Webhook(0, "cxhub", [event], "https://hub.invalid/", secret)
        body = self._payload(hook, event, entity, primary_key, list(changes or []))
        return self._headers(hook, body, event, {}, 0), body

    def _headers(
        self, hook: Webhook, body: bytes, event: str, extra: dict[str, str], attempt: int
    ) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-SuperOffice-Event": event,
            "X-SuperOffice-EventId": json.loads(body)["EventId"],
            "X-SuperOffice-Retry": str(attempt),
            **extra,
        }
        if hook.secret:
            headers["X-SuperOffice-Signature"] = sign(hook.secret, body)
        return headers

    def _post(
        self, hook: Webhook, body: bytes, event: str, extra: dict[str, str], attempt: int = 0
    ) -> int | str:
        headers = self._headers(hook, body, event, extra, attempt)
        try:
            with httpx.Client(timeout=self.timeout_seconds) as client:
                return client.post(hook.target_url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            return type(exc).__name__

    def fire(self, event: str, entity: str, primary_key: int, changes: list[str] | None = None) -> None:
        """Send ``event`` to every active webhook that subscribed to it (in the background)."""
        with self._lock:
            self._pending = [future for future in self._pending if not future.done()]
            targets = [h for h in self.webhooks.values() if h.state == "Active" and event in h.events]
            for hook in targets:
                body = self._payload(hook, event, entity, primary_key, list(changes or []))
                delivery = Delivery(hook.webhook_id, event, primary_key, json.loads(body)["EventId"], body)
                self.deliveries.append(delivery)
                self._pending.append(self._pool.submit(self._deliver, hook, delivery))

    def _deliver(self, hook: Webhook, delivery: Delivery) -> None:
        for attempt in range(1 + len(self.retry_delays)):
            if attempt:
                time.sleep(self.retry_delays[attempt - 1])
            if hook.state != "Active":
                return
            status = self._post(hook, delivery.body, delivery.event, {}, attempt)
            delivery.attempts.append(status)
            with self._lock:
                if status == 200:
                    hook.consecutive_failures = 0
                    delivery.delivered = True
                    return
                hook.consecutive_failures += 1
                if hook.consecutive_failures >= self.failures_before_stop:
                    hook.state = "TooManyErrors"
                    return

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until every delivery so far has ended; False if some are still running at ``timeout``."""
        with self._lock:
            pending = list(self._pending)
        done, not_done = wait_futures(pending, timeout=timeout)
        with self._lock:
            self._pending = [f for f in self._pending if f not in done]
        return not not_done

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
