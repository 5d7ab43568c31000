"""`lengthwise sim`: simulate policies on a continuous-batching engine model.

Subcommands: `run` (one load, several policy arms, a table), `sweep` (latency
against load, a PNG), `os` (the seed's FCFS/RR/SRT example as Gantt charts),
`profile` (measure a real engine's step times into a cost profile),
`validate` (replay a measured run and compare mean E2E latency), `advise`
(which policy for a trace, in a report: `lengthwise.sim.advise`) and `cluster`
(N engines behind a router: `lengthwise.sim.cluster`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lengthwise.core.policy import DEFAULT_POLICY
from lengthwise.sim.advise_cli import advise
from lengthwise.sim.cluster_cli import cluster
from lengthwise.sim.options import (
    BlockSize, Blocks, Budget, MaxSeqs, Scenario, clear_errors, console, progress_bar, run_with_progress, with_scenario,
)  # fmt: skip

if TYPE_CHECKING:
    from lengthwise.sim.experiment import ArmResult

sim_app = typer.Typer(
    help="Simulate scheduling policies on a model of a continuous-batching engine (vLLM v1 semantics).",
    no_args_is_help=True,
)

ROWS: tuple[tuple[str, str, float], ...] = (
    ("mean E2E (s)", "mean_e2el_ms", 1e-3),
    ("p50 E2E (s)", "median_e2el_ms", 1e-3),
    ("p90 E2E (s)", "p90_e2el_ms", 1e-3),
    ("p99 E2E (s)", "p99_e2el_ms", 1e-3),
    ("mean TTFT (s)", "mean_ttft_ms", 1e-3),
    ("p99 TTFT (s)", "p99_ttft_ms", 1e-3),
    ("mean TPOT (ms)", "mean_tpot_ms", 1.0),
    ("mean slowdown", "mean_slowdown", 1.0),
    ("p99 slowdown", "p99_slowdown", 1.0),
    ("max wait (s)", "max_wait_ms", 1e-3),
    ("p99 E2E longest 10% (s)", "p99_e2el_longest10_ms", 1e-3),
    ("Jain fairness (slowdown)", "jain_fairness", 1.0),
    ("throughput (req/s)", "request_throughput", 1.0),
    ("output tok/s", "output_throughput", 1.0),
    ("goodput (req/s)", "request_goodput", 1.0),
    ("prefix cache hit rate", "engine_prefix_cache_hit_rate", 1.0),
    ("query prefix reuse", "query_prefix_reuse", 1.0),
    ("preemptions", "preemptions", 1.0),
    ("resume prefill tokens (recomputed)", "resume_prefill_tokens", 1.0),
    ("resume share of all prefill", "resume_prefill_share", 1.0),
    ("resumed tokens found cached", "resume_cached_share", 1.0),
    ("decode-pool busy (colocated: all engines)", "decode_busy", 1.0),
    ("decode-pool seat share", "decode_seat_share", 1.0),
    ("prefill-pool busy", "prefill_busy", 1.0),
    ("KV moved (GB)", "kv_bytes_moved", 1e-9),
    ("mean KV transfer (ms)", "mean_kv_transfer_ms", 1.0),
    ("simulated req/s (wall)", "sim_requests_per_s", 1.0),
)


def _table(title: str, columns: Sequence[tuple[str, dict[str, float]]]) -> Table:
    """Metrics side by side, one (name, metrics) column each, and the second column over the first."""
    table = Table(title=title)
    table.add_column("metric")
    for name, _ in columns:
        table.add_column(name, justify="right")
    if len(columns) > 1:
        table.add_column(f"{columns[1][0]} / {columns[0][0]}", justify="right")
    for label, key, scale in ROWS:
        if not any(key in metrics for _, metrics in columns):
            continue
        values = [metrics.get(key, math.nan) * scale for _, metrics in columns]
        cells = [f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}" for v in values]
        if len(columns) > 1:
            cells.append(f"{values[1] / values[0]:.3f}" if values[0] else "-")
        table.add_row(label, *cells)
    return table


def _bucket_table(results: Sequence[ArmResult]) -> Table:
    table = Table(title="mean E2E (s) by output length (tokens)")
    table.add_column("bucket")
    table.add_column("requests", justify="right")
    from lengthwise.core.records import summarize_by_bucket

    by_arm = [summarize_by_bucket(r.result.records) for r in results]
    for r in results:
        table.add_column(r.arm.spec, justify="right")
    for bucket in by_arm[0]:
        cells = [f"{b[bucket]['mean_e2el_ms'] / 1000:,.2f}" for b in by_arm]
        table.add_row(bucket, str(by_arm[0][bucket]["completed"]), *cells)
    return table


@sim_app.command("run")
@with_scenario()
def run(
    *,
    policy: Annotated[
        list[str] | None,
        typer.Option(help="Policy arm (repeatable): a spec such as sst+deadline:k=1.5 or sjf; append @oracle for "
                         "true lengths. Default: fcfs, the default policy, sst@oracle."),
    ] = None,
    scenario: Scenario,
    load: Annotated[float, typer.Option(help="Arrival rate as a fraction of the engine's FCFS capacity.")] = 0.9,
    rate: Annotated[float | None, typer.Option(help="Arrival rate (req/s); overrides --load.")] = None,
    prefix_caching: Annotated[bool, typer.Option(help="Prefix caching (LRU eviction).")] = True,
    preemptive: Annotated[bool, typer.Option(help="Engine preempts: policy quanta (rr, mlfq) and arrivals.")] = False,
    preempt_threshold: Annotated[
        float, typer.Option(help="Preemptive engine: an arrival preempts when its key + this <= the worst running key.")
    ] = math.inf,
    preempt: Annotated[
        str | None,
        typer.Option(help="The gateway's preemption, as `lengthwise serve --preempt SPEC` (margin=2,max=1,early=0.25,"
                         "check_every=16; '' for those defaults): a running request whose re-predicted remaining "
                         "service exceeds margin x the waiting head's is aborted and resumed later as a continuation "
                         "(a prefill of prompt + generated tokens, hitting the prefix cache). Not with --preemptive."),
    ] = None,
    query: Annotated[bool, typer.Option(help="Simulate the self-prediction query before each request.")] = False,
    postfix_tokens: Annotated[int, typer.Option(help="Prediction query: postfix length (tokens).")] = 60,
    query_tokens: Annotated[int, typer.Option(help="Prediction query: tokens it generates.")] = 4,
    query_delay: Annotated[float, typer.Option(help="Prediction query: gateway delay before the real request (s).")] = 0.0,
    query_window: Annotated[
        int, typer.Option(help="Prediction query: 0 queries every request on arrival; K queries only the K best "
                               "waiting requests (ordered until then by --fallback-predictions), so that each is "
                               "admitted before its prefix is evicted.")
    ] = 0,
    fallback_predictions: Annotated[
        str, typer.Option(help="With --query-window: the cheap predictions waiting requests are ordered by.")
    ] = "lognormal:tau=0.3",
    goodput: Annotated[list[str] | None, typer.Option(help="SLO NAME:MS, NAME in ttft, tpot, e2el (repeatable).")] = None,
    buckets: Annotated[bool, typer.Option(help="Also show mean E2E per output-length bucket.")] = True,
    save: Annotated[Path | None, typer.Option(help="Write each arm's records to SAVE-<arm>.jsonl and metrics to SAVE.json.")] = None,
    disaggregated: Annotated[
        str | None,
        typer.Option(help="Disaggregated prefill, e.g. prefill=2,decode=2,kv_bandwidth=50,kv_latency=1 (GB/s, ms; "
                         "kv_bytes_per_token= overrides the profile's model): each arm runs as P/D (the length read "
                         "from the prefill pass of prompt + postfix, decode admission and instance choice by it) and "
                         "colocated on prefill+decode engines (with --query, after the self-prediction query); "
                         "--load is then a fraction of those colocated engines' FCFS capacity."),
    ] = None,
) -> None:
    """Simulate one workload at one load under each policy arm (same arrivals) and print a table."""
    from lengthwise.core.preempt import PreemptSettings
    from lengthwise.core.records import parse_goodput, save_records
    from lengthwise.sim.disaggregated import Disaggregation
    from lengthwise.sim.engine import QueryConfig
    from lengthwise.sim.experiment import Arm, scale_to_load
    from lengthwise.workload.arrivals import rescale_to_rate

    with clear_errors():
        arms = [Arm(p) for p in (policy or ["fcfs", DEFAULT_POLICY, "sst@oracle"])]
        for arm in arms:
            arm.validate()
        slos = [s for g in goodput or [] for s in g.split()] or None
        if slos:
            parse_goodput(slos)
        config = scenario.engine(
            prefix_caching=prefix_caching, preemptive=preemptive, preempt_threshold=preempt_threshold,
            preempt=None if preempt is None else PreemptSettings.parse(preempt),
            query=QueryConfig(postfix_tokens, query_tokens, query_delay, query_window) if query else None,
        )  # fmt: skip
        cost = scenario.cost()
        split = None if disaggregated is None else Disaggregation.parse(disaggregated)
        engines = 1 if split is None else split.instances
        w, title = scenario.build_workload()
        if rate is not None:
            w, where = w.with_arrivals(rescale_to_rate(w.arrival, rate)), f"{rate:g} req/s"
        else:
            w, cap = scale_to_load(w, load, config, cost, engines)
            where = f"load {load:g} of FCFS capacity {cap:.2f} req/s" + (f" ({engines} engines)" if split else "")
        if split is not None:
            _compare_deployments(w, arms, config, cost, split, scenario, postfix_tokens, f"{title}, {where}", save)
            return
        fallback = fallback_predictions if config.query and config.query.window else None
        results = run_with_progress(w, arms, config, cost, scenario.predictions, scenario.seed, slos, fallback)
        console.print(_table(f"{title}, {where}; predictions {scenario.predictions}", [(r.arm.spec, r.metrics) for r in results]))
        if buckets:
            console.print(_bucket_table(results))
        if save is not None:
            for r in results:
                save_records(r.result.records, save.with_name(f"{save.stem}-{_slug(r.arm.spec)}.jsonl"))
            save.write_text(json.dumps({r.arm.spec: r.metrics for r in results} | {"config": asdict(config)}, indent=1))
            console.print(f"saved {save}")


def _compare_deployments(w, arms, config, cost, split, scenario, postfix_tokens, title, save) -> None:  # noqa: ANN001
    """`run --disaggregated`: each arm as P/D and colocated, one table (and SAVE.json)."""
    from lengthwise.sim.disaggregated import compare_deployments

    with progress_bar(len(w)) as (bar, task):

        def on_column(name: str) -> Callable[[int], None]:
            bar.update(task, completed=0, description=name)
            return lambda done: bar.update(task, completed=done)

        columns = compare_deployments(
            w, arms, replace(config, query=None), cost, split, scenario.predictions, seed=scenario.seed,
            postfix_tokens=postfix_tokens, query=config.query, progress=on_column,
        )  # fmt: skip
    console.print(_table(f"{title}; {split}; predictions {scenario.predictions}", columns))
    if save is not None:
        save.write_text(json.dumps(dict(columns) | {"config": asdict(config), "disaggregation": asdict(split)}, indent=1))
        console.print(f"saved {save}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)


@sim_app.command("sweep")
@with_scenario()
def sweep(
    *,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("sim-sweep.png"),
    load_list: Annotated[str, typer.Option("--loads", help="Comma-separated loads (fractions of FCFS capacity).")] = (
        "0.5,0.6,0.7,0.8,0.9,0.95"
    ),
    aging: Annotated[str, typer.Option(help="The aging arm's spec.")] = "sjf+aging:rate=30",
    scenario: Scenario,
) -> None:
    """Latency against load for FCFS, predicted SJF, the default policy, the clairvoyant service-time order
    and aging; a table and a PNG."""
    from lengthwise.sim.experiment import Arm, loads, scale_to_load
    from lengthwise.sim.plots import sweep_png

    with clear_errors():
        arms = [Arm("fcfs"), Arm("sjf"), Arm(DEFAULT_POLICY), Arm("sst@oracle"), Arm(aging)]
        arms[-1].validate()
        config = scenario.engine()
        cost = scenario.cost()
        base, title = scenario.build_workload()
        grid = loads(load_list)
        series: dict[str, dict[str, list[float]]] = {a.spec: {} for a in arms}
        table = Table(title=f"mean E2E (s) against load; {title}, predictions {scenario.predictions}")
        table.add_column("load")
        for a in arms:
            table.add_column(a.spec, justify="right")
        for load in grid:
            w, _ = scale_to_load(base, load, config, cost)
            results = run_with_progress(w, arms, config, cost, scenario.predictions, scenario.seed, None)
            for r in results:
                for key, value in r.metrics.items():
                    series[r.arm.spec].setdefault(key, []).append(value)
            table.add_row(f"{load:g}", *(f"{r.metrics['mean_e2el_ms'] / 1000:,.2f}" for r in results))
        console.print(table)
        png_title = f"{title}, predictions {scenario.predictions}, max_num_seqs {scenario.max_num_seqs}"
        console.print(f"wrote {sweep_png(grid, series, out, png_title)}")


@sim_app.command("os")
def os_example(
    out: Annotated[Path | None, typer.Option(help="PNG of the Gantt charts.")] = Path("sim-os.png"),
) -> None:
    """The seed's T1–T4 example under FCFS, round robin and SRT: ASCII and PNG Gantt charts."""
    from lengthwise.sim.oslab import SEED_POLICIES, ascii_gantt, run_seed_example
    from lengthwise.sim.plots import gantt_png

    timelines = [run_seed_example(p) for p in SEED_POLICIES]
    for tl in timelines:
        console.print(ascii_gantt(tl) + "\n")
    if out is not None:
        console.print(f"wrote {gantt_png(timelines, out)}")


