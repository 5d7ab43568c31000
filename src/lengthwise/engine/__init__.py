"""The embedded default engine: a real vLLM on this machine's CPU with Qwen2.5-Coder-0.5B-Instruct
(or another model of `catalog.MODELS`).

Python API: `start(EngineConfig(port=..., model=..., max_num_seqs=...)) -> EngineHandle`, `stop(port)`, `find(port)`.
"""

from lengthwise.engine.catalog import MODELS, ModelSpec, model_spec
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import MODEL_NAME, CacheLayout
from lengthwise.engine.server import EngineConfig, EngineHandle, find, find_all, start, stop

__all__ = [
    "MODELS",
    "MODEL_NAME",
    "ModelSpec",
    "model_spec",
    "CacheLayout",
    "EngineConfig",
    "EngineError",
    "EngineHandle",
    "find",
    "find_all",
    "start",
    "stop",
]
