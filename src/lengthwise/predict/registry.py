"""Predictors by spec, for the CLI, the gateway and the benchmarks: a table of factories.

Specs follow the grammar of `lengthwise.core.spec`: `self`, `self:postfix=fewshot,timeout=5`,
`constant:tokens=200`, `prompt-length`, `oracle:path=docs/results/predict_eval/eval.jsonl`,
`learned:wrap=none` (`predict.learned.spec`), `auto:candidates=self|prompt-length,sample=0.1`
(chooses among candidate specs by measured ranking quality; `state=PATH` keeps its evidence),
and nested to any depth with parentheses:
`auto(candidates=[learned(wrap=self(postfix=fewshot, timeout=5)), prompt-length])`.
Any spec takes `calibration=PATH` (learned online, persisted there), `calibrate=huber|isotonic`
and `features=[expect, prompt_tokens]` to wrap it in a CalibratedPredictor.
Objects and defaults from the caller come as keyword `deps`: `client` (the shared
httpx.AsyncClient), `base_url`, `model`, `priority` (of the prediction queries) and
`fallback_tokens`; spec options override them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from lengthwise.core.spec import Spec, as_spec
from lengthwise.predict.auto.selector import AutoPredictor
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.predict.base import Predictor
from lengthwise.predict.baselines import (
    ConstantPredictor,
    OraclePredictor,
    PromptLengthPredictor,
)
from lengthwise.predict.calibration import CalibratedPredictor, Calibrator
from lengthwise.predict.learned.spec import build_learned
from lengthwise.predict.self_query.predictor import SelfPredictor

#: A factory: the spec's parameters and the caller's deps → a predictor.
Factory = Callable[[dict[str, Any], dict[str, Any]], Predictor]
Cast = Callable[[Any], Any]


def _optional(cast: Cast) -> Cast:
    return lambda value: None if value is None else cast(value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


#: Option in a `self` spec → (SelfPredictor keyword, type).
_SELF_OPTIONS: dict[str, tuple[str, Cast]] = {
    "postfix": ("postfix", str),
    "timeout": ("timeout_s", float),
    "max_tokens": ("max_tokens_limit", int),
    "fallback": ("fallback_tokens", float),
    "query_max_tokens": ("query_max_tokens", int),
    "top_logprobs": ("top_logprobs", int),
    "priority": ("priority", _optional(int)),
    "max_prompt_tokens": ("max_prompt_tokens", int),
    "url": ("base_url", str),
    "model": ("model", str),
}
_AUTO_OPTIONS: dict[str, Cast] = {
    "candidates": _listed, "state": _optional(lambda v: Path(str(v))), "sample": float, "window": int,
    "min_requests": int, "confidence": float, "margin": float, "recheck": int, "fallback_tokens": float,
}
#: Options any spec takes: they wrap the predictor in a CalibratedPredictor.
_CALIBRATION_OPTIONS = ("calibration", "calibrate", "features")
#: Default calibration features per predictor kind; for `self`, the set that ranked
#: best in the measured eval (docs/PREDICTION.md).
_CAL_FEATURES = {"self": ("expect", "entropy", "prompt_tokens"), "prompt-length": ("prompt_tokens",)}


def make_predictor(spec: str | Spec, **deps: Any) -> Predictor:
    """Build a predictor from a spec (text or parsed); unknown names or options raise ValueError."""
    name, params = as_spec(spec, "predictor spec")
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; known: {', '.join(PREDICTORS)}")
    calibration = {key: params[key] for key in _CALIBRATION_OPTIONS if key in params}
    own = {key: value for key, value in params.items() if key not in calibration}
    predictor = PREDICTORS[name](own, deps)
    return _calibrated(predictor, name, calibration) if calibration else predictor


def _calibrated(predictor: Predictor, name: str, options: Mapping[str, Any]) -> CalibratedPredictor:
    features = tuple(map(str, _listed(options["features"]))) if "features" in options \
        else _CAL_FEATURES.get(name, ("expect",))
    defaults = {"features": features, "method": str(options.get("calibrate", "huber"))}
    path = options.get("calibration")
    calibrator = Calibrator.load(str(path), **defaults) if path else Calibrator(**defaults)  # type: ignore[arg-type]
    return CalibratedPredictor(predictor, calibrator, str(path) if path else None)


def _cast(name: str, params: Mapping[str, Any], allowed: Mapping[str, Cast]) -> dict[str, Any]:
    """`params` cast to their types; ValueError names unknown or bad options."""
    unknown = set(params) - set(allowed)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for {name}; known: {', '.join(allowed)}")
    try:
        return {key: allowed[key](value) for key, value in params.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: bad option in {dict(params)}: {e}") from None


def _deps(deps: Mapping[str, Any], *names: str, **renamed: str) -> dict[str, Any]:
    """Keyword defaults taken from `deps` (`renamed`: keyword → deps name)."""
    wanted = {name: name for name in names} | renamed
    return {keyword: deps[source] for keyword, source in wanted.items() if source in deps}


def _self(params: dict[str, Any], deps: dict[str, Any]) -> Predictor:
    if "client" not in deps:
        raise ValueError("the self predictor needs an httpx.AsyncClient as deps['client']")
    options = _cast("self", params, {key: cast for key, (_, cast) in _SELF_OPTIONS.items()})
    kwargs = {"base_url": deps.get("base_url"), "model": deps.get("model"), **_deps(deps, "priority", "fallback_tokens")}
    kwargs |= {_SELF_OPTIONS[key][0]: value for key, value in options.items()}
    return SelfPredictor(deps["client"], **kwargs)


def _oracle(path: str | None = None, default: float = FALLBACK_TOKENS) -> OraclePredictor:
    if path is None:
        raise ValueError("oracle needs path=FILE (JSON {prompt_hash: tokens} or eval JSONL)")
    return OraclePredictor.from_file(path, default=default)


def _auto(params: dict[str, Any], deps: dict[str, Any]) -> Predictor:
    """Candidates built from their specs (`self|prompt-length` unless given); `state=PATH` persists the choice."""
    options = {"candidates": ["self", "prompt-length"], **_cast("auto", params, _AUTO_OPTIONS)}
    candidates = [make_predictor(candidate, **deps) for candidate in options.pop("candidates")]
    return AutoPredictor(candidates, state_path=options.pop("state", None), **_deps(deps, "fallback_tokens") | options)


PREDICTORS: dict[str, Factory] = {
    "self": _self,
    "constant": lambda p, d: ConstantPredictor(**_cast("constant", p, {"tokens": float})),
    "prompt-length": lambda p, d: PromptLengthPredictor(
        **_deps(d, "fallback_tokens") | _cast("prompt-length", p, {"ratio": float, "fallback_tokens": float})
    ),
    "oracle": lambda p, d: _oracle(
        **_deps(d, default="fallback_tokens") | _cast("oracle", p, {"path": _optional(str), "default": float})
    ),
    "auto": _auto,
    "learned": lambda p, d: build_learned(p, partial(make_predictor, **d)),
}

__all__ = ["PREDICTORS", "make_predictor"]
