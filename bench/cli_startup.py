"""How fast the ``cxhub`` command starts: the time an admin waits before a command does anything.

Each command runs as a fresh process (as an admin or a cron job runs it), several times; the median wall
time is printed beside the anchor measured in the same run: a bare ``python -c pass`` of the same
interpreter. Then ``python -X importtime`` shows which modules the CLI imports at start and what each costs,
so a regression names its cause.

    .venv-boot/bin/uv run --all-packages python bench/cli_startup.py            # 7 runs each
    .venv-boot/bin/uv run --all-packages python bench/cli_startup.py --runs 15 --top 25

Measure in a virtual environment whose packages carry their compiled bytecode, as `pip install` leaves them
(`make` syncs the development venv with `--compile-bytecode` for the same reason): without it, and with
PYTHONDONTWRITEBYTECODE set, every start compiles every imported module from source, which costs more than
the command itself. The script says so when it finds no bytecode.

Targets (issue "Install it for real"): ``cxhub --help`` under 0.3 s, ``cxhub status`` under 1 s on the
2-core reference machine. Timings are printed, never asserted in a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CONFIG = textwrap.dedent(
    """
    [hub]
    public_url = "http://127.0.0.1:8000"
    database_url = "sqlite+aiosqlite:///{db}"
    plugins = ["superoffice"]

    [connectors.crm]
    plugin = "superoffice"
    base_url = "http://127.0.0.1:9/Cust12345"
    poll_interval_seconds = 0
    auth = {{ type = "basic", username = "bench", password = "env:BENCH_SO_PASSWORD" }}
    """
)


def timed(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float, int]:
    """Median and fastest wall time of ``argv`` over ``runs`` fresh processes, and its last exit code."""
    times = []
    code = 0
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
        code = done.returncode
    return statistics.median(times), min(times), code


def import_profile(module: str, top: int, env: dict[str, str]) -> list[tuple[int, str]]:
    """The ``top`` slowest imports (cumulative microseconds) of importing ``module`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        # "import time:   self [us] | cumulative | imported package"
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.split(":", 1)[1].split("|")
        rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=15, help="how many imports to list")
    args = parser.parse_args()
    cxhub = shutil.which("cxhub") or str(Path(sys.executable).with_name("cxhub"))
    import sqlalchemy

    if not list((Path(sqlalchemy.__file__).parent / "__pycache__").glob("*.pyc")):
        print("warning: the installed packages have no compiled bytecode; these times include compiling them")
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "cxhub.toml"
        config.write_text(CONFIG.format(db=Path(folder) / "hub.db"), encoding="utf-8")
        env = {
            **os.environ,
            "BENCH_SO_PASSWORD": "password-0123456789",
            "NO_COLOR": "1",
        }
        # the database exists before the measured runs, as it does on a running hub
        subprocess.run([cxhub, "db", "upgrade", "-c", str(config)], env=env, check=True, capture_output=True)
        commands = {
            "python -c pass (anchor)": [sys.executable, "-c", "pass"],
            "cxhub --help": [cxhub, "--help"],
            "cxhub status": [cxhub, "status", "-c", str(config)],
            "cxhub plugins": [cxhub, "plugins", "-c", str(config)],
        }
        print(f"{'command':28} {'median s':>9} {'fastest s':>10} {'x anchor':>9}  exit")
        anchor = None
        for label, argv in commands.items():
            median, fastest, code = timed(argv, args.runs, env)
            anchor = anchor or median
            print(f"{label:28} {median:9.3f} {fastest:10.3f} {median / anchor:9.1f}  {code}")
        print(f"\nslowest imports of `import hub.cli` (cumulative, top {args.top}):")
        for micros, name in import_profile("hub.cli", args.top, env):
            print(f"  {micros / 1000:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
