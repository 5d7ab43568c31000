"""Shortest remaining processing time, on predicted output tokens."""

from lengthwise.core.policy.base import Job, Policy


class SRPT(Policy):
    """Remaining = predicted − generated, re-estimated once a request outlives its prediction.

    A request that has generated `g` tokens is expected to need at least
    ``overrun · g`` more: remaining = max(predicted − g, overrun · g). Output lengths
    are heavy-tailed, so one that has run long is likely to run longer (the
    Lindy rule); the max keeps the estimate continuous and never below zero. With
    ``overrun = 0`` it is plain predicted − generated, floored at 0.

    A waiting job's key never changes (its `generated_tokens` only moves while it
    runs), so the queue keeps a heap. On a non-preemptive engine it orders like SJF
    except for preempted (recomputed) requests, which keep the credit of the tokens
    they already generated.
    """

    name = "srpt"

    def __init__(self, overrun: float = 0.5) -> None:
        if overrun < 0:
            raise ValueError(f"srpt: overrun must be >= 0, got {overrun}")
        self.overrun = overrun

    def key(self, job: Job, now: float) -> float:
        g = job.generated_tokens
        return max(job.predicted_tokens - g, self.overrun * g)

    def __repr__(self) -> str:
        return f"SRPT(overrun={self.overrun})"
