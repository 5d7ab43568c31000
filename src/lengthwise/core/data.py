"""Data files shipped inside the package (lengthwise/data/): the Azure trace and the H200 cost profile.

Found through importlib.resources, so an installed lengthwise needs no checkout and no
machine-specific folder; see lengthwise/data/README.md for where each file comes from.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

AZURE_CONV_2023 = "azure_conv_2023.csv.gz"
H200_LLAMA3_8B_PROFILE = "h200_llama3_8b_profile.json"


def packaged(name: str) -> Path:
    """The path of a shipped data file (lengthwise is installed as files, never run from a zip)."""
    path = Path(str(files("lengthwise").joinpath("data", name)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: packaged data file missing (a broken install?)")
    return path
