"""The `learned` predictor's factory, for the predictor registry (`lengthwise.predict.registry`).

    learned                        wraps `self`, shipped pretrained model, MiniLM embedding
    learned:wrap=self:postfix=fewshot;timeout=5,state=~/.cache/lengthwise/learned.npz
    learned(wrap=self(postfix=fewshot, timeout=5), state=~/.cache/lengthwise/learned.npz)
    learned:wrap=none,pretrained=none,embedding=0

Options: `wrap` (the wrapped predictor's spec, or `none`), `pretrained` (`default`, `none`
or a path from `lengthwise predict learned train`), `embedding` (1/0), `state` (where
observations and the online model persist), `min_observations`, `full_after` (completions before the
online model may use more than the rescaled pretrained score), `retrain_every`, `window`.
The registry passes `build`, which turns the wrapped spec into a predictor, so this module
needs nothing from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lengthwise.predict.base import Predictor
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import SHIPPED
from lengthwise.predict.learned.rank_stage import load_stage

_INT_OPTIONS = ("min_observations", "full_after", "retrain_every", "window")
_OPTIONS = ("wrap", "pretrained", "embedding", "state", *_INT_OPTIONS)


def build_learned(options: Mapping[str, Any], build: Callable[[Any], Predictor]) -> LearnedPredictor:
    """A LearnedPredictor from spec options, the wrapped one from `build(wrap)`; ValueError on bad options."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for learned; known: {', '.join(_OPTIONS)}")
    wrap = options.get("wrap", "self")
    inner = None if _is_none(wrap) else build(wrap)
    embedding = str(options.get("embedding", 1)).lower() not in ("0", "false", "no", "off")
    source = options.get("pretrained", "default")
    path = None if _is_none(source) else SHIPPED if source == "default" else Path(str(source)).expanduser()
    pretrained = load_stage(path) if path is not None else None
    if pretrained is not None and not embedding and pretrained.dense_width > 1:
        raise ValueError(f"{path} was trained with the prompt embedding: use embedding=1 or another pretrained=")
    state = options.get("state")
    return LearnedPredictor(
        inner,
        embedder=PromptEmbedder(preload=True) if embedding else None,
        pretrained=pretrained,
        state_path=None if _is_none(state) else Path(str(state)).expanduser(),
        **{key: int(options[key]) for key in _INT_OPTIONS if key in options},
    )


def _is_none(value: Any) -> bool:
    """`none` in a parsed spec is None; in a hand-written options dict it may be the text."""
    return value is None or value == "none"
