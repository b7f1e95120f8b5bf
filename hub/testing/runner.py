"""How the shared suites run their async tests without depending on the project's asyncio plugin.

A partner's project may run pytest-asyncio in strict mode (its default), in auto mode, or anyio's plugin,
or neither. The suites must not care: every ``async def test_*`` of a suite class (the suite's own and
those a plugin adds in its subclass) is turned into a plain function that runs the test in a fresh event
loop of its own. pytest's asyncio plugins leave plain functions alone, so no mode can change the outcome.

A test that asks for a ``hub`` gets one built inside that loop (from the ``harness`` and ``tmp_path``
fixtures) and closed after it; a test that needs a capability the harness does not declare is skipped as
"not applicable", with the reason, and the ``cxhub`` pytest plugin lists those at the end of the run.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hub.testing.harness import Capabilities, capabilities_of

#: the prefix of a suite's skip reason when a test does not apply to the harness's capabilities
NOT_APPLICABLE = "not applicable: "

_ASYNC_MARKS = {"asyncio", "anyio"}

F = TypeVar("F", bound=Callable[..., Any])


def needs(capability: str, reason: str) -> Callable[[F], F]:
    """Run the test only when the harness declares ``capability`` (a ``Capabilities`` field); else say why."""
    if capability not in Capabilities.__dataclass_fields__:
        raise ValueError(f"unknown capability {capability!r}")

    def mark(test: F) -> F:
        required: dict[str, str] = dict(getattr(test, "_cxhub_needs", {}))
        required[capability] = reason
        test._cxhub_needs = required  # type: ignore[attr-defined]
        return test

    return mark


def not_applicable(test: Callable[..., Any], harness: object) -> str | None:
    """Why ``test`` does not apply to ``harness`` (None when it does)."""
    declared = capabilities_of(harness)
    for capability, reason in getattr(test, "_cxhub_needs", {}).items():
        if not getattr(declared, capability):
            return f"{NOT_APPLICABLE}{reason} (the harness declares {capability}=False)"
    return None


class SuiteBase:
    """Base of the shared suites: makes each ``async def test_*`` of every subclass a self-contained test."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("test") and inspect.iscoroutinefunction(value):
                setattr(cls, name, _self_contained(value))

    def suite_hub(self, harness: Any, workdir: Path) -> AbstractAsyncContextManager[Any]:
        """The hub a test that asks for ``hub`` runs against (each suite builds its own)."""
        raise NotImplementedError


def _self_contained(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """``test`` as a plain function: pytest sees the same fixtures, minus ``hub``, plus what builds it."""
    signature = inspect.signature(test)
    names = [n for n in signature.parameters if n != "self"]
    wants_hub = "hub" in names
    wanted = [n for n in names if n != "hub"]
    for extra in ("harness", "tmp_path"):
        if extra not in wanted:
            wanted.append(extra)

    @functools.wraps(test)
    def run(self: SuiteBase, **fixtures: Any) -> None:
        reason = not_applicable(test, fixtures["harness"])
        if reason is not None:
            pytest.skip(reason)
        arguments = {n: fixtures[n] for n in names if n != "hub"}

        async def body() -> None:
            if not wants_hub:
                await test(self, **arguments)
                return
            async with self.suite_hub(fixtures["harness"], fixtures["tmp_path"]) as hub:
                await test(self, hub=hub, **arguments)

        asyncio.run(body())

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in wanted]
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    marks = [m for m in getattr(test, "pytestmark", []) if m.name not in _ASYNC_MARKS]
    run.pytestmark = marks  # type: ignore[attr-defined]
    del run.__wrapped__  # pytest must see the plain function, not unwrap it back to the coroutine
    return run
