"""What the simulator serves: arrival times, prompt and output lengths, predicted lengths."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lengthwise.core.records import RequestRecord
from lengthwise.workload.arrivals import gamma_arrivals, tile_arrivals
from lengthwise.workload.azure import load_azure
from lengthwise.workload.trace import Trace


@dataclass(frozen=True)
class Workload:
    """One row per request, in arrival order. `predicted` is what the scheduler sees."""

    arrival: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    predicted: np.ndarray
    ids: Sequence[str] | None = None
    #: What the scheduler sees before a request's self-prediction query answers (the query
    #: window rule); None without the rule.
    fallback: np.ndarray | None = None
    #: Each request's conversation: its turns share a prompt prefix in the engines' prefix
    #: caches (`lengthwise.sim.conversations`); None: no two requests share one.
    conversations: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.arrival.size
        for name in ("prompt_tokens", "output_tokens", "predicted", "fallback", "conversations"):
            if getattr(self, name) is not None and getattr(self, name).size != n:
                raise ValueError(f"workload: {name} has {getattr(self, name).size} rows, arrival has {n}")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"workload: {len(self.ids)} ids for {n} requests")
        if n and np.any(np.diff(self.arrival) < 0):
            raise ValueError("workload: arrivals must be sorted")
        if n and (self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ValueError("workload: every request needs at least one prompt and one output token")

    def __len__(self) -> int:
        return int(self.arrival.size)

    def with_arrivals(self, arrival: np.ndarray) -> Workload:
        return replace(self, arrival=np.asarray(arrival, dtype=float))

    def with_predictions(self, predicted: np.ndarray) -> Workload:
        return replace(self, predicted=np.asarray(predicted, dtype=float))

    def head(self, n: int) -> Workload:
        ids = None if self.ids is None else list(self.ids[:n])
        fallback = None if self.fallback is None else self.fallback[:n]
        conversations = None if self.conversations is None else self.conversations[:n]
        return Workload(
            self.arrival[:n], self.prompt_tokens[:n], self.output_tokens[:n], self.predicted[:n], ids, fallback,
            conversations,
        )  # fmt: skip

    def tiled(self, n: int) -> Workload:
        """`n` requests: the workload repeated back to back in time, each copy shifted by its span (a prefix if shorter).

        Copies keep their requests' ids with ``#k`` for the k-th repeat, so every id stays unique.
        """
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        if n <= len(self):
            return self.head(n)
        size = len(self)
        ids = None if self.ids is None else [self.ids[i % size] + (f"#{i // size}" if i >= size else "") for i in range(n)]
        fallback = None if self.fallback is None else np.resize(self.fallback, n)
        conversations = None
        if self.conversations is not None:  # each copy's conversations are its own
            span = int(self.conversations.max()) + 1
            conversations = np.resize(self.conversations, n) + span * (np.arange(n) // size)
        return Workload(
            tile_arrivals(self.arrival, n), np.resize(self.prompt_tokens, n), np.resize(self.output_tokens, n),
            np.resize(self.predicted, n), ids, fallback, conversations,
        )  # fmt: skip

    def request_id(self, i: int) -> str:
        return self.ids[i] if self.ids is not None else f"r{i}"


def from_trace(trace: Trace) -> Workload:
    """A trace's requests with oracle predictions (swap them with `with_predictions`)."""
    return Workload(
        trace.arrival.astype(float), trace.prompt_tokens.astype(np.int64), trace.output_tokens.astype(np.int64),
        trace.output_tokens.astype(float),
    )  # fmt: skip


def azure_workload() -> Workload:
    return from_trace(load_azure())


def sharegpt_workload(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> Workload:
    """ShareGPT dev prompts' token counts (prompt, reference answer) with gamma arrivals.

    Lengths are cl100k counts of the first turn and of its recorded answer; prompts
    without an answer are skipped.
    """
    from lengthwise.core.tokens import count_tokens
    from lengthwise.workload.sharegpt import load_sharegpt

    pairs = [(p.prompt_tokens, count_tokens(p.reference)) for p in load_sharegpt("dev") if p.reference.strip()]
    if not pairs:
        raise ValueError("no ShareGPT dev prompts with answers")
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=n)
    lengths = np.maximum(np.asarray(pairs, dtype=np.int64)[idx], 1)
    trace = Trace(gamma_arrivals(n, rate, burstiness, seed), lengths[:, 0], lengths[:, 1])
    return from_trace(trace)


def records_workload(records: Sequence[RequestRecord], source: str = "records") -> Workload:
    """Replay a run's requests: their arrival times, prompt and output lengths, their predictions.

    Requests that failed (`error` set) are left out; the others need an output token count,
    not their timings, so a log of arrivals and token counts replays as well as a measured run.
    Arrivals are shifted so the first is at 0.
    """
    served = [r for r in records if r.error is None]
    done = sorted((r for r in served if r.output_tokens > 0), key=lambda r: r.arrival)
    if not done:
        raise ValueError(
            f"{source}: nothing to replay: {len(records)} records, {len(records) - len(served)} failed (error set), "
            f"{len(served)} without an output_tokens count above 0; each request needs arrival, prompt_tokens and "
            "output_tokens"
        )
    arrival = np.array([r.arrival for r in done], dtype=float)
    output = np.array([r.output_tokens for r in done], dtype=np.int64)
    predicted = np.array([r.predicted_tokens if r.predicted_tokens is not None else r.output_tokens for r in done])
    return Workload(
        arrival - arrival[0], np.array([max(r.prompt_tokens, 1) for r in done], dtype=np.int64), output,
        predicted.astype(float), [r.id for r in done],
    )  # fmt: skip


def resample(workload: Workload, n: int, seed: int = 0) -> Workload:
    """`n` rows drawn with replacement, each at its row's time plus a uniform jitter of one mean gap.

    The source's rate pattern over time and its length mix, at any size: a trace
    of one engine's traffic becomes the traffic of many (scale the rate afterwards,
    `lengthwise.sim.load.at_load`). Predictions are drawn with their rows; ids are not kept.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(workload) < 2:
        raise ValueError("resample needs a workload of at least 2 requests")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(workload), n)
    gap = (workload.arrival[-1] - workload.arrival[0]) / (len(workload) - 1)
    arrival = workload.arrival[rows] + rng.uniform(0.0, gap, n)
    order = np.argsort(arrival, kind="stable")
    rows = rows[order]
    return Workload(
        arrival[order] - arrival[order[0]], workload.prompt_tokens[rows], workload.output_tokens[rows],
        workload.predicted[rows],
    )  # fmt: skip
