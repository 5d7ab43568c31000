import pytest

from lengthwise.sim.oslab import SEED_POLICIES, ascii_gantt, run_seed_example

# Read off the seed's charts (FCFS starts at 0 4 7 9; RR's and SRT's slot sequences).
SEED_SLOTS = {
    "FCFS": "T1 T1 T1 T1 T2 T2 T2 T3 T3 T4 T4 T4 T4 T4",
    "RR": "T1 T2 T3 T4 T1 T2 T3 T4 T1 T2 T4 T1 T4 T4",
    "SRT": "T1 T2 T3 T3 T2 T2 T1 T1 T1 T4 T4 T4 T4 T4",
}
AVERAGE_WAIT = {"FCFS": 3.5, "RR": 5.75, "SRT": 3.25}


@pytest.mark.parametrize("policy", list(SEED_POLICIES))
def test_engine_reproduces_the_seed_timelines(policy: str) -> None:
    timeline = run_seed_example(policy)
    assert " ".join(s or "--" for s in timeline.slots()) == SEED_SLOTS[policy]
    assert timeline.average_wait == pytest.approx(AVERAGE_WAIT[policy])


def test_srt_has_the_lowest_average_wait_and_the_chart_says_so() -> None:
    waits = {p: run_seed_example(p).average_wait for p in SEED_POLICIES}
    assert min(waits, key=waits.get) == "SRT"
    chart = ascii_gantt(run_seed_example("SRT"))
    assert "average waiting time 3.25" in chart
    assert chart.count("██") == 14