@sim_app.command("profile")
def profile_engine(
    url: Annotated[str, typer.Option(help="The engine's root URL, e.g. http://127.0.0.1:8100.")],
    out: Annotated[Path, typer.Option(help="Profile JSON to write.")] = Path("cpu-profile.json"),
    model: Annotated[str | None, typer.Option(help="Model name; default the server's first.")] = None,
    max_num_seqs: Annotated[int, typer.Option(help="The engine's --max-num-seqs (largest batch measured).")] = 4,
    contexts: Annotated[str, typer.Option(help="Prompt lengths for decode batches (tokens).")] = "64,512,1536",
    prefills: Annotated[str, typer.Option(help="Prompt lengths for prefill steps (tokens).")] = "128,512,1024,2048",
    decode_tokens: Annotated[int, typer.Option(help="Tokens generated per decode measurement.")] = 48,
    repeats: Annotated[int, typer.Option(help="Repeats of each measurement (medians are kept).")] = 2,
) -> None:
    """Measure step time against batch size, context and prefill length on a real engine; fit and save."""
    from lengthwise.sim.profiling import ProfilePlan, measure_profile

    with clear_errors():
        plan = ProfilePlan(
            batches=tuple(range(1, max_num_seqs + 1)), contexts=_ints(contexts), prefills=_ints(prefills),
            decode_tokens=decode_tokens, repeats=repeats,
        )  # fmt: skip
        with progress_bar(plan.size) as (bar, task):
            profile = measure_profile(url, plan, model, progress=lambda: bar.advance(task))
        out.write_text(json.dumps(profile, indent=1))
        c = profile["coef"]
        console.print(
            f"fit on {len(profile['samples'])} samples, median relative error {profile['fit_median_rel_error']:.1%}: "
            f"step = {c['c0'] * 1e3:.2f} ms + {c['c_token'] * 1e3:.4f} ms/token + {c['c_seq'] * 1e3:.3f} ms/seq "
            f"+ {c['c_ctx'] * 1e6:.3f} µs/context token + {c['c_pair'] * 1e9:.3f} ns/prefill pair"
        )
        if profile.get("interference"):
            console.print(f"[yellow]warning:[/yellow] {profile['interference']}")
        console.print(f"wrote {out}")


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(x) for x in text.split(",") if x.strip())
    if not values or min(values) < 1:
        raise ValueError(f"expected positive integers, got {text!r}")
    return values


