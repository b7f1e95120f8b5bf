"""The hot paths of ``hot_paths.py`` driven by wrk, the C load generator the issue's review measured with.

``hot_paths.py`` drives its loads from a Python client in the benchmark's own process. On a 2-core machine
that client takes a share of the CPU, and it takes it from the hub more than from the anchor: the anchor
serves on one thread, while the hub's SQLite writer (and the database's own work) runs beside its event
loop. wrk costs a fraction of that, so its figures are the ones a review with wrk sees. Same servers (the
anchor, the hub as ``cxhub serve`` runs it with its scheduler, the fake CRM), same seeded invitations, same
requests (``hot_paths.Paths``: signed webhooks of new cases, survey pages, answers with their CSRF cookie
and field and one client address per link), each path on the anchor and right after on the hub, ``--rounds``
times, after a one-second warm-up each.

wrk runs with two threads and ``--concurrency`` connections; every request it sends is read from a file
(a Lua script cycles through it, each wrk thread through its own half, so no webhook is sent twice). The
checks here are wrk's: a socket error or a response other than 2xx/3xx is printed and makes the exit status
1. Whether every acknowledged request was stored is checked by ``hot_paths.py``, whose client knows which
request got which answer.

    uv run --frozen --all-packages python bench/wrk_paths.py                       # both databases
    uv run --frozen --all-packages python bench/wrk_paths.py --databases sqlite --paths answer --rounds 5

Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import hot_paths as hp  # bench/ is the script's folder, on the path

from hub.testing.databases import fresh_database

#: the Lua script that sends the requests of a file, one per line (method, path, headers, body, tab-separated;
#: headers as name\x1evalue pairs separated by \x1f), each wrk thread the lines of its own parity
LUA = r"""
local threads = 0
setup = function(thread) thread:set("id", threads); threads = threads + 1 end
local requests = {}
init = function(args)
  local k = 0
  for line in io.lines(args[1]) do
    if k % 2 == id then
      local method, path, fields, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {}
      for pair in fields:gmatch("[^\31]+") do
        local name, value = pair:match("^(.-)\30(.*)$")
        headers[name] = value
      end
      if body == "" then body = nil end
      requests[#requests + 1] = wrk.format(method, path, headers, body)
    end
    k = k + 1
  end
  n = 0
end
request = function()
  n = n % #requests + 1
  return requests[n]
end
"""

#: lines of answers per link in a file: wrk cycles through its file, and an answer repeated with the same score
#: would be the hub's cheap "nothing changed" case
ANSWERS_PER_LINK = 5

PATHS = {"page": "GET /s/<token>", "answer": "POST /s/<token>", "webhook": "POST /hooks/<connector>"}


@dataclass
class Run:
    """One wrk run: requests a second, latency quantiles in ms, what wrk counted as failed."""

    rate: float
    p50: float
    p99: float
    refused: int
    socket_errors: int


@dataclass
class Row:
    database: str
    path: str
    anchors: list[Run] = field(default_factory=list)
    hubs: list[Run] = field(default_factory=list)


def write_requests(requests: list[hp.Outgoing], path: Path) -> None:
    with path.open("w") as out:
        for method, target, headers, body in requests:
            fields = "\x1f".join(f"{name}\x1e{value}" for name, value in headers.items())
            out.write(f"{method}\t{target}\t{fields}\t{(body or b'').decode()}\n")


def _ms(text: str, quantile: str) -> float:
    found = re.search(rf"\s{quantile}%\s+([\d.]+)(us|ms|s)\b", text)
    if found is None:
        return float("nan")
    value, unit = float(found[1]), found[2]
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, script: Path, requests: Path, seconds: float, connections: int) -> Run:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(requests),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    refused = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return Run(
        float(rate[1]) if rate else 0.0,
        _ms(out, "50"),
        _ms(out, "99"),
        int(refused[1]) if refused else 0,
        sum(int(n) for n in errors.groups()) if errors else 0,
    )


def measure(url: str, script: Path, requests: Callable[[], Path], args: argparse.Namespace) -> Run:
    """A one-second warm-up, then the measured run; each sends requests of a file of its own."""
    wrk(url, script, requests(), 1, args.concurrency)
    return wrk(url, script, requests(), args.seconds, args.concurrency)


def run_database(kind: str, args: argparse.Namespace, folder: Path, problems: list[str]) -> list[Row]:
    rows = [Row(kind, PATHS[name]) for name in args.paths]
    script = folder / "requests.lua"
    script.write_text(LUA)
    with (
        fresh_database(kind, folder, prefix="cxhub_bench") as database_url,
        hp.servers(kind, folder, database_url, args.crm_latency) as (crm_url, anchor_url, _),
    ):
        config = folder / "cxhub.toml"
        config.write_text(hp.hub_config(database_url, crm_url))
        tokens, page_tokens = hp.seed(kind, config, database_url, [("S", args.tokens), ("V", args.tokens)])
        hub_paths = hp.Paths("/hooks/crm", tokens, f"W{time.time_ns()}", page_tokens)
        anchor_paths = hp.Paths("/hooks/anchor", [f"anchor-{k}" for k in range(args.tokens)], "anchor")
        makers: dict[str, Callable[[hp.Paths], Callable[[int], hp.Outgoing]]] = {
            "page": lambda paths: paths.page,
            "answer": lambda paths: paths.answer,
            "webhook": lambda paths: paths.webhook,
        }
        blocks = {"anchor": 0, "hub": 0}

        def requests(side: str, name: str) -> Path:
            """A file of requests never sent before: a webhook of a new case each, an answer changing
            its link's score (as ``hot_paths.py``'s client continues its count from run to run)."""
            paths = anchor_paths if side == "anchor" else hub_paths
            count = args.webhooks if name == "webhook" else args.tokens * ANSWERS_PER_LINK
            block = blocks[side]
            blocks[side] += 1
            path = folder / f"{side}-{name}-{block}.txt"
            make = makers[name](paths)
            write_requests([make(block * count + i) for i in range(count)], path)
            return path

        hub_port = hp.free_port()
        with hp.child(hp.serve_command(config, hub_port), hub_port, folder / "hub.log") as hub_url:
            for round_ in range(args.rounds):
                for name, row in zip(args.paths, rows, strict=True):
                    anchor = measure(anchor_url, script, partial(requests, "anchor", name), args)
                    hub = measure(hub_url, script, partial(requests, "hub", name), args)
                    row.anchors.append(anchor)
                    row.hubs.append(hub)
                    print(
                        f"  {kind} {row.path} round {round_ + 1}: anchor {anchor.rate:,.0f}/s p99"
                        f" {anchor.p99:.1f} ms, hub {hub.rate:,.0f}/s p50 {hub.p50:.1f} p99 {hub.p99:.1f} ms"
                        f" ({hp.load_average()})",
                        flush=True,
                    )
                    for side, run in (("anchor", anchor), ("hub", hub)):
                        if run.refused or run.socket_errors:
                            problems.append(
                                f"{kind} {row.path} round {round_ + 1}: {side} refused {run.refused},"
                                f" socket errors {run.socket_errors}"
                            )
                    waited = asyncio.run(hp.settle(database_url, args.settle))
                    if waited >= args.settle:
                        problems.append(f"{kind}: the hub had not settled {args.settle:g} s after {name}")
    return rows


def print_table(rows: list[Row]) -> None:
    print(
        "\n| database | path | anchor req/s | anchor p99 ms | hub req/s | hub p50 / p99 ms"
        " | throughput ratio | p99 ratio | rounds (throughput; p99) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        ratios = [
            h.rate / a.rate if a.rate else float("nan") for a, h in zip(row.anchors, row.hubs, strict=True)
        ]
        tails = [h.p99 / a.p99 if a.p99 else float("nan") for a, h in zip(row.anchors, row.hubs, strict=True)]
        median = sorted(range(len(ratios)), key=lambda i: ratios[i])[(len(ratios) - 1) // 2]
        a, h = row.anchors[median], row.hubs[median]
        rounds = " / ".join(f"{r:.0%}; {t:.1f}x" for r, t in zip(ratios, tails, strict=True))
        print(
            f"| {row.database} | `{row.path}` | {a.rate:,.0f} | {a.p99:.1f} | {h.rate:,.0f} | {h.p50:.1f} / "
            f"{h.p99:.1f} | **{ratios[median]:.1%}** | {tails[median]:.1f}x (median {statistics.median(tails):.1f}x)"
            f" | {rounds} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per path [10]")
    parser.add_argument("--concurrency", type=int, default=32, help="connections [32]")
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated [sqlite,postgresql]"
    )
    parser.add_argument(
        "--paths", default="page,answer,webhook", help="comma-separated [page,answer,webhook]"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the paths, anchor then hub each [3]")
    parser.add_argument(
        "--tokens",
        type=int,
        default=6000,
        help="survey invitations seeded [6000]: enough that no link's address meets the hub's limit of 30 "
        "answers a minute",
    )
    parser.add_argument(
        "--webhooks", type=int, default=60_000, help="webhooks per run, each a new case [60000]"
    )
    parser.add_argument(
        "--settle", type=float, default=600.0, help="seconds to wait for the hub after a path"
    )
    parser.add_argument("--crm-latency", type=float, default=0.1, help="seconds per fake CRM call [0.1]")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    args.paths = [name.strip() for name in args.paths.split(",")]
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        raise SystemExit(f"--paths: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PATHS)}")
    print(
        f"hot paths with wrk: {args.concurrency} connections, {args.seconds:g} s per path ({hp.load_average()})"
    )
    problems: list[str] = []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cxhub-wrk-paths-") as tmp:
        for kind in args.databases.split(","):
            folder = Path(tmp) / kind.strip()
            folder.mkdir()
            rows += run_database(kind.strip(), args, folder, problems)
    print_table(rows)
    for problem in problems:
        print(f"PROBLEM: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
