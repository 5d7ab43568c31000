"""Is the engine's greedy answer the same when it is resumed from its own tokens?

A preempted request resumes as a continuation: its prompt's token ids followed by the tokens
it generated (`lengthwise serve --preempt`). The tokens are exact, but the engine then computes
their keys and values in one prefill instead of one decode step each, with other kernels and
another order of summation; where two candidate tokens are nearly tied, greedy decoding may
then pick the other one. This answers each prompt once (greedy, `--max-tokens`), then resends
its prompt ids + the first k answer ids for several k and reports where each continuation first
differs from the rest of the answer (absolute token position), straight on the engine.

    python benchmarks/resume_invariance.py [--engine-url http://127.0.0.1:8100]

Without --engine-url it starts the embedded engine (its threads on the second core, this
process on the first) and stops it at the end; run it under `flock /tmp/lengthwise-engine.lock`
where engines are shared.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import httpx
from rich.console import Console

from lengthwise.bench.cpus import cores_for, pin_this_process, usable
from lengthwise.engine import MODEL_NAME, EngineConfig, server
from lengthwise.engine.progress import Progress
from lengthwise.engine.resources import free_port

QUESTION = "Explain in detail how a hash map works, with an example in Python."
#: The same question as a plain completions prompt and as a chat (its template's tokens).
PROMPTS = {"completion": {"prompt": f"Question: {QUESTION}\nAnswer:"},
           "chat": {"messages": [{"role": "user", "content": QUESTION}]}}
CUTS = (1, 3, 6, 7, 8, 9, 10, 12, 16, 24, 32)


@contextlib.contextmanager
def engine(url: str | None) -> Iterator[str]:
    if url:
        yield url.rstrip("/")
        return
    cores = cores_for(usable("split"))
    config = EngineConfig(port=free_port(), policy="priority", max_num_seqs=2, omp_threads_bind=cores.engine_bind)
    handle = server.start(config, progress=Progress(Console(stderr=True)))
    pin_this_process(cores)  # after the start: the engine keeps both cores, its threads bound to the second
    try:
        yield handle.url
    finally:
        server.stop(config.port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-url", default=None)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with engine(args.engine_url) as url, httpx.Client(timeout=600) as client:
        for name, fields in PROMPTS.items():
            path = "/v1/chat/completions" if name == "chat" else "/v1/completions"
            body = {"model": MODEL_NAME, **fields, "max_tokens": args.max_tokens, "temperature": 0,
                    "return_token_ids": True}
            answer = client.post(url + path, json=body).json()
            ids = answer["choices"][0]["token_ids"]
            prompt_ids = answer.get("prompt_token_ids") or answer["choices"][0]["prompt_token_ids"]
            again = client.post(url + path, json=body).json()["choices"][0]["token_ids"]
            print(f"{name}: {len(prompt_ids)} prompt tokens, {len(ids)} answer tokens; answered again: "
                  f"{'the same' if again == ids else 'DIFFERENT'}")
            for k in CUTS:
                resumed = client.post(url + "/v1/completions", json={
                    "model": MODEL_NAME, "prompt": prompt_ids + ids[:k], "max_tokens": args.max_tokens - k,
                    "temperature": 0, "return_token_ids": True}).json()["choices"][0]["token_ids"]
                differs = next((k + i for i, (a, b) in enumerate(zip(resumed, ids[k:])) if a != b), None)
                print(f"  resumed after {k:2d} tokens: " +
                      ("the same answer" if differs is None else f"first differs at token {differs}"))


if __name__ == "__main__":
    main()
