"""The seed's operating-system example: FCFS, round robin and SRT on four tasks, through the engine.

The seed's charts imply T1–T4 arrive at 0, 1, 2, 3 with bursts of 4, 3, 2 and 5
time units: FCFS starts them at 0, 4, 7, 9; round robin (quantum 1) runs
T1 T2 T3 T4 T1 T2 T3 T4 ...; SRT runs T1 T2 T3 T3 T2 T2 T1 T1 T1 T4 T4 T4 T4 T4,
where a newcomer with a remaining time equal to the running task's takes the CPU.

A task is a request with a one-token prompt whose burst is its output length, on
an engine with one sequence slot where every step takes one time unit; a
preempted task is recomputed in one step, which also yields its next token, so
preemption costs nothing, as in the textbook. Policies are the project's own:
FCFS, round robin with a one-token quantum, SRPT on exact remaining lengths with
a zero preemption threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lengthwise.core.policy.registry import make_policy
from lengthwise.sim.cost import ConstantCost
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.workload import Workload

#: (name, arrival, burst) as read off the seed's charts.
SEED_TASKS: tuple[tuple[str, float, int], ...] = (("T1", 0, 4), ("T2", 1, 3), ("T3", 2, 2), ("T4", 3, 5))

#: Seed policy name -> (policy spec, preemptive engine, arrival preemption threshold).
SEED_POLICIES: dict[str, tuple[str, bool, float]] = {
    "FCFS": ("fcfs", False, float("inf")),
    "RR": ("rr:quantum=1", True, float("inf")),
    "SRT": ("srpt:overrun=0", True, 0.0),
}


@dataclass(frozen=True)
class Timeline:
    policy: str
    #: task -> [(start, end), ...] in time units
    runs: dict[str, list[tuple[float, float]]]
    #: task -> waiting time = finish − arrival − burst
    waits: dict[str, float]

    @property
    def average_wait(self) -> float:
        return sum(self.waits.values()) / len(self.waits)

    @property
    def horizon(self) -> float:
        return max(end for runs in self.runs.values() for _, end in runs)

    def slots(self) -> list[str | None]:
        """Which task ran in each unit time slot (None when idle)."""
        out: list[str | None] = [None] * int(round(self.horizon))
        for task, runs in self.runs.items():
            for start, end in runs:
                for t in range(int(round(start)), int(round(end))):
                    out[t] = task
        return out


def run_seed_example(policy: str, tasks: tuple[tuple[str, float, int], ...] = SEED_TASKS) -> Timeline:
    """Run the seed's tasks under one of `SEED_POLICIES` and return who ran when."""
    try:
        spec, preemptive, threshold = SEED_POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; the seed shows {', '.join(SEED_POLICIES)}") from None
    names = [t[0] for t in tasks]
    bursts = np.array([t[2] for t in tasks], dtype=np.int64)
    workload = Workload(
        np.array([t[1] for t in tasks], dtype=float), np.ones(len(tasks), dtype=np.int64), bursts,
        bursts.astype(float), names,
    )  # fmt: skip
    config = EngineConfig(
        max_num_seqs=1, max_num_batched_tokens=int(bursts.sum()) + 1, block_size=1, num_blocks=10_000,
        prefix_caching=False, preemptive=preemptive, preempt_threshold=threshold,
    )  # fmt: skip
    result = Simulator(config, ConstantCost(1.0), make_policy(spec), record_segments=True).run(workload)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for task, start, end in sorted(result.segments, key=lambda s: s[1]):
        runs[task].append((start, end))
    waits = {r.id: r.finish_time - r.arrival - r.output_tokens for r in result.records}
    return Timeline(policy, runs, waits)


def ascii_gantt(timeline: Timeline) -> str:
    """The seed's chart style: a time axis, the task in each slot, then one bar row per task."""
    slots = timeline.slots()
    width = 3
    axis = "".join(f"{t:<{width}}" for t in range(len(slots) + 1))
    order = "".join(f"{(s or '--'):<2}|" for s in slots)
    lines = [f"{timeline.policy}  (average waiting time {timeline.average_wait:g})", f"  T: {axis}", f"     {order}"]
    for task in timeline.runs:
        bar = "".join("██ " if s == task else "   " for s in slots)
        lines.append(f"  {task} {bar.rstrip():<{width * len(slots)}}  wait {timeline.waits[task]:g}")
    return "\n".join(lines)
