"""Data of an installed lengthwise: shipped in the package, found without any machine-specific folder."""

from pathlib import Path

import pytest

import lengthwise
from lengthwise.core.data import AZURE_CONV_2023, H200_LLAMA3_8B_PROFILE, packaged
from lengthwise.sim.cost import ProfiledCost
from lengthwise.sim.experiment import build_cost
from lengthwise.workload.azure import load_azure

PACKAGE = Path(lengthwise.__file__).parent


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare machine: another HOME and working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
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
