"""Shortest job first by predicted output length (optionally plus the prompt's prefill)."""

from lengthwise.core.policy.base import Job, Policy


class SJF(Policy):
    """Non-preemptive SJF on the (calibrated) predicted output tokens.

    `prompt_weight` adds the prompt's cost in output-token equivalents:
    key = predicted + prompt_weight · prompt_tokens. Where prompts dwarf answers
    (the Azure conversation trace: 5x), the prefill is much of a request's work
    and output length alone is a poor measure of it.
    """

    name = "sjf"

    def __init__(self, prompt_weight: float = 0.0) -> None:
        if prompt_weight < 0:
            raise ValueError(f"sjf: prompt_weight must be >= 0, got {prompt_weight}")
        self.prompt_weight = prompt_weight

    def key(self, job: Job, now: float) -> float:
        return job.predicted_tokens + self.prompt_weight * job.prompt_tokens

    def __repr__(self) -> str:
        return f"SJF(prompt_weight={self.prompt_weight})"
