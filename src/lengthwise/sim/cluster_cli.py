"""`lengthwise sim cluster`: N engines behind a router; routers and shared vs per-replica queues side by side."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lengthwise.core.policy import DEFAULT_POLICY
from lengthwise.sim.options import Scenario, clear_errors, console, progress_bar, with_scenario


@with_scenario()
def cluster(
    *,
    replicas: Annotated[int, typer.Option(help="Engines behind the router.")] = 16,
    requests: Annotated[int | None, typer.Option(help="Requests in all (default 2,000 per replica).")] = None,
    router: Annotated[
        list[str] | None,
        typer.Option(help="Router arm (repeatable): round-robin, least-requests, least-work, "
                          "prefix-affinity[:slack=S]. Default: all four."),
    ] = None,
    queues: Annotated[str, typer.Option(help="per-replica (each engine ranks its own), shared (one queue in front) "
                                             "or both.")] = "both",
    policy: Annotated[str, typer.Option(help="The policy every queue ranks by.")] = DEFAULT_POLICY,
    load: Annotated[float, typer.Option(help="Arrival rate as a fraction of the cluster's FCFS capacity.")] = 0.9,
    turns: Annotated[float, typer.Option(help="Mean turns per conversation (1: none share a prefix).")] = 4.0,
    think_s: Annotated[float, typer.Option(help="Seconds between a conversation's turns.")] = 15.0,
    scenario: Scenario,
) -> None:
    """N engines behind a router: routers and shared vs per-replica queues on one trace, resampled to N
    replicas' worth of traffic (docs/SIMULATOR.md, "Cluster simulator")."""
    from lengthwise.sim.cluster_experiment import Traffic, arms, cluster_workload, run_cluster_arms

    with clear_errors():
        chosen = arms(router, queues)
        traffic = Traffic(
            replicas, requests or 2000 * replicas, load, scenario.predictions, turns, think_s, scenario.seed
        )  # fmt: skip
        config, cost = scenario.engine(), scenario.cost()
        source, title = scenario.build_workload()
        w, per_engine = cluster_workload(source, traffic, config, cost)
        with progress_bar(len(w)) as (bar, task):
            results = run_cluster_arms(
                w, replicas, chosen, config, cost, policy,
                on_arm=lambda arm: bar.update(task, completed=0, description=arm.label),
                progress=lambda done: bar.update(task, completed=done),
            )  # fmt: skip
        table = Table(
            title=f"{replicas} replicas, {len(w):,} requests resampled from {title}; load {load:g} of "
            f"{replicas} × {per_engine:.2f} req/s; policy {policy}, predictions {scenario.predictions}"
        )
        columns = ("arm", "mean E2E s", f"/ {chosen[0].label}", "p50 E2E s", "p99 E2E s", "mean TTFT s",
                   "prefix hit rate", "busiest replica", "sim req/s")  # fmt: skip
        for col in columns:
            table.add_column(col, justify="left" if col == "arm" else "right")
        first = results[0][1].metrics()["mean_e2e_s"]
        for arm, result in results:
            m = result.metrics()
            table.add_row(
                arm.label, f"{m['mean_e2e_s']:.2f}", f"{m['mean_e2e_s'] / first:.3f}", f"{m['p50_e2e_s']:.2f}",
                f"{m['p99_e2e_s']:.2f}", f"{m['mean_ttft_s']:.2f}", f"{m['prefix_cache_hit_rate']:.1%}",
                f"{m['busiest_replica_share']:.2f}×", f"{m['sim_requests_per_s']:,.0f}",
            )  # fmt: skip
        console.print(table)
