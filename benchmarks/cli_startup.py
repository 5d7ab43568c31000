"""Command-line start-up: `lengthwise --help` and `lengthwise serve --help`, each in a fresh interpreter.

Prints the median and range of wall times over several runs (target: under 1 s each), and
the median CPU time (user + system) of the process, beside two floors for context: a bare
interpreter and one that only imports typer. On a machine shared with other work the wall
time also holds the time spent waiting for a core; the CPU time is the steadier figure, and
what a quiet machine's wall time comes close to. Each run is a new process, so nothing is
cached in memory; the OS file cache is warm after the first run, as a user typing commands has it.

Run: `.venv/bin/python benchmarks/cli_startup.py [--runs 7]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lengthwise

#: The package's own tree first, so a checkout is timed rather than whatever is installed.
SRC = str(Path(lengthwise.__file__).resolve().parents[1])
CLI = "from lengthwise.cli import app; app(prog_name='lengthwise')"
CASES = (
    ("python (no imports)", ["-c", "pass"]),
    ("import typer", ["-c", "import typer"]),
    ("lengthwise --help", ["-c", CLI, "--help"]),
    ("lengthwise serve --help", ["-c", CLI, "serve", "--help"]),
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh interpreter running `args`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    started, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, _children_cpu() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per command (after one warm-up)")
    args = ap.parse_args()
    for label, argv in CASES:
        time_once(argv)  # warm the file cache
        walls, cpus = zip(*(time_once(argv) for _ in range(args.runs)), strict=True)
        print(
            f"{label:26s} wall median {statistics.median(walls):.3f} s (min {min(walls):.3f}, max {max(walls):.3f}), "
            f"CPU median {statistics.median(cpus):.3f} s, {args.runs} runs"
        )


if __name__ == "__main__":
    main()
