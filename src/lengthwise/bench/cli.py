"""`lengthwise bench`: one load run against a server; `bench compare`: FCFS vs LLM-guided vs oracle."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


bench_app = typer.Typer(
    help="Replay real prompts against a server and measure latency (`vllm bench serve`-style); "
    "`compare` runs FCFS, LLM-guided and oracle scheduling on the same load.",
)
#: Wide enough for the comparison table when the output is a log file, not a terminal.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)

Workload = Annotated[str, typer.Option(help="sharegpt (dev split), sharegpt:test, or a .jsonl file of {'prompt': ...}.")]
RunWorkload = Annotated[
    str,
    typer.Option(help="sharegpt (dev split), sharegpt:test, a .jsonl file of {'prompt': ...}, or trace:PATH[,arrival=COL,"
                      "prompt=COL,output=COL]: a CSV or JSONL trace's arrivals and lengths, each answer exactly its "
                      "output length (ignore_eos), prompts its texts or synthetic ones of its prompt token counts."),
]
MaxTokens = Annotated[int, typer.Option(help="Answer length cap per request.")]
MaxPromptTokens = Annotated[int, typer.Option(help="Skip prompts longer than this (cl100k tokens).")]
Goodput = Annotated[
    list[str] | None, typer.Option(help="SLOs for goodput, NAME:MS with NAME in ttft, tpot, e2el (repeatable).")
]
Burstiness = Annotated[float, typer.Option(help="Gamma shape of the inter-arrival gaps: 1 Poisson, <1 burstier.")]
Seed = Annotated[int, typer.Option(help="Seed of the prompt sample and the arrival times.")]
Model = Annotated[str | None, typer.Option(help="Model name; default: the server's first at /v1/models.")]


def _goodput(specs: list[str] | None) -> list[str] | None:
    """Accepts `--goodput ttft:500 --goodput e2el:2000` and `--goodput "ttft:500 e2el:2000"`."""
    from lengthwise.core.records import parse_goodput

    if not specs:
        return None
    flat = [s for spec in specs for s in spec.split()]
    try:
        parse_goodput(flat)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--goodput") from None
    return flat


@contextmanager
def _clear_errors() -> Iterator[None]:
    """A bad input or a failed server start ends the command with one red line, not a traceback."""
    try:
        yield
    except (ValueError, RuntimeError, OSError) as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from None


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Server root, e.g. http://127.0.0.1:8000 (engine or gateway).")] = None,
    model: Model = None,
    endpoint: Annotated[str, typer.Option(help="chat or completions.")] = "chat",
    workload: RunWorkload = "sharegpt",
    n: Annotated[int | None, typer.Option("--n", help="Number of requests (default 100; a trace's own count).")] = None,
    rate: Annotated[
        float, typer.Option(help="Mean arrival rate, req/s (inf: all at once; a trace's own timing).")
    ] = math.inf,
    burstiness: Burstiness = 1.0,
    trace: Annotated[
        str | None,
        typer.Option(help="Arrival times only from a CSV or JSONL trace (PATH[,arrival=COL]); --rate rescales it."),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Answer length cap per request (default 256; a trace's lengths uncapped).")
    ] = None,
    max_prompt_tokens: MaxPromptTokens = 512,
    seed: Seed = 0,
    goodput: Goodput = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer token for the server.")] = None,
    out: Annotated[Path | None, typer.Option(help="Save the config and per-request records as JSON.")] = None,
) -> None:
    """Replay prompts at a rate, or a trace's arrivals and lengths, stream every answer, print the `vllm bench serve` table."""
    if ctx.invoked_subcommand is not None:
        return
    import asyncio

    from lengthwise.bench.loadgen import Target, replay
    from lengthwise.bench.plan import run_plan
    from lengthwise.bench.runfile import BenchRun, save_run
    from lengthwise.bench.services import cpu_per_request, gateway_cpu
    from lengthwise.bench.table import serving_table
    from lengthwise.core.openai_server import served_model
    from lengthwise.core.records import summarize

    if url is None:
        raise typer.BadParameter("give the server to load with --url (or use a subcommand: compare, report)", param_hint="--url")
    if endpoint not in ("chat", "completions"):
        raise typer.BadParameter("chat or completions", param_hint="--endpoint")
    slos = _goodput(goodput)
    with _clear_errors():
        plan = run_plan(workload, n, rate=rate, burstiness=burstiness, arrivals_from=trace, max_tokens=max_tokens,
                        max_prompt_tokens=max_prompt_tokens, seed=seed)  # fmt: skip
        model = model or served_model(url)
        target = Target(url, model, endpoint=endpoint, api_key=api_key)  # type: ignore[arg-type]
        before = gateway_cpu(url)
        records = asyncio.run(replay(plan, target))
        gateway_cpu_s = cpu_per_request(before, gateway_cpu(url))
    summary = summarize(records, goodput=slos)
    console.print(serving_table(summary))
    if gateway_cpu_s is not None:  # a lengthwise gateway: what it cost besides the engine
        console.print(f"gateway CPU per request: {1e3 * gateway_cpu_s:.2f} ms")
    errors = [r.error for r in records if r.error]
    if errors:
        console.print(f"[yellow]{len(errors)} failed[/yellow], e.g. {errors[0]}")
    if out is not None:
        config = {
            "url": url, "model": model, "endpoint": endpoint, "workload": workload, "n": len(plan), "rate": rate,
            "burstiness": burstiness, "trace": trace, "max_tokens": max_tokens,
            "max_prompt_tokens": max_prompt_tokens, "seed": seed, "goodput": slos, "summary": summary,
            "gateway_cpu_s_per_request": gateway_cpu_s,
        }  # fmt: skip
        console.print(f"saved {save_run(out, BenchRun(config, records))}")


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_comparison(out_dir: Path, goodput: list[str] | None) -> Path:
    """Rebuild the report of one scenario folder, print its tables and per-round ratios; return report.md."""
    from lengthwise.bench import report as rp
    from lengthwise.bench.ratios import METRICS
    from lengthwise.bench.resumes import resume_header, resume_rows

    runs, meta = rp.load_results(out_dir)
    report = rp.write_report(out_dir, runs, meta, goodput)
    items = rp.arm_runs(runs, goodput)
    ratios = rp.arm_ratios(items)
    scenario = f"{meta['scenario']}: " if meta.get("scenario") else ""
    console.print(_table(f"{scenario}arm / FCFS, paired by prompt: estimate [95% CI]", ["arm", *METRICS], rp.ratio_rows(ratios)))
    first_gateway, versus = rp.gateway_ratios(items)
    if first_gateway is not None:
        console.print(_table(f"{scenario}arm / {first_gateway}, paired by prompt: estimate [95% CI]", ["arm", *METRICS],
                             rp.ratio_rows(versus)))  # fmt: skip
    resumes = resume_rows([(i.round, i.arm, i.run) for i in items], rp.BASELINE)
    if resumes:
        console.print(_table(f"{scenario}preemption and resumes", resume_header(rp.BASELINE), resumes))
    console.print(_table(f"{scenario}mean over rounds [min–max]", ["arm", *(t for _, t, _ in rp.COLUMNS)], rp.arm_table_rows(items)))
    fairness = rp.arm_table_rows(items, rp.FAIRNESS)
    console.print(_table(f"{scenario}fairness, mean over rounds", ["arm", *(t for _, t, _ in rp.FAIRNESS)], fairness))
    console.print(_table(f"{scenario}each run", ["round", "arm", *rp.RUN_COLUMNS], rp.round_table_rows(items)))
    for name, values in rp.headline(items, ratios).items():
        console.print(f"{name}: " + ", ".join(f"{v:.2f}" for v in values) + " (per round)")
    console.print(f"report: {report}")
    return report


