import numpy as np
import pytest

from lengthwise.core.policy import DEFAULT_POLICY, Job, ServiceTime, WaitingQueue, make_policy
from lengthwise.core.policy.deadline import Deadline, FcfsWait
from lengthwise.core.policy.sst import SST


def test_the_estimator_learns_known_coefficients() -> None:
    """TTFT = 40 ms + 30 µs per uncached prompt token; 20 ms per token shared by 100 sequences."""
    rng = np.random.default_rng(0)
    service = ServiceTime()
    for _ in range(2000):
        prompt, cached, output = int(rng.integers(50, 4000)), int(rng.integers(0, 40)) * 16, int(rng.integers(2, 800))
        ttft = (0.040 + 30e-6 * max(prompt - cached, 0)) * rng.lognormal(0, 0.05)
        service.observe(prompt, cached, output, ttft, ttft + (output - 1) * 0.020, concurrency=100)
    assert service.prefill_s_per_token == pytest.approx(30e-6, rel=0.05)
    assert service.decode_s_per_token == pytest.approx(0.020 / 100, rel=0.05)


def test_the_estimator_keeps_its_priors_until_it_has_seen_enough() -> None:
    service = ServiceTime(min_observations=16)
    for _ in range(15):
        service.observe(1000, 0, 100, ttft_s=5.0, e2e_s=50.0)
    assert (service.prefill_s_per_token, service.decode_s_per_token) == (2e-5, 1e-4)
    service.observe(1000, 0, 100, ttft_s=5.0, e2e_s=50.0, concurrency=10)
    assert service.decode_s_per_token != 1e-4
    service.observe(10, 0, 5, ttft_s=2.0, e2e_s=1.0)  # impossible times are ignored
    assert service.observations == 16


def test_a_long_prompt_with_a_short_answer_goes_after_a_short_request() -> None:
    q = WaitingQueue(make_policy("sst"))
    q.add(Job("long-prompt", 0.0, predicted_tokens=20, prompt_tokens=8000), now=0.0)  # 160 + 2 ms
    q.add(Job("short", 1.0, predicted_tokens=40, prompt_tokens=200), now=1.0)  # 4 + 4 ms
    q.add(Job("cached", 2.0, predicted_tokens=20, prompt_tokens=8000, cached_tokens=7900), now=2.0)  # 2 + 2 ms
    assert [q.pop(3.0).id for _ in range(3)] == ["cached", "short", "long-prompt"]
    assert make_policy("sjf").key(Job("x", 0, 20, 8000), 0) < make_policy("sjf").key(Job("y", 0, 40, 200), 0)


def test_specs_build_the_service_time_policies() -> None:
    policy = make_policy(DEFAULT_POLICY)
    assert isinstance(policy, Deadline) and isinstance(policy.base, SST) and policy.name == "sst+deadline"
    assert policy.service is policy.base.service  # one estimator for the key and the deadlines
    assert make_policy("sst:decode_s_per_token=0.001").service.decode_s_per_token == 0.001
    assert make_policy("sjf+deadline:k=2").service is not None  # sizes its jobs with an estimator of its own
    assert make_policy("sst+aging:max_wait=30").service is not None
    assert make_policy("sjf").service is None
    with pytest.raises(ValueError):
        make_policy("sst+deadline:k=0")


