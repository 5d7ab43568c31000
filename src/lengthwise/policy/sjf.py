"""Shortest job first by predicted output length."""

from lengthwise.policy.base import Job, Policy


class SJF(Policy):
    """Non-preemptive SJF on the (calibrated) predicted output tokens."""

    name = "sjf"

    def key(self, job: Job, now: float) -> float:
        return job.predicted_tokens
