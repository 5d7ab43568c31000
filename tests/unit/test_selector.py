"""The automatic choice: the candidate that ranks the actual lengths, or none (FCFS)."""

import asyncio
import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import pytest

from lengthwise.core.stats import RankQuality
from lengthwise.testing.gateway import FunctionPredictor
from lengthwise.predict.base import LengthRequest, Prediction
from lengthwise.predict.registry import make_predictor
from lengthwise.predict.auto.selector import AutoPredictor
from lengthwise.predict.worker import learning_worker


def _request(i: int, length: int) -> LengthRequest:
    return LengthRequest("chat", {"messages": [{"role": "user", "content": f"prompt {i}"}], "max_tokens": length}, f"r{i}")


def _signal() -> FunctionPredictor:
    """Knows the length up to noise: has signal."""
    rng = random.Random(1)
    return FunctionPredictor(lambda r: r.max_tokens * rng.uniform(0.5, 2.0), name="signal")


def _noise(name: str = "noise", seed: int = 2) -> FunctionPredictor:
    rng = random.Random(seed)
    return FunctionPredictor(lambda r: rng.uniform(1, 1000), name=name)


async def _run(auto: AutoPredictor, requests: int, seed: int = 3, first: int = 0, idle: bool = False) -> list[Prediction]:
    """`requests` distinct prompts, numbered from `first`, each observed once it has been predicted;
    `idle`: nothing waits for them (the gateway found a free seat)."""
    rng = random.Random(seed)
    out = []
    for i in range(first, first + requests):
        request = replace(_request(i, rng.randint(1, 1000)), background=idle)  # the actual length is max_tokens
        prediction = await auto.predict(request)
        out.append(prediction)
        await asyncio.sleep(0)  # the candidates not chosen predict in the background, while the request runs
        auto.observe(request, prediction, request.max_tokens)
    return out


async def test_it_chooses_the_candidate_with_signal_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    auto = AutoPredictor([_noise(), _signal()], min_requests=20, fallback_tokens=77)
    with caplog.at_level(logging.INFO, "lengthwise.predict.auto"):
        predictions = await _run(auto, 60)
    assert auto.choice == "signal"
    assert predictions[0].tokens == 77 and predictions[0].source == "auto:none"  # nothing measured yet
    assert predictions[-1].source == "signal"
    assert any("none → signal" in r.getMessage() for r in caplog.records)
    status = auto.status()
    assert status["choice"] == "signal" and status["requests"] == 60
    assert status["candidates"]["signal"]["ci_low"] > 0 and status["candidates"]["signal"]["n"] == 60
    assert status["candidates"]["noise"]["sampled_fraction"] == 1.0


async def test_it_falls_back_to_fcfs_when_every_candidate_is_noise() -> None:
    auto = AutoPredictor([_noise("a", 4), _noise("b", 5), make_predictor("constant:tokens=9")],
                         min_requests=20, fallback_tokens=50)
    predictions = await _run(auto, 150)
    assert auto.choice == "none"
    assert {p.tokens for p in predictions} == {50.0}  # all tie: the policy serves by arrival
    assert auto.status()["candidates"]["constant"]["tau"] is None


async def test_a_costly_candidate_runs_on_a_sample_until_chosen() -> None:
    costly = _signal()
    costly.name, costly.costly = "self:plain", True  # self-predictions cost engine time
    auto = AutoPredictor([_noise(), costly], sample=0.25, min_requests=10, rng=random.Random(0))
    await _run(auto, 80, idle=True)
    sampled = len(costly.observed)
    assert 10 <= sampled < 40 and auto.status()["candidates"]["self:plain"]["costly"]
    assert auto.choice == "self:plain"  # its sampled window already shows the signal
    await _run(auto, 20, seed=9)
    assert len(costly.observed) == sampled + 20  # chosen: it predicts every request, waiting or not


async def test_a_costly_candidate_never_measures_a_request_that_waits() -> None:
    costly = _signal()
    costly.name, costly.costly = "self:plain", True
    auto = AutoPredictor([_noise(), costly], sample=1.0, min_requests=10, rng=random.Random(0))
    await _run(auto, 40)  # every request waits for a seat: the engine has no room for a query
    assert costly.observed == [] and auto.choice == "none"
    await _run(auto, 5, first=40, idle=True)  # a free seat: now it is measured
    assert len(costly.observed) == 5


