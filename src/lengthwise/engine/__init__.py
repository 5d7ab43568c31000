"""The embedded default engine: a real vLLM on this machine's CPU with Qwen2.5-Coder-0.5B-Instruct.

Python API: `start(EngineConfig(port=..., max_num_seqs=...)) -> EngineHandle`, `stop(port)`, `find(port)`.
"""

from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import MODEL_NAME, CacheLayout
from lengthwise.engine.server import EngineConfig, EngineHandle, find, find_all, start, stop

__all__ = [
    "MODEL_NAME",
    "CacheLayout",
    "EngineConfig",
    "EngineError",
    "EngineHandle",
    "find",
    "find_all",
    "start",
    "stop",
]
