"""What the `lengthwise sim` commands share: the scenario options, clear errors, a progress bar.

Imports nothing heavy at module level (numpy, scipy, matplotlib load inside the commands),
so that `lengthwise --help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from lengthwise.sim.cost import CostModel
    from lengthwise.sim.engine import EngineConfig
    from lengthwise.sim.experiment import ArmResult
    from lengthwise.sim.workload import Workload

console = Console(highlight=False, soft_wrap=True)

WorkloadOpt = Annotated[
    str,
    typer.Option(help="azure (the packaged conversation trace), sharegpt (dev lengths), trace:PATH (a CSV or JSONL "
                      "trace; columns named with trace:PATH,arrival=COL,prompt=COL,output=COL,time_unit=ms where "
                      "the usual names miss) or records:PATH (a run's records)."),
]
N = Annotated[
    int | None,
    typer.Option("--n", help="Requests: a trace repeats back to back in time beyond its length (cut below it); "
                             "sharegpt draws N."),
]
Arrivals = Annotated[str, typer.Option(help="trace (the workload's own timing), gamma, or burst (all at t=0; "
                                             "--load and --rate then change nothing).")]
Burstiness = Annotated[float, typer.Option(help="Gamma shape of inter-arrival gaps: 1 Poisson, <1 burstier.")]
Predictions = Annotated[
    str,
    typer.Option(help="oracle, lognormal:tau=0.5, lognormal:sigma=1, replay:EVAL.jsonl[,variant=NAME]; "
                      "calibrated:SPEC maps SPEC's predictions as the gateway's calibrator would."),
]
Profile = Annotated[Path | None, typer.Option(help="Cost profile JSON; default the H200 Llama-3-8B profile.")]
OverheadMs = Annotated[float | None, typer.Option(help="Per-step framework overhead (ms) added to a GPU profile.")]
MaxSeqs = Annotated[int, typer.Option("--max-num-seqs", "--seats", help="vLLM --max-num-seqs: the engine's seats.")]
Budget = Annotated[int, typer.Option(help="vLLM --max-num-batched-tokens (token budget per step).")]
BlockSize = Annotated[int, typer.Option(help="KV block size (tokens).")]
Blocks = Annotated[int, typer.Option(help="KV cache capacity in blocks.")]
Seed = Annotated[int, typer.Option(help="Seed of predictions and sampled arrivals.")]
MaxTokens = Annotated[
    int | None,
    typer.Option(help="The max_tokens every request is sent with: outputs are capped at it, and the gateway's "
                      "preemption (--preempt) re-predicts lengths under it. Default: none."),
]


@dataclass(frozen=True)
class Scenario:
    """The options `run` and `sweep` share: what is served, what the scheduler is told, the engine, its cost."""

    workload: WorkloadOpt = "azure"
    n: N = None
    arrivals: Arrivals = "trace"
    burstiness: Burstiness = 1.0
    predictions: Predictions = "lognormal:tau=0.5"
    profile: Profile = None
    overhead_ms: OverheadMs = None
    max_num_seqs: MaxSeqs = 256
    max_batched_tokens: Budget = 8192
    block_size: BlockSize = 16
    num_blocks: Blocks = 50_000
    seed: Seed = 0
    max_tokens: MaxTokens = None

    def engine(self, **options: Any) -> EngineConfig:
        from lengthwise.sim.engine import EngineConfig

        return EngineConfig(
            max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_batched_tokens,
            block_size=self.block_size, num_blocks=self.num_blocks, max_tokens=self.max_tokens, **options,
        )  # fmt: skip

    def cost(self) -> CostModel:
        from lengthwise.sim.experiment import build_cost

        return build_cost(self.profile, self.overhead_ms)

    def build_workload(self) -> tuple[Workload, str]:
        """The workload, capped where a replay needs it (`output_cap`), and a title that says so."""
        from lengthwise.sim.experiment import build_workload
        from lengthwise.sim.predictions import output_cap

        replay_cap = output_cap(self.predictions)
        cap = min((c for c in (replay_cap, self.max_tokens) if c is not None), default=None)
        w = build_workload(
            self.workload, self.n, arrivals=self.arrivals, burstiness=self.burstiness, seed=self.seed, max_output=cap
        )
        capped = "" if cap is None else f", outputs capped at {cap} tokens" + (
            " for the replay" if cap == replay_cap else " (max_tokens)")
        return w, f"{self.workload}, {len(w)} requests{capped}"


def with_scenario(**defaults: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A command with Scenario's fields as options (`defaults` replacing theirs) in place of its `scenario`
    parameter, handed to it as one."""
    return functools.partial(_scenario_options, defaults=defaults)


def _scenario_options(command: Callable[..., None], defaults: dict[str, Any]) -> Callable[..., None]:
    hints = get_type_hints(Scenario, include_extras=True)
    shared = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints[p.name], default=defaults.get(p.name, p.default))
        for p in inspect.signature(Scenario).parameters.values()
    ]
    own = inspect.signature(command, eval_str=True).parameters.values()
    params = [q for p in own for q in (shared if p.name == "scenario" else [p])]

    @functools.wraps(command)
    def wrapper(**options: Any) -> None:
        command(scenario=Scenario(**{p.name: options.pop(p.name) for p in shared}), **options)

    wrapper.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@contextmanager
def clear_errors() -> Iterator[None]:
    """Bad input ends the command with one red line, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from None


@contextmanager
def progress_bar(total: int) -> Iterator[tuple[Progress, int]]:
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        yield bar, bar.add_task("simulating", total=total)


def run_with_progress(workload, arms, config, cost, predictions, seed, goodput, fallback=None) -> list[ArmResult]:  # noqa: ANN001
    from lengthwise.sim.experiment import run_arms

    with progress_bar(len(workload)) as (bar, task):
        return run_arms(
            workload, arms, config, cost, predictions, seed=seed, goodput=goodput, fallback=fallback,
            on_arm=lambda arm: bar.update(task, completed=0, description=arm.spec),
            progress=lambda done: bar.update(task, completed=done),
        )  # fmt: skip


