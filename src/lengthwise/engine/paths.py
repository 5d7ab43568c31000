"""Where the embedded engine keeps its files: under the cache root (LENGTHWISE_CACHE moves it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lengthwise.core.cache import cache_root
from lengthwise.engine.catalog import DEFAULT_MODEL, ModelSpec

#: The default model's served name (what requests to the embedded engine send as `model` by default).
MODEL_NAME = DEFAULT_MODEL.served_name


@dataclass(frozen=True)
class CacheLayout:
    """The cache's layout; every path the engine manager touches comes from here.

    The venv, the state files and the logs are shared; the downloads and the weights are `model`'s.
    """

    root: Path
    model: ModelSpec = DEFAULT_MODEL

    @classmethod
    def default(cls, model: ModelSpec = DEFAULT_MODEL) -> CacheLayout:
        return cls(cache_root(), model)

    def for_model(self, model: ModelSpec) -> CacheLayout:
        return replace(self, model=model)

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
        return self.downloads / f"{self.model.served_name}-chunks"

    @property
    def gguf(self) -> Path:
        return self.downloads / self.model.gguf_name

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / self.model.served_name

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
