"""The `sim advise` report: the pick and its gateway command, gain and fairness against FCFS per load, plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lengthwise.core.io import atomic_write_text
from lengthwise.sim.advise import CLAIRVOYANT, FAIR_BOUND, FAIRNESS, FCFS, HARM_TOLERANCE, MIN_GAIN, Advice, AtLoad, serve_command

#: (metrics key, column title, scale to the unit shown) of the gain columns.
GAIN: tuple[tuple[str, str, float], ...] = (
    ("mean_e2el_ms", "mean E2E", 1e-3),
    ("median_e2el_ms", "p50 E2E", 1e-3),
    ("p99_e2el_ms", "p99 E2E", 1e-3),
    ("mean_ttft_ms", "mean TTFT", 1e-3),
)


def _scenario_title(s: AtLoad) -> str:
    timing = "The base timing" if s.factor == 1 else f"Arrivals ×{s.factor:g} compressed"
    return f"{timing}: {s.rate:.2f} req/s, load {s.load:.2f} of FCFS capacity"


def _cell(s: AtLoad, spec: str, key: str, floor: float, scale: float) -> str:
    """FCFS's own value (s, or as is for slowdowns); the others as a ratio to it."""
    if spec == FCFS:
        value = s.metrics(spec)[key] * (scale if key.endswith("_ms") else 1.0)
        return f"{value:,.2f} s" if key.endswith("_ms") else f"{value:,.2f}"
    ratio = s.ratio(spec, key, floor)
    over = ratio > FAIR_BOUND and key in {k for k, _, _ in FAIRNESS}
    return f"**{ratio:.2f}×**" if over else f"{ratio:.2f}×"


def scenario_table(s: AtLoad, specs: Sequence[str]) -> str:
    columns = [(k, t, 0.0, scale) for k, t, scale in GAIN] + [(k, t, floor, 1e-3) for k, t, floor in FAIRNESS]
    head = "| policy | " + " | ".join(t for _, t, _, _ in columns) + " |\n|---" + "|---" * len(columns) + "|\n"
    rows = [f"| `{spec}` | " + " | ".join(_cell(s, spec, k, f, sc) for k, _, f, sc in columns) + " |" for spec in specs]
    return head + "\n".join(rows) + "\n"


def summary_table(advice: Advice) -> str:
    """One row per candidate: mean E2E ÷ FCFS and worst fairness ÷ FCFS per load, verdict."""
    factors = [s.factor for s in advice.scenarios]
    head = (
        "| policy | " + " | ".join(f"mean E2E ×{f:g}" for f in factors) + " | "
        + " | ".join(f"worst fairness ×{f:g}" for f in factors) + " | gain | verdict |\n"
        + "|---" * (2 * len(factors) + 3) + "|\n"
    )  # fmt: skip
    rows = []
    for spec in [*advice.candidates, CLAIRVOYANT]:
        means = " | ".join(f"{s.ratio(spec):.3f}" for s in advice.scenarios)
        worst = " | ".join(f"{s.worst_fairness(spec):.2f}" for s in advice.scenarios)
        rows.append(f"| `{spec}` | {means} | {worst} | {advice.gain(spec):+.1%} | {_verdict(advice, spec)} |")
    return head + "\n".join(rows) + "\n"


def _verdict(advice: Advice, spec: str) -> str:
    if spec == CLAIRVOYANT:
        return "reference (true lengths)"
    if spec == advice.recommended:
        return "**recommended**"
    if not advice.fair(spec):
        return f"unfair (a column > {FAIR_BOUND:g}× FCFS)"
    if not advice.harmless(spec):
        return "slower than FCFS at some load"
    return "gains less" if advice.gain(spec) >= MIN_GAIN else "no gain"


def markdown(advice: Advice, *, title: str, command: str, seats: int, plots: Sequence[str]) -> str:
    pick = advice.recommended
    if pick == FCFS:
        verdict = (
            f"**Recommendation: FCFS.** No candidate gains {MIN_GAIN:.0%} or more in mean E2E while keeping every "
            f"fairness column within {FAIR_BOUND:g}× FCFS's at every load."
        )
    else:
        ratios = ", ".join(f"{s.ratio(pick):.2f}× at ×{s.factor:g}" for s in advice.scenarios)
        verdict = (
            f"**Recommendation: `{pick}`**: mean E2E {ratios} FCFS's ({advice.gain(pick):.1%} less over the loads, "
            f"geometric mean); its worst fairness column is {max(s.worst_fairness(pick) for s in advice.scenarios):.2f}× FCFS's."
        )
    serve = serve_command(pick, seats)
    lines = [
        f"# What lengthwise would do for {title}",
        "",
        f"`{command}`",
        "",
        f"Simulated engine: {seats} seats (`--max-num-seqs`), FCFS capacity {advice.capacity:.2f} req/s for this "
        f"length mix. Candidates schedule on predictions `{advice.predictions}`; `{CLAIRVOYANT}` orders by the true "
        f"lengths (what ordering could give at best; never recommended).",
        "",
        verdict,
        "",
        "Gateway command line:" if pick != FCFS else "Gateway:",
        "",
        f"    {serve}",
        "",
    ]
    if pick != FCFS:
        lines += [f"with the engine started as `vllm serve MODEL --scheduling-policy priority --max-num-seqs {seats}`.", ""]
    lines += [
        "## Candidates over the loads (÷ FCFS)",
        "",
        f"Rule: the lowest geometric-mean ratio of mean E2E among candidates whose fairness columns all stay "
        f"≤ {FAIR_BOUND:g}× FCFS's at every load and whose mean E2E is nowhere more than {HARM_TOLERANCE:.0%} above "
        f"FCFS's; FCFS if none gains {MIN_GAIN:.0%}. *Worst fairness*: the largest of max wait (waits under 1 s "
        "count as 1 s), p99 slowdown and the p99 E2E of the 10% longest requests by output and by prompt, each ÷ FCFS's.",
        "",
        summary_table(advice),
        *(f"![{p}]({p})\n" for p in plots),
    ]
    specs = [FCFS, *advice.candidates, CLAIRVOYANT]
    for s in advice.scenarios:
        lines += [f"## {_scenario_title(s)}", "", "FCFS in seconds (slowdown as is), the others ÷ FCFS; "
                  f"bold: over {FAIR_BOUND:g}×.", "", scenario_table(s, specs)]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(advice: Advice, out: Path, *, title: str, command: str, seats: int) -> Path:
    """report.md, advice.json (every metric) and the plots in `out`; returns report.md."""
    from lengthwise.sim.plots import advice_pngs

    out.mkdir(parents=True, exist_ok=True)
    plots = [p.name for p in advice_pngs(advice, out, title)]
    data = {
        "command": command, "seats": seats, "capacity_rps": advice.capacity, "predictions": advice.predictions,
        "recommended": advice.recommended, "serve": serve_command(advice.recommended, seats),
        "loads": [
            {"factor": s.factor, "rate_rps": s.rate, "load": s.load, "metrics": {r.arm.spec: r.metrics for r in s.results}}
            for s in advice.scenarios
        ],
    }  # fmt: skip
    atomic_write_text(out / "advice.json", json.dumps(data, indent=1))
    return atomic_write_text(out / "report.md", markdown(advice, title=title, command=command, seats=seats, plots=plots))
