"""CPU layouts: the engine's OpenMP cores and the client's, and pinning the client (in a child process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lengthwise.bench.cpus import cores_for
from lengthwise.engine import server


def test_split_gives_the_first_core_to_the_client_and_the_rest_to_the_engine() -> None:
    assert cores_for("shared") == cores_for("shared", [0, 1]) and cores_for("shared").engine_bind is None
    split = cores_for("split", [1, 0])
    assert (split.client, split.engine_bind) == (frozenset({0}), "1")
    assert cores_for("split", [0, 1, 2, 3]).engine_bind == "1,2,3"
    with pytest.raises(ValueError, match="two cores"):
        cores_for("split", [0])


def test_the_engine_binding_overrides_the_environment() -> None:
    env = server.build_env({"VLLM_CPU_OMP_THREADS_BIND": "0"}, omp_threads_bind="1")
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert server.build_env({"VLLM_CPU_OMP_THREADS_BIND": "0"})["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    config = server.EngineConfig(port=1, omp_threads_bind="1")
    assert "OMP threads on cores 1" in config.describe()
    assert server.EngineHandle.from_json(server.EngineHandle(1, 0.0, config, log=Path(os.devnull)).to_json()).config == config


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_pinning_keeps_the_process_and_its_children_on_the_client_core() -> None:
    code = (
        "import os, subprocess, sys, threading\n"
        "from lengthwise.bench.cpus import cores_for, pin_this_process\n"
        "cores = cores_for('split')\n"
        "t = threading.Thread(target=lambda: None); t.start()\n"
        "pin_this_process(cores)\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'],"
        " capture_output=True, text=True).stdout.strip()\n"
        "print(sorted(cores.client), sorted(os.sched_getaffinity(0)), child)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    first = str(min(os.sched_getaffinity(0)))
    assert out == [f"[{first}]"] * 3
