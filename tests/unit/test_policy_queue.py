from hypothesis import given
from hypothesis import strategies as st

from lengthwise.core.policy import Job, WaitingQueue, make_policy


def _jobs(preds: list[float]) -> list[Job]:
    return [Job(id=f"j{i}", arrival=float(i), predicted_tokens=p) for i, p in enumerate(preds)]


def test_fcfs_pops_in_arrival_order() -> None:
    q = WaitingQueue(make_policy("fcfs"))
    for job in reversed(_jobs([5, 1, 3])):
        q.add(job, now=10)
    assert [q.pop(10).id for _ in range(3)] == ["j0", "j1", "j2"]
    assert q.pop(10) is None


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=50), st.data())
def test_sjf_pops_sorted_and_skips_removed(preds: list[float], data: st.DataObject) -> None:
    q = WaitingQueue(make_policy("sjf"))
    jobs = _jobs(preds)
    for job in jobs:
        q.add(job, now=0)
    removed = set(data.draw(st.sets(st.sampled_from([j.id for j in jobs]))))
    for job_id in removed:
        assert q.remove(job_id) is not None
    popped = [q.pop(0) for _ in range(len(jobs) - len(removed))]
    assert q.pop(0) is None and len(q) == 0
    assert {j.id for j in popped} == {j.id for j in jobs} - removed
    keys = [(j.predicted_tokens, j.arrival) for j in popped]
    assert keys == sorted(keys)


def test_unknown_policy_names_the_known_ones() -> None:
    try:
        make_policy("nope")
    except ValueError as e:
        assert "fcfs" in str(e)
    else:
        raise AssertionError("expected ValueError")