def scenario_folders(out_dir: Path) -> list[Path]:
    """`out_dir` itself if it holds one comparison, else its scenario folders that do."""
    if (out_dir / "comparison.json").exists():
        return [out_dir]
    folders = sorted(p.parent for p in out_dir.glob("*/comparison.json"))
    if not folders:
        raise ValueError(f"{out_dir}: no comparison.json in it or in a folder under it")
    return folders


@bench_app.command()
def report(
    out_dir: Annotated[Path, typer.Argument(help="A folder written by `lengthwise bench compare`.")],
    goodput: Goodput = None,
) -> None:
    """Rebuild the report and plots of a comparison (each scenario's, given their parent) from its saved runs."""
    with _clear_errors():
        for folder in scenario_folders(out_dir):
            print_comparison(folder, _goodput(goodput))


@contextmanager
def _engine(url: str | None, port: int, max_num_seqs: int, keep: bool, omp_threads_bind: str | None) -> Iterator[str]:
    """The engine URL given, or the embedded engine on `port` (started if needed, stopped if we started it)."""
    if url is not None:
        yield url
        return
    from lengthwise.engine import server
    from lengthwise.engine.progress import Progress

    already = server.find(port) is not None
    config = server.EngineConfig(port=port, max_num_seqs=max_num_seqs, omp_threads_bind=omp_threads_bind)
    handle = server.start(config, progress=Progress(console))
    try:
        yield handle.url
    finally:
        if not (already or keep):
            console.print(f"stopping the engine on port {port} (keep it with --keep-engine)")
            server.stop(port)


