"""What preemption cost a gateway run: how many requests yielded, and the prefill their continuations took.

Two sources, read at different places, so that each checks the other:

- the gateway's own counters, read as its run ends (the gateway is started for the run,
  so they count that run alone): preemptions, and the prompt tokens of the
  continuations with the part the engine served from its prefix cache (`usage`'s
  `prompt_tokens_details`). The rest, prompt minus cached, is the prefill the resumes
  added: tokens the engine computed again only because a run was cut. Continuations are
  counted when they end, so one still running when a run fails is missing.
- the engine's counters around the run: prompt tokens minus those its prefix cache served is every
  token it prefilled (the prompts, the continuations, and a gateway's prediction
  queries to the engine, if any). Its difference to the FCFS run of the same round is
  what the arm added in all; it holds the queries too, so it is an upper bound on
  the resumes' share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lengthwise.bench.runfile import BenchRun

PROMPT, CACHED = "vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total"


@dataclass(frozen=True)
class Resumes:
    """One gateway run's preemptions and its continuations' prompt tokens (all, and served from cache)."""

    preemptions: int
    prompt_tokens: int
    cached_tokens: int

    @property
    def extra_prefill_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else math.nan


def resumes(run: BenchRun) -> Resumes | None:
    """From the gateway counters the run saved; None for a run without a gateway, or one without them."""
    counters = run.config.get("gateway_metrics") or {}
    if "lengthwise_preemptions_total" not in counters:
        return None
    return Resumes(
        int(counters["lengthwise_preemptions_total"]),
        int(counters.get("lengthwise_resume_prompt_tokens_total", 0)),
        int(counters.get("lengthwise_resume_cached_tokens_total", 0)),
    )


def engine_prefill(run: BenchRun) -> float | None:
    """Prompt tokens the engine prefilled over the run, those its prefix cache served left out (None if unknown)."""
    counters = run.config.get("engine_metrics") or {}
    if PROMPT not in counters or CACHED not in counters:
        return None
    return counters[PROMPT] - counters[CACHED]


def resume_rows(runs: list[tuple[int, str, BenchRun]], baseline: str) -> list[list[str]]:
    """Per gateway run (round, arm, run): its `Resumes`, and the engine's prefill against the baseline's run
    of the same round."""
    base = {r: engine_prefill(run) for r, arm, run in runs if arm == baseline}
    rows = []
    for r, arm, run in runs:
        cost = resumes(run)
        if cost is None:
            continue
        mine, theirs = engine_prefill(run), base.get(r)
        versus = "" if mine is None or theirs is None else f"{mine - theirs:+,.0f}"
        share = "" if math.isnan(cost.cached_share) else f"{cost.cached_share:.2f}"
        rows.append([str(r), arm, str(cost.preemptions), f"{cost.prompt_tokens:,}", f"{cost.cached_tokens:,}",
                     f"{cost.extra_prefill_tokens:,}", share, "" if mine is None else f"{mine:,.0f}", versus])  # fmt: skip
    return rows


def resume_header(baseline: str) -> list[str]:
    return ["round", "arm", "preemptions", "continuation prompt tokens", "of them cached",
            "extra prefill tokens", "cached share", "engine prefilled tokens", f"vs {baseline}"]  # fmt: skip


def resume_summary(runs: list[tuple[int, str, BenchRun]]) -> list[dict[str, Any]]:
    """The same per gateway run, for summary.json."""
    out = []
    for r, arm, run in runs:
        cost = resumes(run)
        if cost is not None:
            out.append({"round": r, "arm": arm, "preemptions": cost.preemptions,
                        "resume_prompt_tokens": cost.prompt_tokens, "resume_cached_tokens": cost.cached_tokens,
                        "extra_prefill_tokens": cost.extra_prefill_tokens, "engine_prefilled_tokens": engine_prefill(run)})  # fmt: skip
    return out
