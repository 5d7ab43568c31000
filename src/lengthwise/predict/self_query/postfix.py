"""Postfix templates for the self-prediction query; `{MAX_TOKENS}` is filled per request.

Everything a variant adds (instructions, examples, a scale) goes after the user's
text, so the rendered prompt keeps the real request's prefix and its cache blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Postfix:
    """A postfix variant; `labels` maps a scale answer ("1".."5") to tokens, None for numeric answers."""

    name: str
    template: str
    labels: Mapping[str, float] | None = field(default=None)

    def render(self, max_tokens: int) -> str:
        return self.template.replace("{MAX_TOKENS}", str(max_tokens))


SEED = Postfix(
    "seed",
    "\n\nDo not answer the above question. Instead, just predict: how many tokens would your "
    "response be if you were to answer? (Note: maximum response length is {MAX_TOKENS} tokens) "
    "Respond with only a number. Be precise",
)

SCALE = Postfix(
    "scale",
    "\n\nDo not answer the above question. Instead, rate how long your answer to it would be:\n"
    "1 = a few words or one sentence\n"
    "2 = a short paragraph\n"
    "3 = a few paragraphs or a short piece of code\n"
    "4 = a long, detailed answer or a full program\n"
    "5 = a very long answer that needs the maximum of {MAX_TOKENS} tokens\n"
    "Respond with only the digit 1, 2, 3, 4 or 5.",
    labels={"1": 15.0, "2": 60.0, "3": 180.0, "4": 350.0, "5": 600.0},
)

FEWSHOT = Postfix(
    "fewshot",
    "\n\nDo not answer the above question. Instead, predict how many tokens your answer would "
    "have (at most {MAX_TOKENS}). Examples of questions and the length of their answers:\n"
    '"What is the capital of France?" -> 8\n'
    '"Translate \'good morning\' into Spanish." -> 12\n'
    '"Give me a short definition of photosynthesis." -> 60\n'
    '"Explain how a hash map works." -> 250\n'
    '"Write a Python class for a bank account with tests." -> 450\n'
    '"Write a detailed essay about climate change." -> {MAX_TOKENS}\n'
    "Respond with only a number.",
)

REFERENCE = Postfix(
    "reference",
    "\n\nDo not answer the above question. Instead, estimate how many tokens a complete answer to it "
    "would take (at most {MAX_TOKENS}). For reference, typical answer lengths:\n"
    "- a yes/no or one-word answer: 5\n"
    "- a single sentence: 30\n"
    "- one paragraph: 100\n"
    "- a step-by-step explanation or a code example: 300\n"
    "- an essay, a story or a long program: {MAX_TOKENS}\n"
    "Respond with only the number of tokens.",
)

POSTFIXES: dict[str, Postfix] = {p.name: p for p in (SEED, SCALE, FEWSHOT, REFERENCE)}


def get_postfix(name_or_template: str | Postfix) -> Postfix:
    """A variant by name, or a custom numeric template given as text."""
    if isinstance(name_or_template, Postfix):
        return name_or_template
    if name_or_template in POSTFIXES:
        return POSTFIXES[name_or_template]
    if "{MAX_TOKENS}" in name_or_template or " " in name_or_template:
        return Postfix("custom", name_or_template)
    raise ValueError(f"unknown postfix {name_or_template!r}; known: {', '.join(POSTFIXES)} or a template")
