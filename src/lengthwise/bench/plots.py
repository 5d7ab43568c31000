"""The comparison's four plots, each from plain arrays keyed by arm name.

Colors are fixed per arm so the same policy looks the same in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lengthwise.core.stats import kendall_tau  # noqa: E402

Series = Mapping[str, np.ndarray]
_FIXED = {"fcfs": "tab:gray", "guided": "tab:blue", "oracle": "tab:green"}
_OTHERS = ["tab:orange", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def _colors(names: Sequence[str]) -> dict[str, str]:
    others = iter(_OTHERS)
    return {n: _FIXED.get(n) or next(others, "black") for n in names}


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def e2e_cdf(e2e_s: Series, path: Path) -> Path:
    """Empirical CDF of end-to-end latency per arm, mean marked with a dashed line."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = _colors(list(e2e_s))
    for name, values in e2e_s.items():
        x = np.sort(values)
        if x.size == 0:
            continue
        ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=colors[name], label=f"{name} (mean {x.mean():.1f} s)")
        ax.axvline(x.mean(), color=colors[name], linestyle="--", linewidth=0.8)
    ax.set(xlabel="end-to-end latency (s)", ylabel="fraction of requests", title="E2E latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def latency_by_length(bucket_labels: Sequence[str], means: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Grouped bars: mean E2E per actual-output-length bucket, per arm."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = _colors(list(means))
    width = 0.8 / max(1, len(means))
    x = np.arange(len(bucket_labels))
    for i, (name, values) in enumerate(means.items()):
        ax.bar(x + (i - (len(means) - 1) / 2) * width, values, width, color=colors[name], label=name)
    ax.set_xticks(x, bucket_labels)
    ax.set(xlabel="actual output tokens", ylabel="mean E2E latency (s)", title="Latency by output length")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def queue_over_time(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Requests waiting for their first token over time, per arm (same arrivals for all)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = _colors(list(curves))
    for name, (t, waiting) in curves.items():
        ax.step(t, waiting, where="post", color=colors[name], label=name, linewidth=1.2)
    ax.set(xlabel="time since the first arrival (s)", ylabel="requests waiting for a first token", title="Queue length over time")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def predicted_vs_actual(points: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Scatter of predicted against actual output tokens per predictor, Kendall tau in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    colors = _colors(list(points))
    top = 1.0
    for name, (predicted, actual) in points.items():
        if predicted.size == 0:
            continue
        tau = kendall_tau(predicted, actual)
        ax.scatter(actual, predicted, s=14, alpha=0.6, color=colors[name], label=f"{name} (Kendall tau {tau:.2f})")
        top = max(top, float(predicted.max()), float(actual.max()))
    ax.plot([0, top], [0, top], color="black", linewidth=0.7, linestyle=":")
    ax.set(xlabel="actual output tokens", ylabel="predicted output tokens", title="Predicted vs actual length")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.8)
    return _save(fig, path)
