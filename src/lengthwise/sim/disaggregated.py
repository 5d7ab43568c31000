"""Disaggregated prefill: a prefill pool, KV transfers, a decode pool; and colocated serving on as many GPUs.

The seed's deployment: a prefill instance prefills `prompt + postfix` in one pass.
The logits at the prompt's last position give the answer's first token, those at
the postfix's end the predicted length (causal attention: the postfix does not
change the prompt's positions), so the prediction costs the postfix's prefill
and no decode step. The prompt's KV (not the postfix's) is sent to a decode
instance, chosen and ordered by the predicted length, as TetriInfer does with a
separate predictor.

The stages, in `run_disaggregated`:

1. Prefill pool (`prefill` engines, FCFS, join-the-shortest-queue routing): each
   request is a prefill that ends with one token.
2. KV transfer: each prefill instance sends one prompt's KV at a time over its
   link, in the order its prefills finish: bytes / bandwidth, plus a latency
   that does not hold the link. Bytes = prompt tokens × the model's KV bytes
   per token (the cost profile's shape).
3. Decode pool (`decode` engines, `remote_prefill`): a request joins a decode
   instance's queue when its KV has arrived (it waits off the decode GPUs, as
   vLLM's prefill instance keeps the KV until the decode instance pulls it),
   is admitted by the arm's policy on the predicted length, and computes its last
   prompt token to emit the first token the client sees.

The prefill pool never waits on the decode pool (no back-pressure), so the
stages run one after the other. An arm without predictions (FCFS) prefills the
prompt alone and routes decodes by queue length; the others add the postfix and
route by predicted work (`pool.least_predicted_work`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from lengthwise.core.policy.fcfs import FCFS
from lengthwise.core.policy.registry import make_policy
from lengthwise.core.records import summarize
from lengthwise.core.spec import parse_params
from lengthwise.sim.config import EngineConfig
from lengthwise.sim.cost import CostModel
from lengthwise.sim.engine import QueryConfig, Simulator
from lengthwise.sim.experiment import Arm
from lengthwise.sim.pool import PoolRun, least_predicted_work, least_unfinished, run_pool
from lengthwise.sim.predictions import make_predictions
from lengthwise.sim.workload import Workload

GB = 1e9


@dataclass(frozen=True)
class Disaggregation:
    """Pool sizes and the KV link: ``prefill=2,decode=2,kv_bandwidth=50,kv_latency=1``."""

    prefill: int = 2
    decode: int = 2
    #: GB/s of each prefill instance's link (50: one 400 Gb/s RDMA NIC).
    kv_bandwidth: float = 50.0
    #: Milliseconds per transfer on top of bytes / bandwidth (set-up, the decode side's pull).
    kv_latency: float = 1.0
    #: Bytes of KV per prompt token; default the cost profile's model shape.
    kv_bytes_per_token: float | None = None

    def __post_init__(self) -> None:
        if min(self.prefill, self.decode) < 1:
            raise ValueError(f"disaggregated: prefill and decode need >= 1 instance, got {self.prefill}, {self.decode}")
        if self.kv_bandwidth <= 0 or self.kv_latency < 0:
            raise ValueError("disaggregated: kv_bandwidth must be > 0 (GB/s) and kv_latency >= 0 (ms)")

    @classmethod
    def parse(cls, text: str) -> Disaggregation:
        """From ``KEY=VALUE,...``; unknown keys are named in the error."""
        params = parse_params(text, "--disaggregated")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"--disaggregated: unknown key(s) {unknown}; use {sorted(known)}")
        return cls(**params)

    @property
    def instances(self) -> int:
        return self.prefill + self.decode

    def bytes_per_token(self, cost: CostModel) -> float:
        value = self.kv_bytes_per_token if self.kv_bytes_per_token is not None else cost.kv_bytes_per_token
        if value is None:
            raise ValueError("--disaggregated: the cost profile names no model shape; give kv_bytes_per_token=")
        return float(value)


def kv_ready_times(finish: np.ndarray, link: np.ndarray, nbytes: np.ndarray, spec: Disaggregation) -> np.ndarray:
    """When each prompt's KV has reached the decode side.

    `finish`: prefill end; `link`: the prefill instance (one link each, one transfer
    at a time, in order of `finish`); `nbytes`: the KV sent.
    """
    ready = np.empty_like(finish, dtype=float)
    link_free: dict[int, float] = {}
    for i in np.argsort(finish, kind="stable").tolist():
        start = max(float(finish[i]), link_free.get(int(link[i]), 0.0))
        link_free[int(link[i])] = start + nbytes[i] / (spec.kv_bandwidth * GB)
        ready[i] = link_free[int(link[i])] + spec.kv_latency / 1000
    return ready


@dataclass
class PoolMetrics:
    """One arm's metrics (`summarize`'s keys plus the pools'), and its decode (or only) pool."""

    metrics: dict[str, float]
    pool: PoolRun


