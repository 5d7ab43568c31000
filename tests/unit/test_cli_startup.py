"""A fast command line: `lengthwise --help` and `serve --help` load no heavy library (timings: benchmarks/cli_startup.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lengthwise

SRC = str(Path(lengthwise.__file__).resolve().parents[1])
#: Libraries that cost tenths of a second to import each; commands load them when they run.
HEAVY = ("numpy", "scipy", "matplotlib", "torch", "transformers", "aiohttp", "httpx", "tiktoken", "onnxruntime",
         "sklearn", "tokenizers", "starlette", "uvicorn", "prometheus_client", "pandas")  # fmt: skip
PROBE = """
import json, sys
from lengthwise.cli import app
try:
    app(sys.argv[1:], prog_name="lengthwise")
except SystemExit:
    pass
print(json.dumps(sorted(set(sys.modules) & set(json.loads(HEAVY)))))
"""


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["sim", "--help"], ["bench", "--help"]])
def test_help_loads_no_heavy_library(argv: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}
    code = PROBE.replace("HEAVY", repr(json.dumps(HEAVY)))
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=True)
    assert "Usage: lengthwise" in done.stdout
    assert json.loads(done.stdout.splitlines()[-1]) == []
