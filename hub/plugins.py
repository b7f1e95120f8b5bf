"""The plugin manager: built-ins and partner packages load the same way, through the ``cxhub`` entry points.

The config decides which installed plugins are enabled (``hub.plugins``; unset = all) and may add local plugin
modules by import path (``hub.plugin_modules``). A hook implementation that matches no hookspec stops start-up
naming the plugin, so a typo in a hook name is found at load time, not when the hook silently never fires.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy
import structlog
from prometheus_client import Counter

from hub import hookspecs
from hub.contracts import ChannelType, ConnectorType, EmulatorType
from hub.errors import ConfigError

log = structlog.get_logger("hub.plugins")

BUILTIN_DISTRIBUTIONS = {
    "cxhub-salesforce",
    "cxhub-dynamics",
    "cxhub-superoffice",
    "cxhub-email",
    "cxhub-sms",
    "cxhub-chatbot",
}

HOOK_ERRORS = Counter("cxhub_hook_errors_total", "Hook implementations that raised", ["plugin", "hook"])


@dataclass
class PluginInfo:
    name: str
    version: str
    builtin: bool
    source: str  # "entry point <dist>" or "module <path>"
    hooks: list[str] = field(default_factory=list)


class PluginManager:
    """Loads plugins, collects the connector and channel types they register, and calls event hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("cxhub")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.connector_types: dict[str, ConnectorType[Any]] = {}
        self.channel_types: dict[str, ChannelType[Any]] = {}
        self.emulator_types: dict[tuple[str, str], EmulatorType] = {}

    # --- loading ----------------------------------------------------------------------------------------------

    def load(self, enabled: list[str] | None = None, modules: list[str] | None = None) -> None:
        """Register installed entry points (those in ``enabled``, or all) and the given modules."""
        installed = {ep.name: ep for ep in entry_points(group="cxhub")}
        if enabled is not None:
            unknown = [name for name in enabled if name not in installed]
            if unknown:
                raise ConfigError(
                    "unknown plugins",
                    [
                        f'hub.plugins: no installed plugin named "{name}" '
                        f"(installed: {', '.join(sorted(installed)) or 'none'}); pip install it or remove it"
                        for name in unknown
                    ],
                )
        for name, ep in sorted(installed.items()):
            if enabled is not None and name not in enabled:
                continue
            module = ep.load()
            dist = ep.dist
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            self._register(
                module,
                name,
                version=dist.version if dist is not None else "?",
                builtin=dist_name in BUILTIN_DISTRIBUTIONS,
                source=f"entry point of {dist_name}",
            )
        for path in modules or []:
            try:
                module = importlib.import_module(path)
            except ImportError as exc:
                raise ConfigError(f'hub.plugin_modules: cannot import "{path}": {exc}') from None
            self._register(
                module, path, version=getattr(module, "__version__", "local"), builtin=False, source="module"
            )
        self._collect_types()

    def register_object(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (used by tests and embedding applications)."""
        self._register(plugin, name, version="local", builtin=False, source="object")
        self._collect_types()

    def _register(self, plugin: object, name: str, *, version: str, builtin: bool, source: str) -> None:
        if self.pm.is_registered(plugin) or self.pm.has_plugin(name):
            return
        self.pm.register(plugin, name=name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            raise ConfigError(
                f'plugin "{name}" ({source}) implements an unknown hook: {exc}. '
                "Check the hook name against docs/hooks.md, or upgrade cxhub."
            ) from None
        hooks = sorted(
            caller.name for caller in self.pm.get_hookcallers(plugin) or [] if not caller.name.startswith("_")
        )
        self.infos[name] = PluginInfo(name, version, builtin, source, hooks)

    def _collect_types(self) -> None:
        connectors: dict[str, ConnectorType[Any]] = {}
        channels: dict[str, ChannelType[Any]] = {}
        problems: list[str] = []

        def collector(kind: str, into: dict[str, Any]) -> Any:
            def register(item: Any) -> None:
                if item.name in into and into[item.name] is not item:
                    problems.append(f'two plugins register a {kind} named "{item.name}"')
                into[item.name] = item

            return register

        self.pm.hook.hub_register_connectors(register=collector("connector", connectors))
        self.pm.hook.hub_register_channels(register=collector("channel", channels))
        emulators: dict[tuple[str, str], EmulatorType] = {}

        def register_emulator(item: EmulatorType) -> None:
            emulators[(item.kind, item.plugin)] = item

        self.pm.hook.hub_register_emulators(register=register_emulator)
        if problems:
            raise ConfigError("plugin conflict", problems)
        self.connector_types, self.channel_types = connectors, channels
        self.emulator_types = emulators

    # --- calling ----------------------------------------------------------------------------------------------

    async def call_lifecycle(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook in every plugin; startup errors propagate, shutdown errors are logged."""
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
                if inspect.isawaitable(result):
                    await result
            except Exception:
                if hook_name == "hub_startup":
                    raise
                log.exception("hook.failed", plugin=impl.plugin_name, hook=hook_name)

    async def notify(self, hook_name: str, **kwargs: Any) -> int:
        """Call an event hook in every plugin, awaiting async ones together; returns how many failed.

        One plugin's exception is logged and counted and never stops the others: the event is already
        stored, so nothing is lost by a misbehaving plugin.
        """
        pending: list[tuple[str, Any]] = []
        failures = 0
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                failures += 1
                self._hook_failed(impl.plugin_name, hook_name)
                continue
            if inspect.isawaitable(result):
                pending.append((impl.plugin_name, result))
        if pending:
            outcomes = await asyncio.gather(*(aw for _, aw in pending), return_exceptions=True)
            for (plugin_name, _), outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failures += 1
                    self._hook_failed(plugin_name, hook_name, outcome)
        return failures

    @staticmethod
    def _hook_failed(plugin: str, hook: str, exc: BaseException | None = None) -> None:
        HOOK_ERRORS.labels(plugin=plugin, hook=hook).inc()
        if exc is None:
            log.exception("hook.failed", plugin=plugin, hook=hook)
        else:
            log.error("hook.failed", plugin=plugin, hook=hook, error=repr(exc), exc_info=exc)

    def module_of(self, name: str) -> ModuleType | None:
        plugin = self.pm.get_plugin(name)
        return plugin if isinstance(plugin, ModuleType) else None
