"""Skip-join multi-level feedback queue (FastServe, Wu et al. 2023), for engines that can preempt."""

from __future__ import annotations

from lengthwise.core.policy.base import Job, Policy


class SkipJoinMLFQ(Policy):
    """Levels with quanta of ``base_quantum · 2**i`` output tokens; lower level first.

    Skip-join: a job enters at the first level whose quantum covers its prefill,
    counted as ``prompt_tokens / prefill_ratio`` decode-step equivalents, so a long
    prompt does not hog the top level. A job that uses up its level's quantum is
    demoted one level; the last level has no quantum. Within a level, arrival order.
    Keys depend only on prompt and generated tokens, so a waiting job's key is fixed.
    """

    name = "mlfq"

    def __init__(self, levels: int = 6, base_quantum: int = 16, prefill_ratio: float = 64.0) -> None:
        if levels < 1 or base_quantum < 1 or prefill_ratio <= 0:
            raise ValueError(
                f"mlfq: need levels >= 1, base_quantum >= 1, prefill_ratio > 0; "
                f"got {levels}, {base_quantum}, {prefill_ratio}"
            )
        self.levels = int(levels)
        self.base_quantum = int(base_quantum)
        self.prefill_ratio = float(prefill_ratio)

    def entry_level(self, job: Job) -> int:
        cost = job.prompt_tokens / self.prefill_ratio
        level = 0
        while level < self.levels - 1 and self.base_quantum * 2**level < cost:
            level += 1
        return level

    def _level_and_left(self, job: Job) -> tuple[int, float | None]:
        level, used = self.entry_level(job), job.generated_tokens
        while level < self.levels - 1:
            q = self.base_quantum * 2**level
            if used < q:
                return level, float(q - used)
            used -= q
            level += 1
        return level, None

    def key(self, job: Job, now: float) -> float:
        return float(self._level_and_left(job)[0])

    def quantum(self, job: Job) -> float | None:
        return self._level_and_left(job)[1]

    def __repr__(self) -> str:
        return f"SkipJoinMLFQ(levels={self.levels}, base_quantum={self.base_quantum}, prefill_ratio={self.prefill_ratio})"