def _busy_queue(k: float = 1.0) -> tuple[WaitingQueue, Deadline]:
    """A queue whose FCFS-equivalent wait is known: 1 s of work admitted per second; with
    `memory=1` each deadline is k × the job's own FCFS wait (the warm-up's waits are not remembered)."""
    policy = make_policy(f"sst:prefill_s_per_token=0,decode_s_per_token=0.001+deadline:k={k},memory=1")
    assert isinstance(policy, Deadline)
    q = WaitingQueue(policy)
    for i in range(4):  # jobs of 1 s each, admitted one per second while others wait
        q.add(Job(f"warm{i}", 0.0, predicted_tokens=1000), now=0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        q.pop(t)
    assert policy.fcfs.rate == pytest.approx(1.0)
    return q, policy


def test_an_overdue_job_goes_first_and_overdue_jobs_go_by_deadline() -> None:
    q, policy = _busy_queue(k=1.0)
    jobs = {name: Job(name, 10.0, predicted_tokens=tokens) for name, tokens in
            (("long-a", 4000), ("long-b", 3000), ("short0", 10), ("short1", 10))}  # fmt: skip
    for job in jobs.values():
        q.add(job, now=10.0)
    # FCFS would make each wait for the work queued before it: 0, 4, 7 and 7.01 s.
    assert [policy.deadline(j) for j in jobs.values()] == pytest.approx([10.0, 14.0, 17.0, 17.01])
    assert q.pop(10.0).id == "long-a"  # overdue at once: ahead of shorter jobs
    assert q.peek(13.9).id == "short0"  # nobody overdue: shortest service first
    assert [q.pop(17.5).id for _ in range(3)] == ["long-b", "short0", "short1"]  # all overdue: by deadline


def test_the_queue_rekeys_a_job_at_its_deadline() -> None:
    q, policy = _busy_queue(k=1.0)
    long = Job("long", 20.0, predicted_tokens=2000)
    q.add(Job("filler", 20.0, predicted_tokens=5000), now=20.0)
    q.add(long, now=20.0)  # 5 s of work ahead of it
    q.add(Job("short", 21.0, predicted_tokens=10), now=21.0)
    assert q.pop(20.0).id == "filler"
    due = policy.deadline(long)
    assert due == pytest.approx(25.0) and policy.rekey_at(long, 21.0) == due
    assert q.peek(due - 1e-6).id == "short"
    assert q.peek(due).id == "long"


def test_a_fresh_queues_first_burst_is_ordered_and_gets_its_deadlines_once_the_rate_is_known() -> None:
    policy = make_policy("sst:prefill_s_per_token=0,decode_s_per_token=0.001+deadline:k=1")
    assert isinstance(policy, Deadline)
    q = WaitingQueue(policy)
    sizes = [4000, 1000, 1000, 10, 10, 10]  # seconds of work: 4, 1, 1, 0.01 ...
    jobs = [Job(f"j{i}", 0.0, predicted_tokens=n) for i, n in enumerate(sizes)]
    for job in jobs:
        q.add(job, now=0.0)
    # No rate yet: a deadline of "now" would make every job overdue and the burst FCFS.
    assert all(policy.deadline(j) is None and not policy.overdue(j, 0.0) for j in jobs)
    assert [q.pop(0.0).id, q.pop(0.01).id] == ["j3", "j4"]  # shortest first
    # The engine took 0.01 s of work in 0.01 s: rate 1. Each remaining job's deadline is now its
    # FCFS-equivalent wait (the work that arrived before it) × k.
    assert policy.fcfs.rate == pytest.approx(1.0)
    assert [policy.deadline(j) for j in jobs if j.id in q] == pytest.approx([0.0, 4.0, 5.0, 6.02])
    assert q.pop(0.02).id == "j0"  # overdue since its deadline (0): ahead of the short j5
    assert [q.pop(6.0).id for _ in range(3)] == ["j1", "j2", "j5"]  # overdue j1, j2 by deadline, then j5


def test_the_fcfs_wait_is_the_work_ahead_over_the_admission_rate() -> None:
    fcfs = FcfsWait(memory=10**9)
    assert fcfs.joined(2.0) is None  # nothing measured yet: unknown, not zero
    for _ in range(3):
        fcfs.joined(2.0)
    fcfs.left(2.0, admitted_at=0.0)
    fcfs.left(2.0, admitted_at=4.0)  # 2 s of work per 4 s: half a second of work per second
    assert fcfs.rate == pytest.approx(0.5)
    assert fcfs.joined(1.0) == pytest.approx(2 * 2.0 / 0.5)  # two 2-s jobs wait: 8 s
    fcfs.left(2.0, admitted_at=None)  # a dropped job neither waits any more nor measures the rate
    assert fcfs.rate == pytest.approx(0.5) and fcfs.queued == pytest.approx(3.0)
