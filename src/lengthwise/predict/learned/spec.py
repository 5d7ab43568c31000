"""The `learned` predictor spec, for `lengthwise.predict.registry.make_predictor`.

    learned                        wraps `self`, shipped pretrained model, MiniLM embedding
    learned:wrap=self:postfix=fewshot;timeout=5,state=~/.cache/lengthwise/learned.npz
    learned:wrap=none,pretrained=none,embedding=0

Options: `wrap` (the wrapped predictor's spec, `;` for its commas, `none`),
`pretrained` (`default`, `none` or a path from `lengthwise predict learned train`),
`embedding` (1/0), `state` (where observations and the online model persist),
`min_observations`, `retrain_every`, `window`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import SHIPPED

_INT_OPTIONS = ("min_observations", "retrain_every", "window")
_OPTIONS = ("wrap", "pretrained", "embedding", "state", *_INT_OPTIONS)


def build_learned(options: dict[str, str], deps: dict[str, Any]) -> LearnedPredictor:
    """A LearnedPredictor from spec options; raises ValueError on unknown or bad options."""
    from lengthwise.predict.learned.embedding import PromptEmbedder
    from lengthwise.predict.learned.pretrained import Pretrained
    from lengthwise.predict.registry import make_predictor

    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)} for learned; known: {', '.join(_OPTIONS)}")
    wrap = options.get("wrap", "self").replace(";", ",")
    inner = None if wrap == "none" else make_predictor(wrap, **deps)
    embedding = options.get("embedding", "1").lower() not in ("0", "false", "no", "off")
    source = options.get("pretrained", "default")
    path = SHIPPED if source == "default" else None if source == "none" else Path(source).expanduser()
    pretrained = Pretrained.load(path) if path is not None else None
    if pretrained is not None and not embedding and pretrained.dense_width > 1:
        raise ValueError(f"{path} was trained with the prompt embedding: use embedding=1 or another pretrained=")
    state = options.get("state")
    return LearnedPredictor(
        inner,
        embedder=PromptEmbedder(preload=True) if embedding else None,
        pretrained=pretrained,
        state_path=Path(state).expanduser() if state else None,
        **{key: int(options[key]) for key in _INT_OPTIONS if key in options},
    )
