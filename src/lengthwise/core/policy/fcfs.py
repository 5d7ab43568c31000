"""First come, first served: what the engines do today."""

from lengthwise.core.policy.base import Job, Policy


class FCFS(Policy):
    name = "fcfs"

    def key(self, job: Job, now: float) -> float:
        return job.arrival