@sim_app.command("validate")
def validate(
    records: Annotated[Path, typer.Argument(help="A measured run (bench JSON or records JSONL) to replay.")],
    profile: Annotated[Path, typer.Option(help="Cost profile of that engine (from `sim profile`).")],
    policy: Annotated[str, typer.Option(help="The policy the measured run used.")] = "fcfs",
    max_num_seqs: MaxSeqs = 4,
    max_batched_tokens: Budget = 2048,
    block_size: BlockSize = 128,
    num_blocks: Blocks = 682,
) -> None:
    """Replay a measured run (same arrivals, prompt and output lengths) and compare mean E2E latency."""
    from lengthwise.sim.engine import EngineConfig
    from lengthwise.sim.experiment import build_cost
    from lengthwise.sim.validation import compare_to_measured

    with clear_errors():
        config = EngineConfig(max_num_seqs, max_batched_tokens, block_size, num_blocks)
        report = compare_to_measured(records, build_cost(profile), config, policy)
        table = Table(title=f"simulated vs measured: {records.name} ({report['requests']} requests, {policy})")
        for col in ("metric", "measured", "simulated", "error"):
            table.add_column(col, justify="right" if col != "metric" else "left")
        for key, (measured, simulated) in report["metrics"].items():
            table.add_row(key, f"{measured:,.1f}", f"{simulated:,.1f}", f"{(simulated - measured) / measured:+.1%}")
        console.print(table)


sim_app.command("advise")(advise)
sim_app.command("cluster")(cluster)
