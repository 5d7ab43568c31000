"""A predictor that learns online from the gateway's own completions.

Every completed request hands the gateway a free label: its actual output tokens.
`LearnedPredictor` turns each prompt into features (prompt length, the wrapped
predictor's self-prediction and its distribution summary, a MiniLM prompt
embedding), and predicts log length with a ridge model refit in the background from
the completions it has observed. Two stages:

- `pretrained` (optional, offline): ridge from prompt length and embedding to the
  log length of ShareGPT's recorded answers, a proxy label that says which prompts
  ask for long answers. Before enough completions are seen, it is the prediction.
- `online`: ridge on the same features plus the self-prediction block and the
  pretrained score (lightly penalized, so the online model can rescale it to this
  model's own lengths), refit every `retrain_every` completions on a sliding window,
  with its shrinkage picked by leave-one-out error. Persisted with its
  observations, so a restart resumes where it stopped.

With neither stage ready the wrapped predictor's prediction is returned as it is.
The embedding runs in a thread concurrently with the wrapped predictor's query, so
it adds little latency beyond it; fits run in a separate single thread and never
block `predict`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lengthwise.predict.base import LengthRequest, Prediction, PredictionCost, Predictor
from lengthwise.predict.embedding import prompt_key
from lengthwise.predict.features import Layout, self_vector
from lengthwise.predict.query import UnpredictableRequest, prompt_text
from lengthwise.predict.ridge import SCALES, LinearModel, fit_ridge
from lengthwise.predict.tokencount import count_tokens

log = logging.getLogger(__name__)

#: Where `lengthwise predict train-learned` writes the pretrained stage by default.
PRETRAINED_PATH = Path(__file__).with_name("learned_pretrained.json")
DEFAULT_MAX_TOKENS = 512


class Embedder(Protocol):
    dimension: int

    def embed(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Pretrained:
    """The offline stage: a ridge on [log prompt tokens, embedding] and where it came from."""

    model: LinearModel
    layout: Layout
    meta: dict[str, Any]

    def save(self, path: Path) -> None:
        data = {"layout": self.layout.to_json(), "model": self.model.to_json(), "meta": self.meta}
        _atomic_write(path, json.dumps(data).encode())

    @classmethod
    def load(cls, path: Path) -> Pretrained:
        data = json.loads(Path(path).read_text())
        return cls(LinearModel.from_json(data["model"]), Layout(**data["layout"]), data.get("meta", {}))


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def online_penalties(layout: Layout, has_pretrained: bool) -> np.ndarray:
    """Base ridge penalties: the pretrained score moves almost freely, the rest scales together."""
    penalties = np.ones(layout.width + int(has_pretrained))
    if has_pretrained:
        penalties[0] = 1e-2
    return penalties


FitFn = Callable[[np.ndarray, np.ndarray, np.ndarray], LinearModel]


@dataclass
class _Pending:
    """A completion waiting to be featurized and learned from."""

    text: str
    self_block: np.ndarray
    vector: np.ndarray | None
    actual: int


class LearnedPredictor:
    """Learns log output length online; see the module docstring.

    `inner` is the wrapped predictor (typically the self-predictor), whose
    prediction is returned at cold start and whose features are used; `embedder`
    is None to learn from prompt length and self-prediction alone.
    """

    name = "learned"

    def __init__(
        self,
        inner: Predictor | None = None,
        *,
        embedder: Embedder | None = None,
        pretrained: Pretrained | None = None,
        state_path: Path | None = None,
        min_observations: int = 30,
        retrain_every: int = 10,
        window: int = 4000,
        fit: FitFn | None = None,
    ) -> None:
        self.inner = inner
        self.embedder = embedder
        self.pretrained = pretrained
        self.layout = Layout(use_self=inner is not None, embedding_dim=embedder.dimension if embedder else 0)
        if pretrained is not None and pretrained.layout.embedding_dim not in (0, self.layout.embedding_dim):
            raise ValueError("the pretrained model's embedding width differs from the embedder's")
        self.state_path = state_path
        self.min_observations = min_observations
        self.retrain_every = retrain_every
        self._fit = fit or (lambda X, y, penalties: fit_ridge(X, y, penalties, SCALES))
        self._online: LinearModel | None = None
        self._X: deque[np.ndarray] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window)
        self._pending: list[_Pending] = []
        self._seen: OrderedDict[str, tuple[np.ndarray, Prediction | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._training: Future[None] | None = None
        self._embed_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="learned-embed")
        self._train_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learned-fit")
        self.observed = 0
        self.fits = 0
        if state_path is not None and state_path.exists():
            self._load_state(state_path)

    # -- prediction ---------------------------------------------------------

    async def predict(self, request: LengthRequest) -> Prediction:
        start = time.perf_counter()
        try:
            text = prompt_text(request)
        except UnpredictableRequest as exc:
            return await self._inner_or_fallback(request, str(exc))
        loop = asyncio.get_running_loop()
        prompt_future = loop.run_in_executor(self._embed_pool, self._prompt_features, text)
        inner = await self._inner_predict(request)
        try:
            prompt_tokens, embedding = await prompt_future
            vector = self.layout.vector(prompt_tokens, self_vector(inner), embedding)
        except Exception as exc:  # the embedding model missing or failing must not harm the request
            log.warning("learned predictor: featurizing failed: %r", exc)
            return inner or _fallback(f"featurizing failed: {exc!r}", start)
        self._remember(request, text, vector, inner)
        return self._predict_vector(vector, request, inner, start)

    def _predict_vector(
        self, vector: np.ndarray, request: LengthRequest, inner: Prediction | None, start: float
    ) -> Prediction:
        online, pretrained = self._online, self.pretrained
        if online is None and pretrained is None:
            return inner or _fallback("cold start: no pretrained model and no observations yet", start)
        pre_score = self._pretrained_score(vector)
        pre_score = None if pre_score is None else float(pre_score)
        if online is not None:
            full = vector if pre_score is None else np.concatenate([[pre_score], vector])
            score, stage = float(online.score(full)), "online"
        else:
            score, stage = float(pre_score), "pretrained"  # type: ignore[arg-type]
        cap = request.max_tokens or DEFAULT_MAX_TOKENS
        tokens = min(max(math.expm1(score), 1.0), float(cap))
        features = dict(inner.features) if inner is not None else {}
        features.update(learned_log=score, prompt_tokens=math.expm1(vector[0]), observed=float(self.observed))
        inner_cost = inner.cost if inner is not None else PredictionCost()
        cost = replace(inner_cost, latency_s=max(inner_cost.latency_s, time.perf_counter() - start))
        return Prediction(
            tokens=tokens,
            source=f"{self.name}:{stage}",
            raw=inner.raw if inner is not None else None,
            quantiles=dict(inner.quantiles) if inner is not None else {},
            cost=cost,
            features=features,
        )

    def _pretrained_score(self, X: np.ndarray) -> Any:
        """The pretrained log length of a feature vector (or of each row), None without one."""
        if self.pretrained is None:
            return None
        columns = [0]
        if self.pretrained.layout.embedding_dim:
            columns += range(self.layout.width - self.layout.embedding_dim, self.layout.width)
        return self.pretrained.model.score(X[..., columns])

    def _prompt_features(self, text: str) -> tuple[int, np.ndarray | None]:
        embedding = self.embedder.embed(text) if self.embedder is not None else None
        return count_tokens(text), embedding

    async def _inner_predict(self, request: LengthRequest) -> Prediction | None:
        if self.inner is None:
            return None
        try:
            return await self.inner.predict(request)
        except Exception as exc:  # a predictor must not raise, but don't trust it
            return _fallback(f"wrapped predictor raised {exc!r}", time.perf_counter())

    async def _inner_or_fallback(self, request: LengthRequest, reason: str) -> Prediction:
        return await self._inner_predict(request) or _fallback(reason, time.perf_counter())

    # -- learning -------------------------------------------------------------

    def _remember(self, request: LengthRequest, text: str, vector: np.ndarray, inner: Prediction | None) -> None:
        with self._lock:
            key = _request_key(request, text)
            self._seen[key] = (vector, inner)
            self._seen.move_to_end(key)
            while len(self._seen) > 4 * (self._X.maxlen or 1000):
                self._seen.popitem(last=False)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Queue the completion for the next background refit; never blocks on a fit."""
        try:
            text = prompt_text(request)
        except UnpredictableRequest:
            return
        with self._lock:
            vector, inner = self._seen.pop(_request_key(request, text), (None, None))
        if self.inner is not None:
            try:
                self.inner.observe(request, inner or prediction, actual_tokens)
            except Exception as exc:
                log.warning("learned predictor: wrapped observe raised %r", exc)
        if actual_tokens < 0:
            return
        self_block = self_vector(inner if vector is not None else prediction)
        pending = _Pending(text, self_block, vector, int(actual_tokens))
        with self._lock:
            self._pending.append(pending)
            self.observed += 1
            due = len(self._pending) >= self.retrain_every and (self._training is None or self._training.done())
            if due:
                self._training = self._train_pool.submit(self._retrain)

    def _retrain(self) -> None:
        try:
            with self._lock:
                pending, self._pending = self._pending, []
            for item in pending:
                vector = item.vector
                if vector is None:
                    prompt_tokens, embedding = self._prompt_features(item.text)
                    vector = self.layout.vector(prompt_tokens, item.self_block, embedding)
                with self._lock:
                    self._X.append(vector)
                    self._y.append(math.log1p(item.actual))
            self._refit()
        except Exception:  # a failed fit keeps the previous model
            log.exception("learned predictor: background fit failed")

    def _refit(self) -> None:
        with self._lock:
            X = np.stack(self._X) if self._X else None
            y = np.asarray(self._y)
        if X is None or len(y) < self.min_observations:
            self._save_state()
            return
        if self.pretrained is not None:
            X = np.column_stack([self._pretrained_score(X), X])
        model = self._fit(X, y, online_penalties(self.layout, self.pretrained is not None))
        self._online = model  # one reference swap: readers see the old or the new model
        self.fits += 1
        self._save_state()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Block until the queued fit (if any) is done and nothing is pending; for tools and tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                training = self._training
                if self._pending and (training is None or training.done()):
                    training = self._training = self._train_pool.submit(self._retrain)
            if training is None or (training.done() and not self._pending):
                return
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            training.result(timeout=remaining)

    def close(self) -> None:
        self._embed_pool.shutdown(wait=False, cancel_futures=True)
        self._train_pool.shutdown(wait=True)

    # -- persistence ------------------------------------------------------------

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        with self._lock:
            X = np.stack(self._X).astype(np.float32) if self._X else np.zeros((0, self.layout.width), np.float32)
            y = np.asarray(self._y, dtype=np.float32)
        meta = {
            "layout": self.layout.to_json(),
            "with_pretrained": self.pretrained is not None,
            "online": self._online.to_json() if self._online else None,
            "observed": self.observed,
            "fits": self.fits,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, X=X, y=y, meta=np.array(json.dumps(meta)))
        _atomic_write(self.state_path, buffer.getvalue())

    def _load_state(self, path: Path) -> None:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if Layout(**meta["layout"]) != self.layout:
                raise ValueError(f"{path}: saved for features {meta['layout']}, not {self.layout.to_json()}")
            self._X.extend(data["X"].astype(np.float64))
            self._y.extend(data["y"].astype(np.float64).tolist())
        self.observed = int(meta.get("observed", len(self._y)))
        self.fits = int(meta.get("fits", 0))
        if meta.get("online") and meta.get("with_pretrained") == (self.pretrained is not None):
            self._online = LinearModel.from_json(meta["online"])
        # else: the saved model used other columns; the observations refit it on the next retrain


def _request_key(request: LengthRequest, text: str) -> str:
    return f"{request.request_id}/{prompt_key(text)}"


def _fallback(reason: str, start: float) -> Prediction:
    return Prediction(
        tokens=float(DEFAULT_MAX_TOKENS) / 2,
        source="learned:fallback",
        fallback_reason=reason,
        cost=PredictionCost(latency_s=max(time.perf_counter() - start, 0.0)),
    )