async def test_a_costly_shadow_does_not_delay_the_request() -> None:
    slow = FunctionPredictor(lambda r: r.max_tokens, name="self:slow", delay_s=0.3, costly=True)
    auto = AutoPredictor([_noise(), slow], sample=1.0, min_requests=3)
    request = replace(_request(0, 10), background=True)
    started = asyncio.get_running_loop().time()
    prediction = await auto.predict(request)
    assert asyncio.get_running_loop().time() - started < 0.2 and prediction.source == "auto:none"
    await asyncio.sleep(0.5)  # the request runs meanwhile; the shadow's prediction arrives before it ends
    auto.observe(request, prediction, 10)
    assert slow.observed == [("r0", 10.0, 10)] and auto.status()["candidates"]["self:slow"]["n"] == 1


async def test_the_choice_moves_when_a_predictor_loses_its_signal() -> None:
    flip = {"on": True}
    rng = random.Random(6)
    fading = FunctionPredictor(lambda r: r.max_tokens if flip["on"] else rng.random(), name="fading")
    auto = AutoPredictor([fading], window=40, min_requests=20)
    await _run(auto, 40)
    assert auto.choice == "fading"
    flip["on"] = False
    await _run(auto, 60, seed=8)
    assert auto.choice == "none"


async def test_requests_that_never_complete_are_forgotten() -> None:
    auto = AutoPredictor([_signal()], pending_limit=5)
    for i in range(10):
        await auto.predict(_request(i, 10))
    auto.observe(_request(0, 10), Prediction(1, "x"), 10)  # too old: dropped
    assert len(auto._pending) == 5 and auto.status()["candidates"]["signal"]["n"] == 0


def test_the_spec_builds_candidates_and_checks_options() -> None:
    auto = make_predictor("auto:candidates=prompt-length|constant:tokens=5;calibrate=huber,sample=0.5,window=50",
                          fallback_tokens=33)
    assert isinstance(auto, AutoPredictor)
    assert list(auto.candidates) == ["prompt-length", "constant+cal"]
    assert auto.sample == 0.5 and auto.fallback_tokens == 33
    with pytest.raises(ValueError, match="unknown options"):
        make_predictor("auto:candidates=prompt-length,bogus=1")
    with pytest.raises(ValueError, match="distinct"):
        make_predictor("auto:candidates=prompt-length|prompt-length")


async def test_the_choice_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "auto" / "state.json"
    first = AutoPredictor([_noise(), _signal()], min_requests=20, state_path=state)
    await _run(first, 60)
    assert first.choice == "signal"
    restarted = AutoPredictor([_noise(), _signal()], min_requests=20, state_path=state)
    assert restarted.choice == "signal"  # before any new completion
    prediction = await restarted.predict(_request(0, 500))
    assert prediction.source == "signal"
    assert restarted.status()["state"] == str(state) and restarted.status()["restored"] == 120
    assert restarted.status()["candidates"]["signal"]["n"] == 60
    assert AutoPredictor([_noise(), _signal()], min_requests=20).choice == "none"  # without state: cold
    smaller = AutoPredictor([_signal()], window=10, state_path=state)
    assert smaller.candidates["signal"].window.pairs() == first.candidates["signal"].window.pairs()[-10:]


async def test_the_state_is_saved_at_each_recheck(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    auto = AutoPredictor([_signal()], recheck=10, state_path=state)
    await _run(auto, 9)
    assert not state.exists()
    await _run(auto, 1, first=9)
    saved = json.loads(state.read_text())
    assert saved["choice"] == "none" and len(saved["windows"]["signal"]) == 10
    assert [tuple(p) for p in saved["windows"]["signal"]] == auto.candidates["signal"].window.entries()
    assert list(tmp_path.iterdir()) == [state]  # no temporary file left behind


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"windows": {"signal": [[1]]}}',
                                     '{"windows": {"signal": [["a", 2]]}}', '{"choice": ["signal"]}'])
