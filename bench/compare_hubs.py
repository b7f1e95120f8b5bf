"""One hot path on two versions of the hub, measured alternately: is a change faster, and by how much?

``hot_paths.py`` compares the hub with bare endpoints; between two of its runs the machine's speed drifts by
a fifth or more (a shared machine), more than most single changes are worth. Here both versions serve side
by side on one database, and loads of the same path alternate between them (the order flipped every pair),
so each pair of loads meets the same state of the machine. Printed: each load, then per pair the ratio of
the working tree's figures to the base's (CPU milliseconds per request, requests a second), and medians.

The base is a git revision checked out in a temporary worktree; the working tree is this checkout as it is,
uncommitted changes included. Both serve with ``--no-scheduler`` (as the shipped systemd and compose files
run the web process) and one ``cxhub worker`` of the working tree runs the scheduled jobs: the write-backs
that answers cause land in neither measured process. The load, the seeded invitations and the fake CRM are
``hot_paths.py``'s.

    uv run --frozen --all-packages python bench/compare_hubs.py --base HEAD~1 --path answer
    uv run --frozen --all-packages python bench/compare_hubs.py --base main --path page --database sqlite --pairs 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hot_paths as hp  # bench/ is the script's folder, on the path

ROOT = hp.ROOT


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """``revision`` checked out in a temporary git worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="cxhub-base-") as tmp:
        path = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), revision], check=True
        )
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False)


@contextmanager
def hub_of(code: Path, config: Path, log: Path) -> Iterator[str]:
    """``cxhub serve --no-scheduler`` of the hub in ``code`` (its package first on the path)."""
    port = hp.free_port()
    with hp.child(hp.serve_command(config, port, "--no-scheduler"), port, log, root=code) as url:
        yield url


def requests_of(
    path: str, paths: hp.Paths
) -> tuple[Callable[[int], hp.Outgoing], Callable[[int, int], bool]]:
    if path == "answer":
        return paths.answer, paths.answer_ok
    if path == "page":
        return paths.page, hp.page_ok
    return paths.webhook, paths.webhook_ok


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the git revision to compare the working tree with")
    parser.add_argument("--path", choices=("answer", "page", "webhook"), default="answer")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--pairs", type=int, default=6, help="loads on each version [6]")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per load [6]")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests [32]")
    parser.add_argument("--crm-latency", type=float, default=0.1, help="seconds per fake CRM call [0.1]")
    args = parser.parse_args()
    os.environ["BENCH_CRM_LATENCY"] = str(args.crm_latency)
    os.environ.update(hp.ENV)
    loads: dict[str, list[hp.Load]] = {"base": [], "tree": []}
    with tempfile.TemporaryDirectory(prefix="cxhub-compare-") as tmp, worktree(args.base) as base:
        folder = Path(tmp)
        with hp.fresh_database(args.database, folder, prefix="cxhub_bench") as database_url:
            crm_port = hp.free_port()
            crm = [sys.executable, str(Path(hp.__file__).resolve()), "--serve", "crm", str(crm_port), ""]
            with hp.child(crm, crm_port, folder / "crm.log") as crm_url:
                config = folder / "cxhub.toml"
                config.write_text(hp.hub_config(database_url, crm_url))
                [tokens] = hp.seed(args.database, config, database_url, [("S", 4000)])
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                worker_log = (folder / "worker.log").open("ab")
                worker = subprocess.Popen(
                    [sys.executable, "-m", "hub", "worker", "--config", str(config)],
                    stdout=worker_log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=folder,
                )
                try:
                    with (
                        hub_of(base, config, folder / "base.log") as base_url,
                        hub_of(ROOT, config, folder / "tree.log") as tree_url,
                    ):
                        # each version answers links of its own: an answer's page and amend window stay alike
                        servers = {
                            "base": (base_url, hp.Paths("/hooks/crm", tokens[:2000], f"A{time.time_ns()}")),
                            "tree": (tree_url, hp.Paths("/hooks/crm", tokens[2000:], f"B{time.time_ns()}")),
                        }
                        run_pairs(args, servers, loads, database_url)
                finally:
                    worker.terminate()
                    worker.wait(30)
                    worker_log.close()
    report(args, loads)


def run_pairs(
    args: Any, servers: dict[str, tuple[str, hp.Paths]], loads: dict[str, list[hp.Load]], database_url: str
) -> None:
    print(f"{args.path} on {args.database}: base {args.base} against the working tree, {args.pairs} pairs")
    for pair in range(args.pairs):
        for name in ("base", "tree") if pair % 2 == 0 else ("tree", "base"):
            url, paths = servers[name]
            make, ok = requests_of(args.path, paths)
            load = asyncio.run(hp.measure(url, make, ok, args))
            loads[name].append(load)
            print(
                f"  pair {pair + 1} {name}: {load.rate:,.0f} req/s, p50 {load.quantile(0.5):.1f} ms,"
                f" p99 {load.quantile(0.99):.1f} ms, {load.cpu_ms:.3f} CPU ms/req, failed {dict(load.failed)}"
                f" ({hp.load_average()})",
                flush=True,
            )
            if args.path == "webhook":  # the events are processed before the next load
                hp.wait_for_queues(database_url, 900)


def report(args: Any, loads: dict[str, list[hp.Load]]) -> None:
    pairs = list(zip(loads["base"], loads["tree"], strict=True))
    cpu = [tree.cpu_ms / base.cpu_ms for base, tree in pairs]
    rate = [tree.rate / base.rate for base, tree in pairs]
    print(f"\nworking tree / base ({args.base}), per pair:")
    print(f"  CPU per request: {' '.join(f'{r:.3f}' for r in cpu)}; median {statistics.median(cpu):.3f}")
    print(f"  requests a second: {' '.join(f'{r:.3f}' for r in rate)}; median {statistics.median(rate):.3f}")
    for name in ("base", "tree"):
        runs = loads[name]
        print(
            f"  {name}: median {statistics.median(r.rate for r in runs):,.0f} req/s,"
            f" {statistics.median(r.cpu_ms for r in runs):.3f} CPU ms/req,"
            f" p99 {statistics.median(r.quantile(0.99) for r in runs):.1f} ms"
        )


if __name__ == "__main__":
    main()
