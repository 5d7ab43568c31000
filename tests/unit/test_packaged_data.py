"""Data and paths of an installed lengthwise: shipped data found in the package, writes kept out of it."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import lengthwise
from lengthwise.core.cache import cache_root
from lengthwise.core.data import AZURE_CONV_2023, H200_LLAMA3_8B_PROFILE, packaged
from lengthwise.sim.cost import ProfiledCost
from lengthwise.sim.experiment import build_cost
from lengthwise.workload.azure import load_azure

PACKAGE = Path(lengthwise.__file__).parent


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare machine: another HOME and working directory, no cache setting."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LENGTHWISE_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_azure_trace_ships_in_the_package(elsewhere: Path) -> None:
    assert packaged(AZURE_CONV_2023).is_relative_to(PACKAGE)
    trace = load_azure()
    assert len(trace) == 19_366
    assert trace.arrival[0] == 0 and trace.output_tokens.max() == 1000


def test_the_h200_profile_ships_in_the_package(elsewhere: Path) -> None:
    assert packaged(H200_LLAMA3_8B_PROFILE).is_relative_to(PACKAGE)
    assert isinstance(build_cost(), ProfiledCost)


def test_a_missing_data_file_says_so() -> None:
    with pytest.raises(FileNotFoundError, match="packaged data"):
        packaged("no-such-file.csv")


def test_the_cache_root_follows_lengthwise_cache(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lengthwise.predict.offline.learned_data import embedding_cache

    assert cache_root() == elsewhere / ".cache" / "lengthwise"
    monkeypatch.setenv("LENGTHWISE_CACHE", str(elsewhere / "cache"))
    assert embedding_cache(SimpleNamespace(max_length=128)) == elsewhere / "cache" / "learned" / "minilm-int8-128.npz"


def test_pretraining_writes_only_where_told(elsewhere: Path) -> None:
    from lengthwise.predict.offline.learned_cli import learned_app

    result = CliRunner().invoke(learned_app, ["train"])
    assert result.exit_code != 0 and "--out" in result.output