async def test_a_corrupt_state_starts_empty(tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    with caplog.at_level(logging.WARNING, "lengthwise.predict.auto"):
        auto = AutoPredictor([_signal()], min_requests=20, state_path=state)
    assert auto.choice == "none" and auto.status()["restored"] == 0
    assert any("cannot read state" in r.getMessage() for r in caplog.records)
    await _run(auto, 30)
    assert json.loads(state.read_text())["choice"] == "signal"  # overwritten with good evidence


async def test_unknown_candidates_in_the_state_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state.json"
    pairs = [[float(v), float(v)] for v in range(1, 41)]
    state.write_text(json.dumps({"choice": "gone", "windows": {"gone": pairs, "signal": pairs}}))
    with caplog.at_level(logging.INFO, "lengthwise.predict.auto"):
        auto = AutoPredictor([_noise(), _signal()], min_requests=20, state_path=state)
    assert "gone" not in auto.candidates and auto.status()["restored"] == 40
    assert auto.choice == "signal" and auto.status()["candidates"]["noise"]["n"] == 0
    assert any("ignored: gone" in r.getMessage() for r in caplog.records)


def test_the_spec_takes_a_state_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    auto = make_predictor("auto:candidates=prompt-length|constant:tokens=5,state=~/cache/auto.json,recheck=5")
    assert isinstance(auto, AutoPredictor)
    assert auto.state_path == tmp_path / "cache" / "auto.json" and auto.recheck == 5
    assert make_predictor("auto:candidates=prompt-length").state_path is None  # type: ignore[attr-defined]


async def test_a_shadow_that_ends_after_its_request_completed_is_still_measured() -> None:
    slow = FunctionPredictor(lambda r: r.max_tokens, name="slow", delay_s=0.2)
    auto = AutoPredictor([slow], min_requests=3)
    request = _request(0, 10)
    prediction = await auto.predict(request)
    auto.observe(request, prediction, 10)  # completed before its background prediction ended
    assert slow.observed == [] and auto.status()["candidates"]["slow"]["n"] == 0
    await asyncio.sleep(0.3)
    await asyncio.to_thread(learning_worker().wait, 5)
    assert slow.observed == [("r0", 10.0, 10)] and auto.status()["candidates"]["slow"]["n"] == 1


SHIPPED_PRIOR = RankQuality(n=150, tau=0.39, low=0.29, high=0.49)


async def test_a_shipped_prior_schedules_from_the_first_request() -> None:
    rng = random.Random(1)
    ranker = FunctionPredictor(lambda r: r.max_tokens * rng.uniform(0.5, 2.0), name="ranker", prior_quality=SHIPPED_PRIOR)
    auto = AutoPredictor([_noise(), ranker], min_requests=20)
    assert auto.choice == "ranker"  # before any completion
    predictions = await _run(auto, 40)
    assert predictions[0].source == "ranker" and auto.choice == "ranker"
    status = auto.status()["candidates"]
    assert status["ranker"]["evidence"] == "window" and status["ranker"]["prior"]["tau"] == 0.39
    assert status["noise"]["prior"] is None


async def test_a_prior_that_this_traffic_contradicts_is_dropped() -> None:
    rng = random.Random(2)
    wrong = FunctionPredictor(lambda r: rng.uniform(1, 1000), name="wrong", prior_quality=SHIPPED_PRIOR)
    auto = AutoPredictor([wrong], min_requests=20, recheck=5)
    assert auto.choice == "wrong"
    await _run(auto, 15)
    assert auto.choice == "wrong" and auto.status()["candidates"]["wrong"]["evidence"] == "prior"
    await _run(auto, 30, seed=5)
    assert auto.choice == "none"  # its own window shows no ranking


async def test_a_prompt_sent_again_counts_once() -> None:
    auto = AutoPredictor([_signal()], min_requests=3)
    for i in range(3):
        for j in range(5):  # five prompts, three rounds
            request = _request(j, 100 * (j + 1))
            prediction = await auto.predict(request)
            await asyncio.sleep(0)
            auto.observe(request, prediction, request.max_tokens)
    window = auto.candidates["signal"].window
    assert len(window) == 5 and [a for _, a, _ in window.entries()] == [100, 200, 300, 400, 500]