@bench_app.command()
def compare(
    url: Annotated[
        str | None, typer.Option(help="A running engine's root URL; default: start the embedded engine.")
    ] = None,
    model: Model = None,
    workload: Workload = "sharegpt",
    n: Annotated[int, typer.Option("--n", help="Number of prompts (the most, with --budget-minutes).")] = 60,
    max_tokens: MaxTokens = 128,
    max_prompt_tokens: MaxPromptTokens = 512,
    arrivals: Annotated[
        list[str] | None,
        typer.Option(help="burst (every request at t = 0) or poisson (at --load or --rate); repeatable: "
                     "one scenario each, in its own folder under --out."),
    ] = None,
    load: Annotated[float, typer.Option(help="Arrival rate as a fraction of the capacity measured by calibration.")] = 0.9,
    rate: Annotated[float | None, typer.Option(help="Arrival rate in req/s (overrides --load).")] = None,
    burstiness: Burstiness = 1.0,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds per scenario: A B C, C B A, B C A, ...")] = 1,
    budget_minutes: Annotated[
        float | None,
        typer.Option(help="Fit the prompt count to this many minutes from now, from the capacity a small "
                     "calibration burst measures."),
    ] = None,
    cpu_layout: Annotated[
        str, typer.Option(help="split (default): the embedded engine's threads on all cores but the first, the "
                          "load generator and gateways pinned to the first; shared: engine threads on every core "
                          "(measured 3x slower beside any busy process: docs/BENCHMARK.md).")
    ] = "split",
    predictor: Annotated[
        list[str] | None, typer.Option(help="Predictor spec of a gateway arm (repeatable; the first is 'guided'); default: the gateway's.")
    ] = None,
    gateway_arg: Annotated[
        list[str] | None,
        typer.Option(help="Gateway arguments for the guided arms, replacing '--engine vllm --mode priority' (the gateway's default policy; plus '--backend-seats N' with the embedded engine's --max-num-seqs N) (repeatable)."),
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option(help="A gateway arm of its own, NAME=GATEWAY ARGS (split as a shell would), e.g. "
                     "'srpt=--engine vllm --mode queue --max-inflight 4 --policy srpt --preempt margin=2'; "
                     "repeatable, replacing the arms of --predictor and --gateway-arg; the first is the one "
                     "the report compares the others with."),
    ] = None,
    no_oracle: Annotated[bool, typer.Option("--no-oracle", help="Leave the oracle arm out.")] = False,
    goodput: Goodput = None,
    seed: Seed = 0,
    engine_port: Annotated[int, typer.Option(help="Port of the embedded engine when no --url is given.")] = 8200,
    max_num_seqs: Annotated[int, typer.Option(help="The embedded engine's --max-num-seqs (small: requests queue).")] = 2,
    keep_engine: Annotated[bool, typer.Option(help="Leave an engine this command started running (faster reruns).")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the calibration and a folder per scenario (runs, report, plots).")] = Path("runs/compare"),
) -> None:
    """The same prompts and arrival times through FCFS, LLM-guided and oracle scheduling, in rounds."""
    from lengthwise.bench.compare import Settings, custom_arms, default_gateway_args, run_compare, standard_arms
    from lengthwise.bench.prompts import load_prompts
    from lengthwise.core.openai_server import served_model
    from lengthwise.bench.cpus import LAYOUTS, cores_for, pinned, usable
    from lengthwise.bench.scenario import KINDS, Scenario
    from lengthwise.gateway.config import DEFAULT_PREDICTOR

    started = time.monotonic()
    if rounds < 1 or n < 2 or not 0 < load:
        raise typer.BadParameter("need --rounds >= 1, --n >= 2 and --load > 0")
    kinds = list(dict.fromkeys(arrivals or ["poisson"]))
    if not set(kinds) <= set(KINDS) or cpu_layout not in LAYOUTS:
        raise typer.BadParameter(f"--arrivals takes {', '.join(KINDS)}; --cpu-layout takes {', '.join(LAYOUTS)}")
    if budget_minutes is not None and not budget_minutes > 0:
        raise typer.BadParameter("a positive number of minutes", param_hint="--budget-minutes")
    slos = _goodput(goodput)
    scenarios = tuple(Scenario(kind, load, rate, burstiness) for kind in kinds)  # type: ignore[arg-type]
    if arm and (predictor or gateway_arg):
        raise typer.BadParameter("--arm gives each gateway arm its arguments: use it without --predictor and --gateway-arg")
    try:
        arms = custom_arms(arm) if arm else standard_arms(
            predictor or [DEFAULT_PREDICTOR],
            tuple(gateway_arg) if gateway_arg else default_gateway_args(max_num_seqs if url is None else None),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--arm") from None
    if no_oracle:
        arms = [a for a in arms if not a.oracle]
    if usable(cpu_layout) != cpu_layout:  # type: ignore[arg-type]
        console.print("[yellow]--cpu-layout split needs two cores and this process has one: using shared")
        cpu_layout = "shared"
    with _clear_errors():
        cores = cores_for(cpu_layout)  # type: ignore[arg-type]
        prompts = load_prompts(workload, n, seed, max_prompt_tokens)
        out.mkdir(parents=True, exist_ok=True)
        # Pinned after the engine's start, so that only the client is.
        with _engine(url, engine_port, max_num_seqs, keep_engine, cores.engine_bind) as engine_url, pinned(cores):
            settings = Settings(
                engine_url=engine_url, model=model or served_model(engine_url), prompts=tuple(prompts),
                max_tokens=max_tokens, out_dir=out, scenarios=scenarios, rounds=rounds, seed=seed,
                deadline=None if budget_minutes is None else started + budget_minutes * 60, cpu_layout=cpu_layout,
            )  # fmt: skip
            comparisons = run_compare(settings, arms, console)
        for comparison in comparisons:
            print_comparison(comparison.folder, slos)
        console.print(f"took {(time.monotonic() - started) / 60:.1f} min")
