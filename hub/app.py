"""The running hub: config, plugins, store, connector and channel instances, engine and sync, wired once.

``Hub.open`` is the one way to get a hub, for the web process, the worker, the CLI and tests alike.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from hub.config import HubConfig, load_config, problems_from
from hub.contracts import Channel, Connector, PluginContext
from hub.engine import Engine
from hub.errors import ConfigError
from hub.http import make_client
from hub.logging import register_secrets
from hub.plugins import PluginManager
from hub.store import Store, utcnow
from hub.store.usage import StoreUsageLedger
from hub.sync import SyncService

log = structlog.get_logger("hub")


def validate_instances(config: HubConfig, plugins: PluginManager) -> dict[str, BaseModel]:
    """Validate every connector's and channel's own settings with its plugin's model.

    Returns the validated settings by ``"connectors.<name>"`` / ``"channels.<name>"``; raises ConfigError with
    one line per problem, across all instances.
    """
    problems: list[str] = []
    validated: dict[str, BaseModel] = {}
    sections: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("connectors", dict(config.connectors), dict(plugins.connector_types)),
        ("channels", dict(config.channels), dict(plugins.channel_types)),
    ]
    for section, instances, types in sections:
        for name, instance in instances.items():
            if not instance.enabled:
                continue
            kind = types.get(instance.plugin)
            if kind is None:
                problems.append(
                    f'{config.source}: {section}.{name}.plugin: no {section[:-1]} type "{instance.plugin}" '
                    f"(installed: {', '.join(sorted(types)) or 'none'}); install its plugin or fix the name"
                )
                continue
            try:
                validated[f"{section}.{name}"] = kind.settings.model_validate(instance.plugin_settings())
            except ValidationError as exc:
                problems.extend(problems_from(exc, config.source, (section, name), model=kind.settings))
    if problems:
        raise ConfigError(f"{config.source}: invalid config", problems)
    return validated


class Hub:
    """One hub instance. Use ``await Hub.open(config)`` and ``await hub.close()``."""

    def __init__(self, config: HubConfig, plugins: PluginManager, store: Store) -> None:
        self.config = config
        self.plugins = plugins
        self.store = store
        self.connectors: dict[str, Connector] = {}
        self.channels: dict[str, Channel] = {}
        self.settings: dict[str, BaseModel] = {}
        self.engine = Engine(self)
        self.sync = SyncService(self)
        self.secret_key = ""
        self.started_at = utcnow()
        self._wakers: dict[str, list[Callable[[datetime | None], None]]] = {}
        self._running_jobs: set[str] = set()
        self.now: Callable[[], datetime] = utcnow

    @classmethod
    async def open(
        cls,
        config: HubConfig | str | Path,
        *,
        migrate: bool = True,
        plugin_objects: list[tuple[str, object]] | None = None,
    ) -> Hub:
        """Load plugins, validate every setting, open the store, create instances, run startup hooks."""
        if not isinstance(config, HubConfig):
            config = load_config(config)
        plugins = PluginManager()
        plugins.load(config.hub.plugins, config.hub.plugin_modules)
        for name, obj in plugin_objects or []:
            plugins.register_object(obj, name)
        settings = validate_instances(config, plugins)
        register_secrets(config, settings.values())
        store = Store(config.database_url())
        hub = cls(config, plugins, store)
        hub.settings = settings
        if migrate:
            await store.upgrade()
        configured = config.hub.secret_key
        hub.secret_key = configured.get_secret_value() if configured else await store.generated_secret("csrf")
        for key, value in settings.items():
            section, name = key.split(".", 1)
            ctx = PluginContext(
                instance=name,
                public_url=config.hub.public_url,
                http_client=make_client,
                usage=StoreUsageLedger(store, name) if section == "connectors" else None,
            )
            if section == "connectors":
                plugin = plugins.connector_types[config.connectors[name].plugin]
                hub.connectors[name] = plugin.factory(value, ctx)
            else:
                channel_type = plugins.channel_types[config.channels[name].plugin]
                hub.channels[name] = channel_type.factory(value, ctx)
        await plugins.call_lifecycle("hub_startup", hub=hub)
        return hub

    async def close(self) -> None:
        await self.plugins.call_lifecycle("hub_shutdown", hub=self)
        instances: list[Connector | Channel] = [*self.connectors.values(), *self.channels.values()]
        for instance in instances:
            try:
                await instance.aclose()
            except Exception:
                log.exception("close.failed")
        await self.store.dispose()

    # --- wake-ups: let a job run now instead of at its next tick --------------------------------------------

    def on_wake(self, what: str, callback: Callable[[datetime | None], None]) -> None:
        """``callback(at)`` on every ``wake(what, at)``."""
        self._wakers.setdefault(what, []).append(callback)

    def wake(self, what: str, at: datetime | None = None) -> None:
        """Ask the scheduler (if one runs in this process) to run the jobs of ``what`` soon, or by ``at``, the
        moment the work that asks becomes ready: a score alone waits for its follow-up comment, and a pass
        of the prompt sync started at once would find nothing to write (under a steady stream of answers,
        sixteen such passes a second held the event loop 1.4 ms each, in the answers' way)."""
        for callback in self._wakers.get(what, []):
            callback(at)

    async def singleton(self, name: str, job: Callable[[], Any]) -> Any:
        """Run ``job`` only if no other process, and no other task of this one, runs the job of that name.

        The database lock lives ``sync.lease_seconds`` and is renewed while the job runs, so a process killed
        in the middle of a job blocks the others only until its lock runs out. The lock belongs to the
        process (taking it again renews it), so a second start of the same job in this process (the cron
        sync while the prompt sync runs) is turned away here: its end would release the lock under the first.
        """
        if name in self._running_jobs:
            return None
        self._running_jobs.add(name)
        try:
            return await self._locked(name, job)
        finally:
            self._running_jobs.discard(name)

    async def _locked(self, name: str, job: Callable[[], Any]) -> Any:
        owner = self.sync.owner
        ttl = self.config.sync.lease_seconds
        if not await self.store.acquire_lock(name, owner, ttl):
            return None

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    await self.store.acquire_lock(name, owner, ttl)
                except (
                    Exception
                ):  # a database hiccup: the next renewal, a third of a lease later, tries again
                    log.warning("lock.renewal_failed", job=name, exc_info=True)

        renewal = asyncio.create_task(keep_alive())
        try:
            result = job()
            if asyncio.iscoroutine(result):
                result = await result
            return result
        finally:
            renewal.cancel()
            await self.store.release_lock(name, owner)


#: new container objects (net of those freed) between two collections of the youngest generation, for a
#: process that serves (Python's default is 700)
YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_start_up_objects() -> None:
    """Take every object alive after start-up (modules, config, plugins, compiled queries and templates) out
    of the garbage collector's sight, for a process that runs until it is stopped (``serve``, ``worker``),
    and collect its youngest objects less often.

    They live as long as the process, yet each full collection walks all of them again: every few seconds
    under load, about 100 ms with the event loop stopped, so every request in flight waits as long, which
    made up most of the slowest hundredth of the survey pages' and webhooks' latency. What is allocated
    afterwards is collected as before, with one change: a young collection every 700 new objects (Python's
    default) found every request in flight alive and moved its objects to the older generations, whose
    growth then set off a full collection (5 to 10 ms, the loop stopped) twice a second under a steady stream
    of answers. A request's objects are freed by their reference counts when it ends; every 10,000 the
    young collections find only what is really kept or in a cycle, and full ones become rare.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
