"""Round robin in rounds of `quantum` output tokens, for engines that can preempt."""

from lengthwise.core.policy.base import Job, Policy


class RoundRobin(Policy):
    """Fewest completed rounds first, ties by arrival; a round is `quantum` output tokens.

    On a preemptive engine a job that finishes a round yields to any waiting job of
    an equal or lower round, so jobs take turns in arrival order; a new arrival
    (round 0) joins the current cycle. On an engine that cannot preempt it is FCFS.
    """

    name = "rr"

    def __init__(self, quantum: int = 32) -> None:
        if quantum < 1:
            raise ValueError(f"rr: quantum must be >= 1 token, got {quantum}")
        self.quantum_tokens = int(quantum)

    def key(self, job: Job, now: float) -> float:
        return float(job.generated_tokens // self.quantum_tokens)

    def quantum(self, job: Job) -> float | None:
        return float(self.quantum_tokens - job.generated_tokens % self.quantum_tokens)

    def __repr__(self) -> str:
        return f"RoundRobin(quantum={self.quantum_tokens})"
