"""`lengthwise predict ...`: evaluate self-prediction on a real engine and report on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lengthwise.predict.offline.learned_cli import learned_app

predict_app = typer.Typer(help="Length prediction: evaluate and report.", no_args_is_help=True)
predict_app.add_typer(learned_app, name="learned")
console = Console(stderr=True)

DEFAULT_OUT = Path("docs/results/predict_eval/eval.jsonl")


@predict_app.command("eval")
def eval_command(
    n: Annotated[int, typer.Option("--n", "-n", help="Prompts to have in the file (done ones count).")] = 200,
    out: Annotated[Path, typer.Option(help="JSONL to append to (resumes).")] = DEFAULT_OUT,
    url: Annotated[str, typer.Option(help="Engine base URL (server root).")] = "http://127.0.0.1:8100",
    model: Annotated[str, typer.Option(help="Served model name.")] = "qwen2.5-coder-0.5b-instruct",
    variants: Annotated[str, typer.Option(help="Postfix variants, comma-separated.")] = "seed,scale,fewshot",
    split: Annotated[str, typer.Option(help="ShareGPT split: dev (tuning) or test (held out).")] = "dev",
    max_tokens: Annotated[int, typer.Option(help="max_tokens of the real answers.")] = 512,
    stated_max_tokens: Annotated[
        int | None,
        typer.Option(help="The cap the postfix states, when it should differ from --max-tokens (to repeat another "
                     "run's queries word for word with cheaper answers)."),
    ] = None,
    max_prompt_tokens: Annotated[int, typer.Option(help="Skip longer prompts (cl100k estimate).")] = 2500,
    concurrency: Annotated[int, typer.Option(help="Prompts in flight (match the engine's max-num-seqs).")] = 4,
    report: Annotated[bool, typer.Option(help="Write the report when done.")] = True,
) -> None:
    """Run N ShareGPT prompts: each variant's prediction, then the real answer right after."""
    import asyncio

    from lengthwise.predict.offline.eval import EvalConfig, done_ids, run_eval
    from lengthwise.workload.sharegpt import load_sharegpt

    from lengthwise.predict.self_query.postfix import POSTFIXES

    names = tuple(v.strip() for v in variants.split(",") if v.strip())
    if not names or set(names) - set(POSTFIXES):
        raise typer.BadParameter(f"variants must be among {', '.join(POSTFIXES)}", param_hint="--variants")
    config = EvalConfig(url, model, names, max_tokens, concurrency, stated_max_tokens=stated_max_tokens)
    done = done_ids(out)
    prompts = load_sharegpt(split, limit=n, max_prompt_tokens=max_prompt_tokens)  # type: ignore[arg-type]
    todo = [p for p in prompts if p.id not in done]
    console.print(f"{len(prompts) - len(todo)} of {len(prompts)} prompts already in {out}; running {len(todo)}")
    failures: list[str] = []
    with Progress(
        TextColumn("[bold]predict eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
    ) as progress:
        task = progress.add_task("eval", total=len(todo), last="")

        def on_record(record: dict | None, error: Exception | None) -> None:
            if error is not None:
                failures.append(f"{type(error).__name__}: {error}")
                progress.update(task, advance=1, last=f"[red]failed: {failures[-1][:60]}")
                return
            assert record is not None
            progress.update(task, advance=1, last=f"{record['id']}: {record['actual_tokens']} tokens")

        asyncio.run(run_eval(todo, out, config, on_record))
    if failures:
        console.print(f"[red]{len(failures)} prompts failed (rerun to retry them); first: {failures[0]}")
    if report:
        report_command(out)


@predict_app.command("report")
def report_command(
    jsonl: Annotated[Path, typer.Argument(help="Records written by `predict eval`.")],
    out_dir: Annotated[Path | None, typer.Option(help="Where to write the plot and metrics (default: next to the JSONL).")] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for calibration.")] = 5,
) -> None:
    """Kendall tau, Spearman, MAE, within-2x, raw and cross-validated calibrated; the seed's plot."""
    from lengthwise.predict.offline.report import write_report

    write_report(jsonl, out_dir or jsonl.parent, folds=folds, console=Console(width=max(Console().width, 130)))
