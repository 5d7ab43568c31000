"""The engine-free parts of the eviction-window measurement: prompts, shares, plan, fit, plot."""

from pathlib import Path

import numpy as np
import pytest

from lengthwise.bench.eviction import (
    SurvivalFit, Trial, cache_capacity_tokens, cacheable_tokens, eviction_png, fit_survival, plan_trials, unique_prompt,
)  # fmt: skip


def test_prompts_are_reproducible_and_share_no_first_block() -> None:
    a, b = unique_prompt("t1", 200, 0), unique_prompt("t2", 200, 0)
    assert a == unique_prompt("t1", 200, 0)
    assert a.startswith("[t1] ") and b.startswith("[t2] ")
    assert len(a.split()) == 201


def test_cacheable_tokens_are_whole_blocks_leaving_one_to_compute() -> None:
    assert cacheable_tokens(256, 128) == 128  # the last block holds the token that must be computed
    assert cacheable_tokens(257, 128) == 256
    assert cacheable_tokens(100, 128) == 0
    trial = Trial(0, 0, 0, cached_tokens=128, cacheable_tokens=256)
    assert trial.share == 0.5 and Trial.from_dict(trial.as_dict()) == trial
    assert np.isnan(Trial(0, 0, 0).share)


def test_plan_covers_every_setting_each_repeat_in_a_seeded_order() -> None:
    plan = plan_trials([0, 5], [0, 1000, 2000], 2, seed=3)
    assert sorted((t.wait_s, t.filler_words, t.repeat) for t in plan) == sorted(
        (w, f, r) for r in range(2) for w in (0.0, 5.0) for f in (0, 1000, 2000)
    )
    assert [t.filler_words for t in plan] == [t.filler_words for t in plan_trials([0, 5], [0, 1000, 2000], 2, seed=3)]
    with pytest.raises(ValueError, match=">= 0"):
        plan_trials([-1], [0], 1, 0)


def test_the_fit_recovers_a_known_survival_curve() -> None:
    truth = SurvivalFit(w50=3000.0, scale=400.0, rmse=0.0, n=0)
    written = np.linspace(0, 8000, 41)
    fit = fit_survival(written, truth.share(written))
    assert fit.w50 == pytest.approx(3000, rel=1e-3) and fit.scale == pytest.approx(400, rel=1e-2)
    assert fit.rmse < 1e-6 and fit.n == 41
    with pytest.raises(ValueError, match="at least 3"):
        fit_survival([0, 1], [1, 1])


def test_capacity_is_read_from_vllm_metrics() -> None:
    text = 'vllm:cache_config_info{block_size="128",cache_dtype="auto",num_gpu_blocks="31"} 1.0\n'
    assert cache_capacity_tokens(text) == 31 * 128
    assert cache_capacity_tokens("# nothing here") is None


def test_the_plot_is_written(tmp_path: Path) -> None:
    trials = [Trial(w, f, 0, written_tokens=f, cached_tokens=128 if f < 2000 else 0, cacheable_tokens=128)
              for w in (0, 5) for f in (0, 1000, 3000)]  # fmt: skip
    fit = fit_survival([t.written_tokens for t in trials], [t.share for t in trials])
    out = eviction_png({"fillers": trials}, {"fillers": fit}, 4096, tmp_path / "evict.png", "test")
    assert out.stat().st_size > 1000