def run_disaggregated(
    workload: Workload, policy_spec: str, config: EngineConfig, cost: CostModel, spec: Disaggregation,
    *, postfix_tokens: int, predicted: bool, progress: Callable[[int], None] | None = None,
) -> PoolMetrics:  # fmt: skip
    """P/D serving: prefill pool, KV transfers, decode pool under `policy_spec` (see the module)."""
    base = replace(config, query=None)
    extra = postfix_tokens if predicted else 0
    prefill_w = replace(workload, prompt_tokens=workload.prompt_tokens + extra, output_tokens=np.ones(len(workload), int))
    prefill = run_pool(
        [Simulator(base, cost, FCFS()) for _ in range(spec.prefill)], prefill_w, workload.arrival, least_unfinished
    )
    finish = np.array([r.finish_time for r in prefill.finished])
    link = np.empty(len(workload), dtype=int)
    for k, run in enumerate(prefill.runs):
        link[run.arrival_rows] = k
    nbytes = workload.prompt_tokens * spec.bytes_per_token(cost)
    ready = kv_ready_times(finish, link, nbytes, spec)
    decoders = [Simulator(replace(base, remote_prefill=True), cost, make_policy(policy_spec)) for _ in range(spec.decode)]
    decode = run_pool(decoders, workload, ready, least_predicted_work if predicted else least_unfinished, progress)
    records = decode.records(workload, cost)
    span = _span(workload, decode)
    metrics = summarize(records) | {
        "decode_busy": decode.busy_share(span),
        "decode_seat_share": decode.seat_share(span),
        "prefill_busy": prefill.busy_share(span),
        "kv_bytes_moved": float(nbytes.sum()),
        "mean_kv_transfer_ms": float(np.mean(ready - finish)) * 1000,
        "preemptions": float(sum(r.scheduler.preemptions for r in decode.runs)),
    }
    return PoolMetrics(metrics, decode)


def run_colocated(
    workload: Workload, policy_spec: str, config: EngineConfig, cost: CostModel, instances: int,
    progress: Callable[[int], None] | None = None,
) -> PoolMetrics:  # fmt: skip
    """`instances` ordinary engines (each prefills and decodes; with `config.query`, each request's
    prediction query runs on its engine first) behind join-the-shortest-queue routing."""
    sims = [Simulator(config, cost, make_policy(policy_spec)) for _ in range(instances)]
    pool = run_pool(sims, workload, workload.arrival, least_unfinished, progress)
    span = _span(workload, pool)
    metrics = summarize(pool.records(workload, cost)) | {
        "decode_busy": pool.busy_share(span),
        "decode_seat_share": pool.seat_share(span),
        "kv_bytes_moved": 0.0,
        "preemptions": float(sum(r.scheduler.preemptions for r in pool.runs)),
    }
    if config.query is not None:
        found = sum(r.scheduler.query_prefix_tokens_found for r in pool.runs)
        possible = sum(r.scheduler.query_prefix_tokens_possible for r in pool.runs)
        metrics["query_prefix_reuse"] = found / possible if possible else 0.0
    return PoolMetrics(metrics, pool)


def _span(workload: Workload, pool: PoolRun) -> float:
    """First arrival to last finish: the time the utilization shares are taken over."""
    return max(r.finish_time for r in pool.finished) - float(workload.arrival[0])


def reads_predictions(arm: Arm) -> bool:
    """FCFS reads no prediction: its P/D arm prefills the prompt alone and no query runs before it."""
    return not isinstance(make_policy(arm.policy_spec), FCFS)


def compare_deployments(
    workload: Workload, arms: list[Arm], config: EngineConfig, cost: CostModel, spec: Disaggregation,
    predictions: str, *, seed: int = 0, postfix_tokens: int = 60, query: QueryConfig | None = None,
    progress: Callable[[str], Callable[[int], None]] | None = None,
) -> list[tuple[str, dict[str, float]]]:  # fmt: skip
    """Each arm as P/D (prediction from the prefill pass) and colocated on as many engines (with `query`,
    the self-prediction query before each request of an arm that reads predictions); (column, metrics)."""
    drawn = make_predictions(predictions, workload.output_tokens, seed)
    columns: list[tuple[str, dict[str, float]]] = []
    for arm in arms:
        w = workload.with_predictions(workload.output_tokens.astype(float) if arm.oracle else drawn)
        predicted = reads_predictions(arm)
        name = f"P/D {arm.spec}"
        pd = run_disaggregated(w, arm.policy_spec, config, cost, spec, postfix_tokens=postfix_tokens,
                               predicted=predicted, progress=progress(name) if progress else None)  # fmt: skip
        columns.append((name, pd.metrics))
        colocated = replace(config, query=query if predicted else None)
        name = f"colocated {arm.spec}" + (" +query" if colocated.query else "")
        co = run_colocated(w, arm.policy_spec, colocated, cost, spec.instances, progress(name) if progress else None)
        columns.append((name, co.metrics))
    return columns
