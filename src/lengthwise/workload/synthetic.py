"""Prompts of a given token count, for traces that log lengths but not text.

Each prompt is a seeded random sequence of common English words, every one a single
cl100k token with or without its leading space, so a prompt of N words is N tokens
(the serving model's tokenizer and chat template count a few more or less). Words are
drawn from the first on, so no two prompts share a cached prefix: a trace replayed
with synthetic prompts prefills as much as the original did.
"""

from __future__ import annotations

import numpy as np

WORDS = (
    "time year people way day man thing woman life child world school state family student group country problem "
    "hand part place case week company system program question work government number night point home water room "
    "mother area money story fact month lot right study book eye job word business issue side kind head house "
    "service friend father power hour game line end member law car city community name team minute idea "
    "kid body information back parent face others level office door health person art war history party result "
    "change reason research girl moment air teacher force education food light blue red green small "
    "large old young long great little good new first last open close read write run walk talk see know think"
).split()


def synthetic_prompt(tokens: int, rng: np.random.Generator) -> str:
    """`tokens` random common words (one cl100k token each), at least one."""
    return " ".join(rng.choice(WORDS, size=max(int(tokens), 1)))
