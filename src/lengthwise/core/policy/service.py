"""Predicted service time: the engine-seconds a request will take, learned from completed requests.

A continuous-batching engine runs one request's prefill nearly alone (a prefill token
costs about what a decode step of the whole batch does) while its decode tokens share
each step with every other running sequence. So the engine time a request takes is

    seconds = prefill_s_per_token · uncached prompt tokens + decode_s_per_token · output tokens

with `decode_s_per_token` the inter-token time divided by the sequences sharing the
steps. Ordering by it is shortest-job-first on the engine's real bottleneck; ordering by
wall-clock seconds (inter-token time undivided) is nearly output-only SJF, which gained
little on prompt-heavy traces (docs/SIMULATOR.md, "Policies").

The coefficients start from priors (an H200 with Llama-3-8B: ~20 µs per prefill token,
~0.1 ms of engine time per decode token at a full batch) and follow the backend:

    service = ServiceTime()
    # for each completed request (times from when the engine got it):
    service.observe(prompt_tokens=812, cached_tokens=512, output_tokens=120,
                    ttft_s=0.061, e2e_s=2.95, concurrency=48)
    service.seconds(prompt_tokens=2000, output_tokens=50)   # its key, in seconds

`prefill_s_per_token` is the slope of an exponentially weighted least-squares fit of
TTFT on uncached prompt tokens (the intercept absorbs the step the prefill rode in);
`decode_s_per_token` an exponentially weighted ratio of sums of (E2E − TTFT) / concurrency
over output tokens after the first. Not thread-safe: one event loop feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lengthwise.core.policy.job import Job


class _Decayed:
    """Exponentially weighted n, Σx, Σy, Σx², Σxy: a running least-squares fit."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.sums = (0.0,) * 5

    def add(self, x: float, y: float) -> None:
        d = self.decay
        n, sx, sy, sxx, sxy = self.sums  # spelled out: the simulator calls this once per request
        self.sums = (d * n + 1.0, d * sx + x, d * sy + y, d * sxx + x * x, d * sxy + x * y)

    def slope(self) -> float | None:
        """Least-squares slope of y on x; None while x has (almost) no spread."""
        n, sx, sy, sxx, sxy = self.sums
        mx, my = sx / n, sy / n
        var = sxx / n - mx * mx
        return None if var <= 1e-9 * (1 + mx * mx) else (sxy / n - mx * my) / var

    def ratio(self) -> float | None:
        """Σy / Σx; None before any x."""
        _, sx, sy, _, _ = self.sums
        return sy / sx if sx > 0 else None


@dataclass
class ServiceTime:
    """Online estimate of a request's engine-seconds from its prompt and (predicted) output tokens."""

    prefill_s_per_token: float = 2e-5
    decode_s_per_token: float = 1e-4
    #: Observations that weigh e⁻¹ as much as the newest: how fast it follows the backend.
    memory: int = 500
    #: Observations before the fitted values replace the priors.
    min_observations: int = 16
    observations: int = field(default=0, init=False)
    _prefill: _Decayed = field(init=False, repr=False)
    _decode: _Decayed = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prefill_s_per_token < 0 or self.decode_s_per_token <= 0 or self.memory < 1:
            raise ValueError("service time: need prefill_s_per_token >= 0, decode_s_per_token > 0, memory >= 1")
        decay = 1.0 - 1.0 / self.memory
        self._prefill, self._decode = _Decayed(decay), _Decayed(decay)

    def seconds(self, prompt_tokens: float, output_tokens: float, cached_tokens: float = 0.0) -> float:
        """Engine-seconds of a request with these token counts."""
        uncached = max(prompt_tokens - cached_tokens, 0.0)
        return self.prefill_s_per_token * uncached + self.decode_s_per_token * max(output_tokens, 0.0)

    def of(self, job: Job) -> float:
        """A job's predicted engine-seconds still to spend: its uncached prompt and its predicted output
        beyond what it generated already (a preempted job's remaining service, SRPT's measure)."""
        return self.seconds(job.prompt_tokens, job.predicted_tokens - job.generated_tokens, job.cached_tokens)

    def observe(
        self, prompt_tokens: int, cached_tokens: int, output_tokens: int, ttft_s: float, e2e_s: float,
        concurrency: float = 1.0,
    ) -> None:  # fmt: skip
        """Learn from one completed request; times count from when the engine received it.

        `concurrency`: the sequences the engine ran alongside it (itself included), e.g.
        the requests in flight on its backend when it finished.
        """
        if not (0 <= ttft_s <= e2e_s) or output_tokens < 1:
            return
        self.observations += 1
        self._prefill.add(float(max(prompt_tokens - cached_tokens, 0)), ttft_s)
        if output_tokens > 1:
            self._decode.add(float(output_tokens - 1), (e2e_s - ttft_s) / max(concurrency, 1.0))
        if self.observations >= self.min_observations:
            slope, ratio = self._prefill.slope(), self._decode.ratio()
            if slope is not None:
                self.prefill_s_per_token = max(slope, 0.0)
            if ratio is not None and ratio > 0:
                self.decode_s_per_token = ratio
