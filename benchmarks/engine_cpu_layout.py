"""The embedded engine's decode speed per CPU layout, quiet and beside a process that spins one core.

On 2 cores vLLM's OMP threads bound to both cores collapse when anything else takes CPU (spin-waiting
threads wait for the preempted one). This starts the engine once per layout and measures aggregate decode
tokens/s of 8 concurrent fixed-length answers (ignore_eos), quiet, with a busy-loop process, and quiet again:

    shared-spin          VLLM_CPU_OMP_THREADS_BIND=0-1 (today's default), busy loop anywhere
    shared-passive       the same with OMP_WAIT_POLICY=PASSIVE
    split                VLLM_CPU_OMP_THREADS_BIND=1; this client and the busy loop on core 0
    split-passive        the same with OMP_WAIT_POLICY=PASSIVE

    .venv/bin/python benchmarks/engine_cpu_layout.py [--port 8200] [--layouts shared-spin,split]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx

from lengthwise.engine import EngineConfig, start, stop

LAYOUTS = {  # name: (engine OMP bind, OMP_WAIT_POLICY, cores for this client and the busy loop)
    "shared-spin": ("0-1", None, None),
    "shared-passive": ("0-1", "PASSIVE", None),
    "split": ("1", None, {0}),
    "split-passive": ("1", "PASSIVE", {0}),
}


async def decode_speed(url: str, model: str, n: int = 8, tokens: int = 64) -> float:
    """Aggregate output tokens/s of `n` concurrent answers of exactly `tokens` tokens."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        async def one(i: int) -> int:
            body = {"model": model, "prompt": f"Write story number {i} about", "max_tokens": tokens,
                    "ignore_eos": True, "temperature": 0}
            response = await client.post("/v1/completions", json=body)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        started = time.monotonic()
        total = sum(await asyncio.gather(*(one(i) for i in range(n))))
        return total / (time.monotonic() - started)


def measure(url: str, model: str, cores: set[int] | None) -> dict[str, list[float]]:
    def twice() -> list[float]:
        asyncio.run(decode_speed(url, model, 2, 8))  # warm-up
        return [round(asyncio.run(decode_speed(url, model)), 1) for _ in range(2)]

    result = {"quiet": twice()}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        if cores is not None:
            os.sched_setaffinity(busy.pid, cores)
        result["busy_loop"] = twice()
    finally:
        busy.kill()
    result["quiet_again"] = twice()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    args = parser.parse_args()
    everything = os.sched_getaffinity(0)
    for name in args.layouts.split(","):
        bind, wait_policy, cores = LAYOUTS[name]
        os.sched_setaffinity(0, everything)
        if wait_policy:
            os.environ["OMP_WAIT_POLICY"] = wait_policy
        else:
            os.environ.pop("OMP_WAIT_POLICY", None)
        handle = start(EngineConfig(port=args.port, max_num_seqs=8, omp_threads_bind=bind))
        try:
            if cores is not None:
                os.sched_setaffinity(0, cores)
            print(json.dumps({"layout": name, **measure(f"http://127.0.0.1:{args.port}", handle.model, cores)}),
                  flush=True)
        finally:
            stop(args.port)


if __name__ == "__main__":
    main()
