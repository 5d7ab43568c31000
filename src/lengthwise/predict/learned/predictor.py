"""A predictor that learns online from the gateway's own completions.

Every completed request hands the gateway a free label: its actual output tokens.
`LearnedPredictor` turns each prompt into features and predicts log length in two
stages:

- `pretrained` (optional, offline): either `pretrained.Pretrained`, a TF-IDF + dense
  ridge fit on ShareGPT's recorded answer lengths (a proxy that says which prompts
  ask for long answers), or `rank_stage.RankStage`, a ranker trained on the serving
  model's own labelled lengths on top of it, with a fitted spread. Before enough
  completions are seen, it is the prediction.
- `online`: ridge on [pretrained score, log prompt tokens, the wrapped predictor's
  self-prediction block, the prompt embedding], refit in the background every
  `retrain_every` completions on a sliding window. The pretrained score is barely
  penalized, so the online model can rescale it to this model's own lengths; the
  rest is shrunk by an amount picked by leave-one-out error. Persisted with its
  observations, so a restart resumes where it stopped.

With neither stage ready the wrapped predictor's prediction is returned as it is.
The prompt features (TF-IDF, embedding) read the prompt's head only (`predict.prompt`),
and are computed by a `MicroBatcher`, together with those of concurrent requests, in
one thread, while the wrapped predictor's query runs. Fits run in the process's
learning worker (`predict.worker`) and never block `predict`.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lengthwise.core.io import atomic_write_bytes
from lengthwise.core.stats import RankQuality
from lengthwise.predict.base import LengthRequest, Prediction, PredictionCost, Predictor
from lengthwise.predict.batcher import Backlogged, MicroBatcher
from lengthwise.predict.learned.distribution import ASSUMED_SIGMA, capped_quantiles, expected_capped
from lengthwise.predict.learned.features import Layout, self_vector
from lengthwise.predict.learned.rank_stage import Stage
from lengthwise.predict.self_query.query import UnpredictableRequest
from lengthwise.predict.learned.ridge import SCALES, LinearModel, fit_ridge
from lengthwise.predict.prompt import Prompt, read_prompt
from lengthwise.predict.worker import learning_worker

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
#: Levels of the quantiles reported with a prediction (of the served length min(L, max_tokens)).
QUANTILE_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
#: Spread (log space) assumed around a proxy pretrained score, which has no measured
#: spread of its own, until the online stage measures one.
PRETRAINED_SIGMA = ASSUMED_SIGMA
#: Penalty of the pretrained-score column relative to the others (1).
PRETRAINED_PENALTY = 1e-2

FitFn = Callable[[np.ndarray, np.ndarray, np.ndarray], LinearModel]


class Embedder(Protocol):
    dimension: int

    def embed_many(self, texts: Sequence[str]) -> np.ndarray: ...


def fit_online(X: np.ndarray, y: np.ndarray, penalties: np.ndarray) -> LinearModel:
    """The default online fit: ridge with its shrinkage chosen by leave-one-out error."""
    return fit_ridge(X, y, penalties, SCALES)


@dataclass
class _Pending:
    """A completion waiting to be learned from (`vector` None: featurize it in the background)."""

    prompt: Prompt | None  # None: shared by another replica, with its vector
    self_block: np.ndarray
    vector: np.ndarray | None
    actual: int


class LearnedPredictor(Predictor):
    """Learns log output length online; see the module docstring.

    `inner` is the wrapped predictor (typically the self-predictor): its prediction
    is returned at cold start and its features are used. `embedder` None learns
    without a prompt embedding.
    """

    name = "learned"

    def __init__(
        self,
        inner: Predictor | None = None,
        *,
        embedder: Embedder | None = None,
        pretrained: Stage | None = None,
        state_path: Path | None = None,
        min_observations: int = 30,
        full_after: int = 100,
        retrain_every: int = 10,
        window: int = 4000,
        fit: FitFn = fit_online,
    ) -> None:
        self.inner = inner
        self.costly = inner is not None and inner.costly
        self.embedder = embedder
        self.pretrained = pretrained
        self.layout = Layout(use_self=inner is not None, embedding_dim=embedder.dimension if embedder else 0)
        if pretrained is not None and pretrained.dense_width not in (1, 1 + self.layout.embedding_dim):
            raise ValueError(
                f"the pretrained model takes {pretrained.dense_width - 1} embedding columns; "
                f"the embedder gives {self.layout.embedding_dim}"
            )
        self.state_path = state_path
        self.min_observations = min_observations
        self.full_after = full_after
        self.retrain_every = retrain_every
        self._fit = fit
        self._online: LinearModel | None = None
        self._X: deque[np.ndarray] = deque(maxlen=window)
        self._y: deque[float] = deque(maxlen=window)
        self._pending: list[_Pending] = []
        self._seen: OrderedDict[str, tuple[np.ndarray, Prediction | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._training: Future[None] | None = None
        #: The prompt part of feature vectors, for the prompts of concurrent requests at once.
        self._features = MicroBatcher(self.featurize, name="learned-features")
        self.observed = 0
        self._share: Callable[[dict[str, Any]], None] | None = None
        self.fits = 0
        if state_path is not None and state_path.exists():
            self._load_state(state_path)

    # -- features ---------------------------------------------------------------

    def featurize(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """The online model's inputs, [pretrained score (if any), layout features], with an empty
        self-prediction block (`_with_self` fills it); one batch for the embedding and TF-IDF."""
        heads = [p.head for p in prompts]
        embeddings = self.embedder.embed_many(heads) if self.embedder is not None else [None] * len(prompts)
        empty = self_vector(None)
        vectors = np.stack([self.layout.vector(p.tokens, empty, e) for p, e in zip(prompts, embeddings)])
        if self.pretrained is None:
            return list(vectors)
        dense = vectors[:, [0, *range(self.layout.width - self.pretrained.dense_width + 1, self.layout.width)]]
        scores = self.pretrained.score(heads, dense)
        return list(np.column_stack([scores, vectors]))

    @property
    def width(self) -> int:
        return self.layout.width + (self.pretrained is not None)

    # -- prediction ---------------------------------------------------------------

    async def predict(self, request: LengthRequest) -> Prediction:
        """Raises Backlogged for a background request when too many prompts wait for their features
        (nothing should be learned from it); otherwise never raises."""
        start = time.perf_counter()
        try:
            prompt = read_prompt(request)
        except UnpredictableRequest as exc:
            return await self._inner_predict(request) or _fallback(str(exc), start)
        if self._online is None and self.pretrained is None:  # cold: nothing to add yet
            inner = await self._inner_predict(request)
            if inner is not None:
                self._remember(request, prompt, None, inner)
            return inner or _fallback("cold start: no pretrained model and no observations yet", start)
        # Start the prompt's features now, then finish them with the inner result.
        prompt_part = asyncio.ensure_future(self._features.submit(prompt, background=request.background))
        try:
            inner = await self._inner_predict(request)
            vector = self._with_self(await prompt_part, self_vector(inner))
        except Backlogged as exc:
            if request.background:
                raise
            return inner or _fallback(f"prediction backlog: {exc}", start)
        except Exception as exc:  # an embedding model missing or failing must not harm the request
            log.warning("learned predictor: featurizing failed: %r", exc)
            return inner or _fallback(f"featurizing failed: {exc!r}", start)
        finally:
            prompt_part.cancel()  # a deadline that ended the wait leaves the batch its item
        self._remember(request, prompt, vector, inner)
        return self._from_vector(vector, request, inner, start)

    def _with_self(self, vector: np.ndarray, self_block: np.ndarray) -> np.ndarray:
        """`vector` with its self-prediction block filled in."""
        if self.layout.use_self:
            offset = 1 + (self.pretrained is not None)  # after [pretrained score], log prompt tokens
            vector = vector.copy()
            vector[offset : offset + len(self_block)] = self_block
        return vector

    def _from_vector(
        self, vector: np.ndarray, request: LengthRequest, inner: Prediction | None, start: float
    ) -> Prediction:
        online = self._online
        if online is not None:
            score, stage = float(online.score(vector)), "online"
            # The leave-one-out error is the online model's log-normal spread.
            spread = online.loo_rmse if math.isfinite(online.loo_rmse) else None
        else:
            score, stage = float(vector[0]), "pretrained"
            spread = self.pretrained.sigma if self.pretrained is not None else None
        cap = float(request.max_tokens or DEFAULT_MAX_TOKENS)
        # tokens: the expected served length, E[min(L, cap)], what a scheduler orders by.
        tokens = max(expected_capped(score, PRETRAINED_SIGMA if spread is None else spread, cap), 1.0)
        quantiles = {} if spread is None else capped_quantiles(score, spread, cap, QUANTILE_LEVELS)
        features = dict(inner.features) if inner is not None else {}
        features.update(learned_log=score, observed=float(self.observed))
        if spread is not None:
            features["learned_sigma"] = spread
        inner_cost = inner.cost if inner is not None else PredictionCost()
        return Prediction(
            tokens=tokens,
            source=f"{self.name}:{stage}",
            quantiles=quantiles,
            raw=inner.raw if inner is not None else None,
            cost=replace(inner_cost, latency_s=max(inner_cost.latency_s, time.perf_counter() - start)),
            features=features,
        )

    async def _inner_predict(self, request: LengthRequest) -> Prediction | None:
        if self.inner is None:
            return None
        try:
            return await self.inner.predict(request)
        except Exception as exc:  # a predictor must not raise, but don't trust it
            return _fallback(f"wrapped predictor raised {exc!r}", time.perf_counter())

    # -- learning -------------------------------------------------------------

    def _remember(self, request: LengthRequest, prompt: Prompt, vector: np.ndarray | None,
                  inner: Prediction | None) -> None:
        with self._lock:
            key = _request_key(request, prompt)
            self._seen[key] = (vector, inner)  # type: ignore[assignment]
            self._seen.move_to_end(key)
            while len(self._seen) > (self._X.maxlen or 1000):  # predictions never observed
                self._seen.popitem(last=False)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Queue the completion for the next background refit; never blocks on a fit."""
        try:
            prompt = read_prompt(request)
        except UnpredictableRequest:
            return
        with self._lock:
            vector, inner = self._seen.pop(_request_key(request, prompt), (None, None))
        if self.inner is not None:
            try:
                self.inner.observe(request, inner or prediction, actual_tokens)
            except Exception as exc:
                log.warning("learned predictor: wrapped observe raised %r", exc)
        if actual_tokens < 0:
            return
        self._learn(_Pending(prompt, self_vector(inner or prediction), vector, int(actual_tokens)))

    def share_with(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """Share each completion's feature vector (embedding, prompt length, self-prediction block: no
        text) with its actual length, as its refit takes it in (a completion never predicted is
        featurized then)."""
        self._share = sink

    def absorb(self, evidence: dict[str, Any]) -> None:
        """Another replica's completion, learned from as if observed here (a vector of another layout,
        from a differently configured replica, is ignored)."""
        vector = np.asarray(evidence["vector"], dtype=float)
        if vector.shape != (self.width,):
            log.debug("learned predictor: shared vector of width %s ignored (ours: %d)", vector.shape, self.width)
            return
        self._learn(_Pending(None, np.empty(0), vector, int(evidence["actual"])))

    def _learn(self, item: _Pending) -> None:
        with self._lock:
            self._pending.append(item)
            self.observed += 1
            if len(self._pending) >= self.retrain_every and (self._training is None or self._training.done()):
                self._training = learning_worker().submit(self._retrain)

    def _retrain(self) -> None:
        try:
            with self._lock:
                pending, self._pending = self._pending, []
            unseen = [item for item in pending if item.vector is None]  # not predicted: featurize now
            prompts = [item.prompt for item in unseen if item.prompt is not None]  # all: shared ones have vectors
            for item, vector in zip(unseen, self.featurize(prompts) if prompts else []):
                item.vector = self._with_self(vector, item.self_block)
            with self._lock:
                for item in pending:
                    self._X.append(item.vector)
                    self._y.append(math.log1p(item.actual))
            if self._share is not None:
                for item in pending:
                    if item.prompt is not None:  # this replica's own, not one shared with it
                        self._share({"vector": item.vector.tolist(), "actual": item.actual})
            self._refit()
        except Exception:  # a failed fit keeps the previous model
            log.exception("learned predictor: background fit failed")

    def _refit(self) -> None:
        with self._lock:
            X = np.stack(self._X) if self._X else None
            y = np.asarray(self._y)
        if X is not None and len(y) >= self.min_observations:
            penalties = np.ones(self.width)
            if self.pretrained is None:
                model = self._fit(X, y, penalties)
            else:
                penalties[0] = PRETRAINED_PENALTY
                rescaled = _padded(self._fit(X[:, :1], y, penalties[:1]), X)
                model = rescaled
                # The full model must beat the pretrained score merely rescaled, by LOO error, and
                # only once there are enough completions: below, its leave-one-out win is often
                # luck and it ranks held-out prompts worse (docs/LEARNED.md).
                if len(y) >= self.full_after:
                    full = self._fit(X, y, penalties)
                    model = full if full.loo_rmse <= rescaled.loo_rmse else rescaled
            self._online = model  # one reference swap: readers see the old model or the new one
            self.fits += 1
        self._save_state()

    def status(self) -> dict[str, Any]:
        """What predictions come from now, and how much has been learned (for status pages)."""
        online = self._online
        stage = "online" if online else "pretrained" if self.pretrained else "cold"
        with self._lock:
            window, pending = len(self._y), len(self._pending)
        return {
            "stage": stage, "observed": self.observed, "window": window, "pending": pending, "fits": self.fits,
            "loo_rmse_log": None if online is None else online.loo_rmse,
        }

    def prior(self) -> RankQuality | None:
        """The pretrained stage's Kendall tau on the held-out test split of the labels it was trained on
        (`predict learned rank --ship` records it), if it was measured."""
        held_out = self.pretrained.meta.get("held_out") if self.pretrained is not None else None
        if not held_out:
            return None
        return RankQuality(int(held_out["n"]), held_out["tau"], held_out["low"], held_out["high"])

    def wait_idle(self, timeout: float | None = None) -> None:
        """Learn from everything observed so far, and return when that fit is done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                training = self._training
                if self._pending and (training is None or training.done()):
                    training = self._training = learning_worker().submit(self._retrain)
            if training is None or (training.done() and not self._pending):
                return
            training.result(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))

    def close(self) -> None:
        """Stop featurizing (from the event loop that predicts, if one runs)."""
        self._features.close()

    async def aclose(self) -> None:
        """Stop featurizing; with `state_path`, learn from the completions still pending (the fit
        saves the state); then close the wrapped predictor."""
        self.close()
        if self.state_path is not None:
            await asyncio.to_thread(self.wait_idle)
        if self.inner is not None:
            await self.inner.aclose()

    # -- persistence ------------------------------------------------------------

    def _identity(self) -> dict[str, object]:
        """What the saved columns depend on: the layout and the pretrained model."""
        return {**self.layout.to_json(), "pretrained": self.pretrained.meta if self.pretrained else None}

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        with self._lock:
            X = np.stack(self._X).astype(np.float32) if self._X else np.zeros((0, self.width), np.float32)
            y = np.asarray(self._y, dtype=np.float32)
        meta = {
            "identity": self._identity(),
            "online": self._online.to_json() if self._online else None,
            "observed": self.observed,
            "fits": self.fits,
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, X=X, y=y, meta=np.array(json.dumps(meta)))
        atomic_write_bytes(self.state_path, buffer.getvalue())

    def _load_state(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta["identity"] != json.loads(json.dumps(self._identity())):
                raise ValueError(
                    f"{path} was saved with other features ({meta['identity']}); "
                    "move it away or choose another state path"
                )
            self._X.extend(data["X"].astype(np.float64))
            self._y.extend(data["y"].astype(np.float64).tolist())
        self.observed = int(meta.get("observed", len(self._y)))
        self.fits = int(meta.get("fits", 0))
        self._online = LinearModel.from_json(meta["online"]) if meta.get("online") else None


def _padded(model: LinearModel, X: np.ndarray) -> LinearModel:
    """A model of X's first column as a model of all of X (zero weight elsewhere)."""
    width = X.shape[1]
    mean, scale, weights = np.zeros(width), np.ones(width), np.zeros(width)
    mean[0], scale[0], weights[0] = model.mean[0], model.scale[0], model.weights[0]
    return LinearModel(mean, scale, weights, model.bias, model.loo_rmse)


def _request_key(request: LengthRequest, prompt: Prompt) -> str:
    return f"{request.request_id}/{prompt.key}"


def _fallback(reason: str, start: float) -> Prediction:
    return Prediction(
        tokens=float(DEFAULT_MAX_TOKENS) / 2,
        source="learned:fallback",
        fallback_reason=reason,
        cost=PredictionCost(latency_s=max(time.perf_counter() - start, 0.0)),
    )
