"""A run's summary as the text table `vllm bench serve` prints, so numbers read the same."""

from __future__ import annotations

from collections.abc import Mapping

WIDTH = 50
_SECTIONS = (
    ("Time to First Token", "ttft", "TTFT"),
    ("Time per Output Token (excl. 1st token)", "tpot", "TPOT"),
    ("Inter-token Latency", "itl", "ITL"),
    ("End-to-end Latency", "e2el", "E2EL"),
)


def _line(label: str, value: float | int, fmt: str = ".2f") -> str:
    return f"{label:<40}{value:<10{fmt}}"


def serving_table(summary: Mapping[str, float], title: str = "Serving Benchmark Result") -> str:
    """The `vllm bench serve` result block for a `metrics.summarize` dict."""
    lines = [
        f" {title} ".center(WIDTH, "="),
        _line("Successful requests:", int(summary["completed"]), "d"),
        _line("Failed requests:", int(summary["failed"]), "d"),
        _line("Benchmark duration (s):", summary["duration_s"]),
        _line("Total input tokens:", int(summary["total_input_tokens"]), "d"),
        _line("Total generated tokens:", int(summary["total_output_tokens"]), "d"),
        _line("Request throughput (req/s):", summary["request_throughput"]),
    ]
    if "request_goodput" in summary:
        lines.append(_line("Request goodput (req/s):", summary["request_goodput"]))
    lines += [
        _line("Output token throughput (tok/s):", summary["output_throughput"]),
        _line("Total Token throughput (tok/s):", summary["total_token_throughput"]),
    ]
    for heading, key, short in _SECTIONS:
        lines.append(heading.center(WIDTH, "-"))
        lines.append(_line(f"Mean {short} (ms):", summary[f"mean_{key}_ms"]))
        lines.append(_line(f"Median {short} (ms):", summary[f"median_{key}_ms"]))
        lines.append(_line(f"P99 {short} (ms):", summary[f"p99_{key}_ms"]))
    lines.append("Scheduling".center(WIDTH, "-"))
    lines.append(_line("Mean slowdown:", summary["mean_slowdown"]))
    lines.append(_line("P99 slowdown:", summary["p99_slowdown"]))
    lines.append(_line("Max wait (ms):", summary["max_wait_ms"]))
    lines.append(_line("P99 E2EL of the 10% longest (ms):", summary["p99_e2el_longest10_ms"]))
    lines.append(_line("P99 E2EL, 10% longest prompts (ms):", summary["p99_e2el_longest10_prompt_ms"]))
    lines.append(_line("Jain fairness (slowdowns):", summary["jain_fairness"], ".3f"))
    lines.append(_line("Prefix cache hit rate:", summary["prefix_cache_hit_rate"], ".3f"))
    lines.append("=" * WIDTH)
    return "\n".join(lines)
