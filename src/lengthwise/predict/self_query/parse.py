"""Parse a model's free-text length answer: "150", "about 150 tokens", "~200", "150-200", "two hundred".

Small models answer sloppily; a parse either finds one number (or a range, kept as
low/high with its midpoint as the value) or says why not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_UNITS = {
    "zero": 0, "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?(?:\s*k\b)?"
_RANGE = re.compile(rf"({_NUMBER})\s*(?:-|–|—|to|or|and)\s*({_NUMBER})")
_SINGLE = re.compile(_NUMBER)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ParsedLength:
    """A parsed answer: `value` is None when nothing usable was found (`reason` says why)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    reason: str | None = None


def _number(token: str) -> float:
    token = token.replace(",", "").strip()
    if token.endswith("k"):
        return float(token[:-1].strip()) * 1000
    return float(token)


def _words_to_number(text: str) -> float | None:
    """First spelled-out number in `text` ("two hundred and fifty" → 250), if any."""
    total, current, seen = 0, 0, False
    for word in _WORD.findall(text):
        if word in _UNITS and not (word in ("a", "an") and seen):
            if word in ("a", "an"):
                current, seen = 1, False  # "a hundred": counts only if a scale follows
                continue
            current += _UNITS[word]
            seen = True
        elif word in _TENS:
            current += _TENS[word]
            seen = True
        elif word in _SCALES and (seen or current):
            total += max(current, 1) * _SCALES[word]
            current, seen = 0, True
        elif word == "and" and seen:
            continue
        elif seen:
            break
        else:
            current = 0
    return float(total + current) if seen else None


def parse_length(text: str) -> ParsedLength:
    """Parse the first number or range in an answer; junk gives value None and a reason."""
    cleaned = text.strip().lower()
    if not cleaned:
        return ParsedLength(None, reason="empty answer")
    if match := _RANGE.search(cleaned):
        low, high = sorted((_number(match.group(1)), _number(match.group(2))))
        return ParsedLength((low + high) / 2, low, high)
    if match := _SINGLE.search(cleaned):
        value = _number(match.group(0))
        return ParsedLength(value, value, value)
    if (value := _words_to_number(cleaned)) is not None:
        return ParsedLength(value, value, value)
    return ParsedLength(None, reason=f"no number in answer {text.strip()[:40]!r}")


def parse_label(text: str, labels: Mapping[str, float]) -> ParsedLength:
    """The first scale label in the answer ("3", "3.", " 3 "), mapped to tokens."""
    for word in text.replace(".", " ").split():
        if word in labels:
            value = float(labels[word])
            return ParsedLength(value, value, value)
    return ParsedLength(None, reason=f"no scale label in answer {text.strip()[:40]!r}")
