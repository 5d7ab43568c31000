"""Pictures: Gantt charts of the seed's example, latency-versus-load curves, `sim advise`'s gain and fairness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import numpy as np  # noqa: E402

from lengthwise.core.policy import DEFAULT_POLICY  # noqa: E402
from lengthwise.sim.advise import CLAIRVOYANT, FAIR_BOUND, FCFS, Advice  # noqa: E402
from lengthwise.sim.oslab import Timeline  # noqa: E402


def gantt_png(timelines: Sequence[Timeline], path: Path) -> Path:
    """One Gantt chart per policy, stacked, each titled with its average waiting time."""
    fig, axes = plt.subplots(len(timelines), 1, figsize=(8, 1.6 * len(timelines) + 0.6), sharex=True, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, tl in zip(axes[:, 0], timelines, strict=True):
        tasks = list(tl.runs)
        for row, task in enumerate(tasks):
            spans = [(start, end - start) for start, end in tl.runs[task]]
            ax.broken_barh(spans, (row - 0.4, 0.8), color=colors(row), edgecolor="black", linewidth=0.5)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.invert_yaxis()
        ax.set_title(f"{tl.policy}: average waiting time {tl.average_wait:g}", fontsize=10, loc="left")
        ax.grid(axis="x", linestyle=":", alpha=0.6)
        ax.set_xticks(range(int(tl.horizon) + 1))
    axes[-1, 0].set_xlabel("time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def sweep_png(
    loads: Sequence[float],
    series: Mapping[str, Mapping[str, Sequence[float]]],
    path: Path,
    title: str,
) -> Path:
    """Mean E2E, p99 E2E of the longest 10%, and mean TTFT against load, one line per arm.

    `series[arm][metric]` holds one value (ms) per load for the metrics plotted.
    """
    panels = (
        ("mean_e2el_ms", "mean E2E latency (s)"),
        ("p99_e2el_longest10_ms", "p99 E2E of the longest 10% (s)"),
        ("mean_ttft_ms", "mean TTFT (s)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for arm, values in series.items():
            ax.plot(loads, [v / 1000 for v in values[metric]], marker="o", label=arm)
        ax.set_xlabel("load (fraction of FCFS capacity)")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        ax.grid(True, which="both", linestyle=":", alpha=0.6)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def advice_pngs(advice: Advice, out: Path, title: str) -> list[Path]:
    """advise.png (mean E2E and worst fairness column ÷ FCFS against load, one line per policy) and
    e2e_cdf.png (E2E latency distribution at the heaviest load: FCFS, the pick, the default policy, the
    clairvoyant order)."""
    loads = [s.load for s in advice.scenarios]
    fig, (gain, fair) = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in [*advice.candidates, CLAIRVOYANT]:
        style = {"linestyle": "--", "color": "grey"} if spec == CLAIRVOYANT else {}
        width = 2.5 if spec == advice.recommended else 1.2
        gain.plot(loads, [s.ratio(spec) for s in advice.scenarios], marker="o", linewidth=width, label=spec, **style)
        fair.plot(loads, [s.worst_fairness(spec) for s in advice.scenarios], marker="o", linewidth=width, **style)
    gain.axhline(1, color="black", linewidth=0.8)
    fair.axhline(FAIR_BOUND, color="red", linestyle=":", linewidth=1)
    gain.set_ylabel("mean E2E ÷ FCFS's")
    fair.set_ylabel("worst fairness column ÷ FCFS's")
    fair.set_yscale("log")
    for ax in (gain, fair):
        ax.set_xlabel("load (fraction of FCFS capacity)")
        ax.grid(True, which="both", linestyle=":", alpha=0.6)
    gain.legend(fontsize=8)
    fig.suptitle(f"{title}: gain and fairness against FCFS (pick: {advice.recommended})", fontsize=10)
    fig.tight_layout()
    summary = out / "advise.png"
    fig.savefig(summary, dpi=120)
    plt.close(fig)

    heaviest = advice.scenarios[-1]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    default = [DEFAULT_POLICY] if DEFAULT_POLICY in advice.candidates else []
    for spec in dict.fromkeys([FCFS, advice.recommended, *default, CLAIRVOYANT]):
        e2e = np.sort([r.e2el for r in next(x for x in heaviest.results if x.arm.spec == spec).result.records])
        ax.plot(e2e, np.arange(1, e2e.size + 1) / e2e.size, label=spec)
    ax.set_xscale("log")
    ax.set_xlabel("E2E latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"E2E latency at arrivals ×{heaviest.factor:g} (load {heaviest.load:.2f})", fontsize=10)
    ax.grid(True, which="both", linestyle=":", alpha=0.6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    cdf = out / "e2e_cdf.png"
    fig.savefig(cdf, dpi=120)
    plt.close(fig)
    return [summary, cdf]
