"""Highest response ratio next: SJF that lets waiting time catch up."""

from lengthwise.core.policy.base import Job, Policy


class HRRN(Policy):
    """Serve the highest (wait + service) / service first, service = predicted time.

    Waits are seconds and predictions are tokens, so `tokens_per_s` (one
    request's decode speed) converts: ratio = 1 + wait · tokens_per_s / (predicted + 1).
    The key changes continuously while jobs wait, so the queue ranks them afresh at
    each pop (O(n)), and it cannot be sent as a static engine priority.
    """

    name = "hrrn"
    time_invariant = False

    def __init__(self, tokens_per_s: float = 50.0) -> None:
        if tokens_per_s <= 0:
            raise ValueError(f"hrrn: tokens_per_s must be > 0, got {tokens_per_s}")
        self.tokens_per_s = tokens_per_s

    def key(self, job: Job, now: float) -> float:
        wait = max(0.0, now - job.arrival)
        return -(1.0 + wait * self.tokens_per_s / (max(job.predicted_tokens, 0.0) + 1.0))

    def __repr__(self) -> str:
        return f"HRRN(tokens_per_s={self.tokens_per_s})"
