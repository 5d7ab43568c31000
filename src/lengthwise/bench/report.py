"""The comparison's report: ratios to FCFS with confidence intervals, per-arm, fairness and
per-run tables (the engine's speed in each run), four plots.

Everything is computed from the saved runs (each run's config names its arm and
round, and holds the engine's counters), so a report can be rebuilt from a results
folder alone.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.bench import plots
from lengthwise.bench.ratios import METRICS, PairedRounds, Ratio, ratios
from lengthwise.bench.resumes import resume_header, resume_rows, resume_summary
from lengthwise.core.stats import kendall_tau
from lengthwise.bench.runfile import BenchRun, load_run
from lengthwise.bench.speed import engine_speed, is_outlier, relative_to_round
from lengthwise.core.records import RequestRecord, bucket_label, summarize, summarize_by_bucket

#: (summary key, column title, scale) for the tables; ms keys are shown in seconds, counts (None) as they are.
COLUMNS: tuple[tuple[str, str, float | None], ...] = (
    ("mean_e2el_ms", "mean E2E s", 1e-3),
    ("median_e2el_ms", "p50 E2E s", 1e-3),
    ("p99_e2el_ms", "p99 E2E s", 1e-3),
    ("mean_ttft_ms", "mean TTFT s", 1e-3),
    ("p99_ttft_ms", "p99 TTFT s", 1e-3),
    ("mean_tpot_ms", "mean TPOT ms", 1.0),
    ("output_throughput", "output tok/s", 1.0),
    ("failed", "failed", None),
)
#: Who waits: the longest wait (TTFT where the engine's admission time is unknown), the p99 of
#: E2E ÷ own service time, and the tail of the requests with the longest answers and prompts.
FAIRNESS: tuple[tuple[str, str, float | None], ...] = (
    ("max_wait_ms", "max wait s", 1e-3),
    ("p99_slowdown", "p99 slowdown", 1.0),
    ("p99_e2el_longest10_ms", "p99 E2E, 10% longest outputs s", 1e-3),
    ("p99_e2el_longest10_prompt_ms", "p99 E2E, 10% longest prompts s", 1e-3),
)
BASELINE, GUIDED, ORACLE = "fcfs", "guided", "oracle"


@dataclass(frozen=True)
class ArmRun:
    arm: str
    round: int
    run: BenchRun
    summary: dict[str, float]


def arm_runs(runs: Sequence[BenchRun], goodput: Sequence[str] | None = None) -> list[ArmRun]:
    return [
        ArmRun(str(r.config["arm"]), int(r.config.get("round", 1)), r, summarize(r.records, goodput=goodput))
        for r in runs
    ]


def arms_in_order(items: Sequence[ArmRun]) -> list[str]:
    """Arms in the order of their first run (round 1 runs A B C)."""
    return list(dict.fromkeys(i.arm for i in items))


def aggregate(items: Sequence[ArmRun], key: str) -> dict[str, tuple[float, float, float]]:
    """Per arm: (mean over rounds, min, max) of one summary key."""
    out = {}
    for arm in arms_in_order(items):
        v = np.array([i.summary.get(key, np.nan) for i in items if i.arm == arm], dtype=float)
        out[arm] = (float(np.mean(v)), float(np.min(v)), float(np.max(v)))
    return out


def arm_ratios(items: Sequence[ArmRun], baseline: str = BASELINE) -> dict[str, dict[str, Ratio]]:
    """Per arm but the baseline: each metric of `ratios.METRICS` relative to the baseline over the rounds both ran."""
    by = {(i.round, i.arm): i for i in items}
    out = {}
    for arm in arms_in_order(items):
        rounds = sorted(r for r, a in by if a == arm and (r, baseline) in by)
        if arm == baseline or not rounds:
            continue
        pairs = [(by[r, arm], by[r, baseline]) for r in rounds]
        out[arm] = ratios(PairedRounds(
            [a.run.records for a, _ in pairs], [b.run.records for _, b in pairs],
            [a.summary["output_throughput"] for a, _ in pairs], [b.summary["output_throughput"] for _, b in pairs],
        ))  # fmt: skip
    return out


def gateway_ratios(items: Sequence[ArmRun]) -> tuple[str | None, dict[str, dict[str, Ratio]]]:
    """The first gateway arm (round 1 runs the arms in the order given), and every later gateway arm's
    ratios to it (`arm_ratios`); None and none with fewer than two gateway arms."""
    gateways = [arm for arm in arms_in_order(items) if any(i.run.config.get("gateway_args") for i in items if i.arm == arm)]
    if len(gateways) < 2:
        return None, {}
    return gateways[0], arm_ratios([i for i in items if i.arm in gateways], baseline=gateways[0])


def ratio_rows(table: Mapping[str, Mapping[str, Ratio]]) -> list[list[str]]:
    """One row per arm: `0.83× [0.76, 0.91]` per metric."""
    return [[arm, *(by_metric[m].text() for m in METRICS)] for arm, by_metric in table.items()]


def headline(items: Sequence[ArmRun], table: Mapping[str, Mapping[str, Ratio]]) -> dict[str, list[float]]:
    """Per round: each arm's ratios to FCFS (from `arm_ratios`), and its share of the oracle's gain."""
    out = {f"{arm} / fcfs {m}": list(r.per_round) for arm, by_metric in table.items() for m, r in by_metric.items()}
    rounds = sorted({i.round for i in items})
    by = {(i.round, i.arm): i.summary for i in items}
    for arm in arms_in_order(items):
        if arm in (BASELINE, ORACLE):
            continue
        for r in rounds:
            base, s = by.get((r, BASELINE)), by.get((r, arm))
            if base is None or s is None:
                continue
            oracle = by.get((r, ORACLE))
            # A share of a "gain" the oracle did not make (it was no faster than FCFS) means nothing.
            if oracle is not None and base["mean_e2el_ms"] > oracle["mean_e2el_ms"]:
                gain = (base["mean_e2el_ms"] - s["mean_e2el_ms"]) / (base["mean_e2el_ms"] - oracle["mean_e2el_ms"])
                out.setdefault(f"{arm}: share of the oracle's gain", []).append(gain)
    return out


def _fmt(value: float, scale: float | None) -> str:
    if scale is None:
        return f"{value:g}"
    v = value * scale
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def arm_table_rows(
    items: Sequence[ArmRun], columns: Sequence[tuple[str, str, float | None]] = COLUMNS
) -> list[list[str]]:
    """Per arm: the mean over rounds of each column, with [min–max] when there are several rounds."""
    aggs = {key: aggregate(items, key) for key, _, _ in columns}
    rows = []
    for arm in arms_in_order(items):
        row = [arm]
        for key, _, scale in columns:
            mean, lo, hi = aggs[key][arm]
            row.append(_fmt(mean, scale) + (f" [{_fmt(lo, scale)}–{_fmt(hi, scale)}]" if hi > lo else ""))
        rows.append(row)
    return rows


#: The per-run table's columns besides round and arm.
RUN_COLUMNS = [*(title for _, title, _ in COLUMNS[:7]), "engine tok/s", "ITL ms", "engine vs round"]


def round_table_rows(items: Sequence[ArmRun]) -> list[list[str]]:
    """One row per run, in the order they ran, with the engine's speed and how far it is from its round's median."""
    speeds = [engine_speed(i.run) for i in items]
    deviations = relative_to_round([i.round for i in items], [s.tokens_per_busy_s for s in speeds])
    return [
        [str(i.round), i.arm, *(_fmt(i.summary[key], scale) for key, _, scale in COLUMNS[:7]),
         f"{speed.tokens_per_busy_s:.1f}", f"{speed.mean_itl_ms:.0f}",
         f"{deviation:+.0%}" + (" ⚠" if is_outlier(deviation) else "")]
        for i, speed, deviation in zip(items, speeds, deviations, strict=True)
    ]  # fmt: skip


def _length_edges(max_tokens: int) -> list[float]:
    return [0, max_tokens // 8, max_tokens // 4, max_tokens // 2, max_tokens, float("inf")]


def _queue_curve(records: Sequence[RequestRecord]) -> tuple[np.ndarray, np.ndarray]:
    """Requests sent and still waiting for their first token, as a step function of time."""
    events = [(r.arrival, 1) for r in records]
    events += [(r.first_token_time if r.first_token_time is not None else (r.finish_time or r.arrival), -1) for r in records]
    events.sort(key=lambda e: (e[0], -e[1]))  # an arrival before a departure at the same instant
    t = np.array([e[0] for e in events]) - min(r.arrival for r in records)
    return t, np.cumsum([e[1] for e in events])


def _predictions(items: Sequence[ArmRun]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for arm in arms_in_order(items):
        pairs = [(r.predicted_tokens, r.output_tokens) for i in items if i.arm == arm for r in i.run.succeeded if r.predicted_tokens is not None]
        if pairs:
            p, a = np.array(pairs, dtype=float).T
            out[arm] = (p, a)
    return out


def prediction_quality(items: Sequence[ArmRun]) -> dict[str, dict[str, float]]:
    """Per gateway arm: Kendall tau and mean absolute error of predicted vs actual tokens."""
    out = {}
    for arm, (p, a) in _predictions(items).items():
        out[arm] = {"n": int(p.size), "kendall_tau": kendall_tau(p, a), "mae_tokens": float(np.mean(np.abs(p - a)))}
    return out


def scheduled_by(items: Sequence[ArmRun]) -> dict[str, Counter[str]]:
    """Per gateway arm: how many requests each predictor scheduled (an auto arm's choices over time)."""
    out: dict[str, Counter[str]] = {}
    for i in items:
        names = [r.predictor for r in i.run.succeeded if r.predictor]
        if names:
            out.setdefault(i.arm, Counter()).update(names)
    return out


def _tau_text(tau: float) -> str:
    """Kendall's tau is undefined when every prediction is the same: the arm was scheduled by arrival."""
    return "no ranking (every prediction the same: arrival order)" if math.isnan(tau) else f"Kendall tau {tau:.3f}"


def make_plots(items: Sequence[ArmRun], out_dir: Path, max_tokens: int) -> dict[str, Path]:
    arms = arms_in_order(items)
    pooled = {arm: [r for i in items if i.arm == arm for r in i.run.succeeded] for arm in arms}
    edges = _length_edges(max_tokens)
    buckets = {arm: summarize_by_bucket(recs, edges=edges) for arm, recs in pooled.items()}
    labels = [bucket_label(lo, hi) for lo, hi in zip(edges, edges[1:], strict=False)]
    labels = [b for b in labels if any(b in buckets[a] for a in arms)]
    means = {a: [buckets[a][b]["mean_e2el_ms"] / 1000 if b in buckets[a] else 0.0 for b in labels] for a in arms}
    first_round = min(i.round for i in items)
    curves = {i.arm: _queue_curve(i.run.records) for i in items if i.round == first_round and i.run.records}
    paths = {
        "e2e_cdf": plots.e2e_cdf({a: np.array([r.e2el for r in recs]) for a, recs in pooled.items()}, out_dir / "e2e_cdf.png"),
        "latency_by_length": plots.latency_by_length(labels, means, out_dir / "latency_by_length.png"),
        "queue": plots.queue_over_time(curves, out_dir / "queue_over_time.png"),
    }
    predictions = _predictions(items)
    if predictions:
        paths["predicted_vs_actual"] = plots.predicted_vs_actual(predictions, out_dir / "predicted_vs_actual.png")
    return paths


def _spread(values: Sequence[float]) -> str:
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"{np.mean(values):.2f} (rounds: {each}; spread {max(values) - min(values):.2f})"


def _failure_lines(items: Sequence[ArmRun]) -> list[str]:
    """Failed requests are left out of every latency figure, which flatters the arm that lost them: say so."""
    failed = [i for i in items if i.summary["failed"]]
    if not failed:
        return []
    lines = ["**Failed requests** (left out of the latency figures above, so those arms look better than they are):", ""]
    for i in failed:
        errors = Counter(_error_kind(r.error) for r in i.run.records if r.error)
        lines.append(f"- round {i.round}, {i.arm}: {int(i.summary['failed'])} failed ({', '.join(f'{n}× {e}' for e, n in errors.most_common())})")
    return [*lines, ""]


def _error_kind(error: str) -> str:
    """'HTTP 503', 'timed out after 1800 s', 'stream error upstream_stream_cut', ..."""
    code = re.search(r'"code": "([^"]+)"', error)
    return error.split(":")[0][:60] + (f" {code.group(1)}" if code else "")


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in meta.items():
        if isinstance(value, Mapping):
            lines.append(f"- {key}:")
            lines += [f"  - {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"- {key}: {value}")
    return lines


RATIOS_NOTE = (
    "Each arm ÷ FCFS, paired prompt by prompt within each round (over the prompts that completed in every "
    "run of both): the metric's mean over rounds for the arm ÷ the same for FCFS; the interval resamples "
    "prompts and rounds (throughput: rounds only, none with one round)."
)
FAIRNESS_NOTE = (
    "Wait is the time to first token (queueing plus prefill, as the client sees it); slowdown is E2E ÷ the "
    "request's own service time (the run's shortest TTFT as its prefill, plus its own decode time)."
)
RESUMES_NOTE = (
    "From the gateway's counters at the end of its run: requests preempted, and the prompt tokens of their "
    "continuations (the original prompt plus the answer so far), of them served from the engine's prefix cache; "
    "extra prefill = the rest, computed again because a run was cut. From the engine's counters around the run: "
    "prompt tokens minus those its prefix cache served, and the difference to FCFS in the same round (which also holds a "
    "gateway's prediction queries to the engine, if it sends any)."
)
SPEED_NOTE = (
    "Engine tok/s: output tokens the engine generated (vLLM's counter, prediction queries included) per "
    "second in which a request of the run was in flight; ⚠: more than 15% from the median of its round."
)


def _versus_lines(first: str | None, versus: Mapping[str, Mapping[str, Ratio]]) -> list[str]:
    if first is None:
        return []
    return [f"## Relative to {first}, the first gateway arm (estimate [95% bootstrap CI])", "",
            RATIOS_NOTE.replace("FCFS", first), "", *_md_table(["arm", *METRICS], ratio_rows(versus)), ""]  # fmt: skip


def _resume_lines(runs: list[tuple[int, str, BenchRun]]) -> list[str]:
    rows = resume_rows(runs, BASELINE)
    if not rows:
        return []
    return ["## Preemption and resumes (each gateway run)", "", RESUMES_NOTE, "",
            *_md_table(resume_header(BASELINE), rows), ""]  # fmt: skip


def write_report(
    out_dir: Path,
    runs: Sequence[BenchRun],
    meta: Mapping[str, Any],
    goodput: Sequence[str] | None = None,
) -> Path:
    """Write report.md, summary.json and the PNGs into `out_dir`; return the report's path."""
    items = arm_runs(runs, goodput)
    if not items:
        raise ValueError("no runs to report")
    max_tokens = int(meta.get("max_tokens") or max(r.output_tokens for i in items for r in i.run.records) or 1)
    pngs = make_plots(items, out_dir, max_tokens)
    table = arm_ratios(items)
    heads = headline(items, table)
    quality = prediction_quality(items)
    first_gateway, versus = gateway_ratios(items)
    per_run = [(i.round, i.arm, i.run) for i in items]
    lines = [
        "# lengthwise: FCFS vs LLM-guided vs oracle" + (f" — {meta['scenario']}" if meta.get("scenario") else ""),
        "",
        *_meta_lines(meta),
        "",
        "## Relative to FCFS (estimate [95% bootstrap CI])",
        "",
        RATIOS_NOTE,
        "",
        *_md_table(["arm", *METRICS], ratio_rows(table)),
        "",
        *_versus_lines(first_gateway, versus),
        *_resume_lines(per_run),
        "## Per arm (mean over rounds, [min–max] across rounds)",
        "",
        *_md_table(["arm", *(title for _, title, _ in COLUMNS)], arm_table_rows(items)),
        "",
        "## Fairness (mean over rounds, [min–max] across rounds)",
        "",
        FAIRNESS_NOTE,
        "",
        *_md_table(["arm", *(title for _, title, _ in FAIRNESS)], arm_table_rows(items, FAIRNESS)),
        "",
        *_failure_lines(items),
        "## Relative to FCFS, per round",
        "",
        *(f"- {k}: {_spread(v)}" for k, v in heads.items()),
        "",
        "## Each run, in the order they ran",
        "",
        SPEED_NOTE,
        "",
        *_md_table(["round", "arm", *RUN_COLUMNS], round_table_rows(items)),
        "",
    ]
    if quality:
        lines += ["## Prediction quality (gateway's predicted tokens vs actual)", ""]
        lines += [f"- {arm}: {_tau_text(q['kendall_tau'])}, MAE {q['mae_tokens']:.0f} tokens over {q['n']} requests"
                  for arm, q in quality.items()]
        lines += [f"- {arm} scheduled by: " + ", ".join(f"{name} {n}" for name, n in counts.most_common())
                  for arm, counts in scheduled_by(items).items()]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({p.name})" for name, p in pngs.items()] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    summary = {
        "meta": dict(meta),
        "runs": [{"arm": i.arm, "round": i.round, "summary": i.summary, "engine_speed": asdict(engine_speed(i.run))}
                 for i in items],
        "ratios": {arm: {m: asdict(r) for m, r in by_metric.items()} for arm, by_metric in table.items()},
        "ratios_to_first_gateway_arm": {"baseline": first_gateway, **{
            arm: {m: asdict(r) for m, r in by_metric.items()} for arm, by_metric in versus.items()}},
        "resumes": resume_summary(per_run),
        "headline": heads,
        "prediction_quality": quality,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return report


def load_results(out_dir: Path) -> tuple[list[BenchRun], dict[str, Any]]:
    """The runs (in the order they ran) and the meta of a comparison folder."""
    meta = json.loads((out_dir / "comparison.json").read_text())
    runs = [load_run(out_dir / "runs" / f"{label}.json") for label in meta.pop("run_order")]
    return runs, meta
