"""Predictors by spec string, for the CLI, the gateway and the benchmarks.

A spec is `name[:key=value,key=value]`, e.g. `self`, `self:postfix=fewshot,timeout=5`,
`constant:tokens=200`, `prompt-length`, `oracle:path=docs/results/predict_eval/eval.jsonl`.
Any spec takes `calibration=PATH` (learned online, persisted there) and
`calibrate=huber|isotonic`, `features=expect+prompt_tokens` to wrap it in a
CalibratedPredictor. `auto:candidates=self|prompt-length,sample=0.1` chooses among
candidate specs (`|` between them, `;` for their commas) by measured ranking quality. Objects and defaults from the caller come as keyword `deps`:
`client` (the shared httpx.AsyncClient), `base_url`, `model`, `priority` (of the
prediction queries) and `fallback_tokens`; spec options override them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lengthwise.predict.base import Predictor
from lengthwise.predict.baselines import ConstantPredictor, OraclePredictor, PromptLengthPredictor
from lengthwise.predict.calibration import CalibratedPredictor, Calibrator
from lengthwise.predict.self_query.predictor import SelfPredictor

#: Option name in a spec → (constructor keyword, type).
_SELF_OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "postfix": ("postfix", str),
    "timeout": ("timeout_s", float),
    "max_tokens": ("max_tokens_limit", int),
    "fallback": ("fallback_tokens", float),
    "query_max_tokens": ("query_max_tokens", int),
    "top_logprobs": ("top_logprobs", int),
    "priority": ("priority", lambda v: None if v.lower() == "none" else int(v)),
    "max_prompt_tokens": ("max_prompt_tokens", int),
    "url": ("base_url", str),
    "model": ("model", str),
}
#: Default calibration features per predictor kind; for `self`, the set that ranked
#: best in the measured eval (docs/PREDICTION.md).
_CAL_FEATURES = {"self": ("expect", "entropy", "prompt_tokens"), "prompt-length": ("prompt_tokens",)}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`name:k=v,k=v` → (name, {k: v}); raises ValueError on malformed options."""
    name, _, rest = spec.strip().partition(":")
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"predictor option {item!r} in {spec!r} is not key=value")
        options[key.strip()] = value.strip()
    return name.strip(), options


def _self(options: dict[str, str], deps: dict[str, Any]) -> SelfPredictor:
    if "client" not in deps:
        raise ValueError("the self predictor needs an httpx.AsyncClient as deps['client']")
    kwargs: dict[str, Any] = {"base_url": deps.get("base_url"), "model": deps.get("model")}
    for key, value in options.items():
        if key not in _SELF_OPTIONS:
            raise ValueError(f"unknown option {key!r} for self; known: {', '.join(_SELF_OPTIONS)}")
        target, cast = _SELF_OPTIONS[key]
        kwargs[target] = cast(value)
    for key in ("priority", "fallback_tokens"):
        if key in deps and key not in kwargs:
            kwargs[key] = deps[key]
    return SelfPredictor(deps["client"], **kwargs)


def _options_only(allowed: dict[str, Callable[[str], Any]]) -> Callable[[dict[str, str]], dict[str, Any]]:
    def cast(options: dict[str, str]) -> dict[str, Any]:
        unknown = set(options) - set(allowed)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; known: {', '.join(allowed)}")
        return {key: allowed[key](value) for key, value in options.items()}

    return cast


_BUILDERS: dict[str, Callable[[dict[str, str], dict[str, Any]], Predictor]] = {
    "self": _self,
    "constant": lambda o, d: ConstantPredictor(**_options_only({"tokens": float})(o)),
    "prompt-length": lambda o, d: PromptLengthPredictor(
        **{**_deps(d, "fallback_tokens"), **_options_only({"ratio": float, "fallback_tokens": float})(o)}
    ),
    "oracle": lambda o, d: _oracle(
        **{**_deps(d, default="fallback_tokens"), **_options_only({"path": str, "default": float})(o)}
    ),
}


def _deps(deps: dict[str, Any], *names: str, **renamed: str) -> dict[str, Any]:
    """Keyword defaults taken from `deps` (`renamed`: keyword → deps name)."""
    wanted = {name: name for name in names} | renamed
    return {keyword: deps[source] for keyword, source in wanted.items() if source in deps}


def _oracle(path: str | None = None, default: float = 256.0) -> OraclePredictor:
    if path is None:
        raise ValueError("oracle needs path=FILE (JSON {prompt_hash: tokens} or eval JSONL)")
    return OraclePredictor.from_file(path, default=default)


def _auto(options: dict[str, str], deps: dict[str, Any]) -> Predictor:
    """`auto:candidates=A|B,...`; `state=PATH` keeps the choice's evidence across restarts."""
    from pathlib import Path

    from lengthwise.predict.auto.selector import AutoPredictor

    specs = options.pop("candidates", "self|prompt-length").split("|")
    state = options.pop("state", None)
    kwargs = _options_only({"sample": float, "window": int, "min_requests": int, "confidence": float,
                            "margin": float, "recheck": int, "fallback_tokens": float})(options)
    candidates = [make_predictor(spec.replace(";", ","), **deps) for spec in specs if spec.strip()]
    return AutoPredictor(candidates, state_path=Path(state) if state else None,
                         **{**_deps(deps, "fallback_tokens"), **kwargs})


def _learned(options: dict[str, str], deps: dict[str, Any]) -> Predictor:
    from lengthwise.predict.learned.spec import build_learned

    return build_learned(options, deps)


_BUILDERS["auto"] = _auto
_BUILDERS["learned"] = _learned


def make_predictor(spec: str, **deps: Any) -> Predictor:
    """Build a predictor from a spec; unknown names or options raise ValueError."""
    name, options = parse_spec(spec)
    if name not in _BUILDERS:
        raise ValueError(f"unknown predictor {name!r}; known: {', '.join(_BUILDERS)}")
    calibration = {key: options.pop(key) for key in ("calibration", "calibrate", "features") if key in options}
    predictor = _BUILDERS[name](options, deps)
    if not calibration:
        return predictor
    features = tuple(calibration["features"].split("+")) if "features" in calibration else _CAL_FEATURES.get(name, ("expect",))
    defaults = {"features": features, "method": calibration.get("calibrate", "huber")}
    path = calibration.get("calibration")
    calibrator = Calibrator.load(path, **defaults) if path else Calibrator(**defaults)  # type: ignore[arg-type]
    return CalibratedPredictor(predictor, calibrator, path)


__all__ = ["make_predictor", "parse_spec"]
