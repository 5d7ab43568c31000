"""Where the embedded engine keeps its files: under the cache root (LENGTHWISE_CACHE moves it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lengthwise.core.cache import cache_root

MODEL_NAME = "qwen2.5-coder-0.5b-instruct"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


@dataclass(frozen=True)
class CacheLayout:
    """The cache's layout; every path the engine manager touches comes from here."""

    root: Path

    @classmethod
    def default(cls) -> CacheLayout:
        return cls(cache_root())

    @property
    def venv(self) -> Path:
        return self.root / "vllm-venv"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def venv_marker(self) -> Path:
        return self.venv / ".lengthwise-ready"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def chunks(self) -> Path:
        return self.downloads / "chunks"

    @property
    def gguf(self) -> Path:
        return self.downloads / GGUF_NAME

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / MODEL_NAME

    @property
    def model_marker(self) -> Path:
        return self.model_dir / ".complete"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def install_log(self) -> Path:
        return self.state / "install.log"

    def state_file(self, port: int) -> Path:
        """The pid and settings of the engine on `port`: one file per port, so instances don't clash."""
        return self.state / f"engine-{port}.json"

    def server_log(self, port: int) -> Path:
        return self.state / f"engine-{port}.log"
