from hypothesis import given
from hypothesis import strategies as st

from lengthwise.core.policy import Job, WaitingQueue, make_policy

preds = st.floats(min_value=0, max_value=4000)
times = st.floats(min_value=0, max_value=1000)


@given(preds, times, preds, times, st.floats(min_value=0.01, max_value=100))
def test_rate_aging_lets_a_job_overtake_once_it_has_waited_long_enough(
    pa: float, ta: float, pb: float, tb: float, rate: float
) -> None:
    """Key = pred − rate·wait: A goes first iff pa − rate·(now − ta) < pb − rate·(now − tb), at any now."""
    policy = make_policy(f"sjf+aging:rate={rate}")
    a, b = Job("a", ta, predicted_tokens=pa), Job("b", tb, predicted_tokens=pb)
    now = max(ta, tb) + 5.0
    aged_a, aged_b = pa - rate * (now - ta), pb - rate * (now - tb)
    if abs(aged_a - aged_b) > 1e-6 * (1 + abs(aged_a) + rate * now):
        assert (policy.key(a, now) < policy.key(b, now)) == (aged_a < aged_b)


@given(
    st.lists(st.tuples(st.floats(min_value=0, max_value=5), preds), min_size=1, max_size=40),
    st.floats(min_value=0.5, max_value=20),
)
def test_max_wait_serves_overdue_jobs_first_oldest_first(jobs: list[tuple[float, float]], max_wait: float) -> None:
    """A single server pops one job per second: no job is skipped once it is overdue."""
    policy = make_policy(f"sjf+aging:max_wait={max_wait}")
    q = WaitingQueue(policy)
    arrivals = sorted((gap, p) for gap, p in jobs)
    pending = [Job(f"j{i}", t * 3, predicted_tokens=p) for i, (t, p) in enumerate(arrivals)]
    now = 0.0
    while pending or len(q):
        while pending and pending[0].arrival <= now:
            q.add(pending.pop(0), now)
        waiting = list(q)
        job = q.pop(now)
        if job is not None:
            overdue = [j for j in waiting if now >= j.arrival + max_wait]
            if overdue:
                assert job is min(overdue, key=lambda j: (j.arrival, int(j.id[1:])))
            else:
                assert job.predicted_tokens == min(j.predicted_tokens for j in waiting)
        now += 1.0


def test_max_wait_rekeys_a_job_at_its_deadline() -> None:
    q = WaitingQueue(make_policy("sjf+aging:max_wait=10"))
    q.add(Job("long", 0.0, predicted_tokens=900), now=0.0)
    q.add(Job("short", 1.0, predicted_tokens=5), now=1.0)
    assert q.peek(9.99).id == "short"
    assert q.peek(10.0).id == "long"
    assert [q.pop(10.0).id, q.pop(10.0).id] == ["long", "short"]


def test_hrrn_prefers_the_higher_response_ratio() -> None:
    q = WaitingQueue(make_policy("hrrn:tokens_per_s=10"))
    q.add(Job("long-old", 0.0, predicted_tokens=99), now=0.0)  # ratio at t=10: 1 + 100/100 = 2
    q.add(Job("short-new", 9.5, predicted_tokens=4), now=9.5)  # ratio at t=10: 1 + 5/5 = 2... at 9.6: 1.2
    assert q.peek(9.6).id == "long-old"
    assert q.peek(30.0).id == "short-new"  # 1 + 205/5 beats 1 + 300/100
