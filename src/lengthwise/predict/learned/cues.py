"""Explicit length cues in a prompt's text: what it says about the answer's length in so many words.

Why: the MiniLM embedding is truncated to 128 tokens and the TF-IDF weights were fit on
another model's lengths, so a plain instruction like "in 3 sentences", "briefly",
"write an essay" or a pasted block of code is only seen diluted. These few regex
counts cost well under a millisecond on a prompt's head (`predict.prompt.HEAD_CHARS`)
and go to the rank stage beside the embedding.
"""

from __future__ import annotations

import math
import re

import numpy as np

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "twenty": 20, "fifty": 50, "hundred": 100, "a few": 3, "several": 5,
}
_NUMBER = r"(\d{1,5}|" + "|".join(_NUMBER_WORDS) + r")"
_UNITS = {
    "words": r"words?", "sentences": r"sentences?|lines?|bullet(?: points?)?|tweets?",
    "paragraphs": r"paragraphs?|sections?|pages?|chapters?|scenes?",
    "items": r"points?|items?|examples?|steps?|tips|ideas|ways|questions?|names?|titles?|options?|reasons?"
             r"|headlines?|slogans?|taglines?|topics?|things|facts|variations?|versions?",
}
_COUNTED = {unit: re.compile(rf"\b{_NUMBER}[\s-]*(?:\w+[\s-]+)?(?:{pattern})\b", re.I) for unit, pattern in _UNITS.items()}
_LIST = re.compile(rf"\b(?:list|top|give me|name|suggest|provide|generate|write)\s+(?:me\s+)?{_NUMBER}\b", re.I)
_BRIEF = re.compile(
    r"\b(brief(?:ly)?|short(?:ly|er)?|concise(?:ly)?|summari[sz]e|summary|in a nutshell|tl;?dr|yes or no|one word"
    r"|one sentence|just (?:the|give|say|answer|reply|respond)|only (?:the|answer|reply|respond|output)|no explanation"
    r"|without (?:any )?explanation|simple words|quick(?:ly)?)\b", re.I)
_LONG = re.compile(
    r"\b(in detail|detailed|elaborate|comprehensive|step[- ]by[- ]step|thorough(?:ly)?|in depth|in-depth|long"
    r"|full|complete|extensive(?:ly)?|expand|continue|more)\b", re.I)
_GENRE = re.compile(
    r"\b(essay|story|article|blog(?: post)?|poem|song|lyrics|script|screenplay|letter|email|e-mail|report|outline"
    r"|plan|proposal|speech|cover letter|chapter|curriculum|syllabus|guide|tutorial|lesson|course|table)\b", re.I)
_CODE_ASK = re.compile(r"\b(code|function|program|script|class|implement\w*|method|api|query|sql|regex|component)\b", re.I)
_WRITE = re.compile(r"^\s*(?:please\s+|can you\s+|could you\s+)?(write|create|generate|make|draft|compose|design|build"
                    r"|develop|give|list|describe|explain|tell)\b", re.I)
_TRANSFORM = re.compile(r"\b(rewrite|re-write|rephrase|paraphrase|translate|correct|proofread|fix|improve|edit"
                        r"|grammar|convert|refactor)\b", re.I)
_QUESTION_START = re.compile(r"^\s*(what|who|when|where|which|is|are|does|do|can|could|should|would|will|how many)\b", re.I)
_CODE_LINE = re.compile(r"[;{}]\s*$|^\s*(?:def |class |import |from \S+ import|#include|public |function |const |let |var )",
                        re.M)

#: One name per column of `cue_vector`, in order.
CUE_NAMES = (
    "cue_words_log", "cue_sentences_log", "cue_paragraphs_log", "cue_items_log", "cue_list_log",
    "cue_brief", "cue_long", "cue_genre", "cue_code_ask", "cue_write_start", "cue_transform", "cue_question_start",
    "cue_question_marks", "cue_code_block", "cue_code_lines", "cue_newlines_log", "cue_non_ascii", "cue_ends_colon",
)


def _number(text: str) -> float:
    value = _NUMBER_WORDS.get(text.lower())
    return float(value) if value is not None else float(text)


def _largest(pattern: re.Pattern[str], text: str) -> float:
    """log1p of the largest count the pattern states (0 when none)."""
    counts = [_number(match.group(1)) for match in pattern.finditer(text)]
    return math.log1p(max(counts)) if counts else 0.0


def cue_vector(text: str) -> np.ndarray:
    """The cue columns (`CUE_NAMES`) of one prompt's text (its head)."""
    lines = text.count("\n")
    code_lines = len(_CODE_LINE.findall(text))
    non_ascii = sum(ord(c) > 127 for c in text) / max(len(text), 1)
    return np.array([
        *(_largest(_COUNTED[unit], text) for unit in _UNITS), _largest(_LIST, text),
        float(bool(_BRIEF.search(text))), float(bool(_LONG.search(text))), float(bool(_GENRE.search(text))),
        float(bool(_CODE_ASK.search(text))), float(bool(_WRITE.search(text))), float(bool(_TRANSFORM.search(text))),
        float(bool(_QUESTION_START.search(text))), math.log1p(text.count("?")), float("```" in text),
        math.log1p(code_lines), math.log1p(lines), non_ascii, float(text.rstrip().endswith(":")),
    ])


def cue_rows(texts: list[str]) -> np.ndarray:
    """`cue_vector` of each text, one row per text."""
    return np.stack([cue_vector(t) for t in texts]) if texts else np.zeros((0, len(CUE_NAMES)))
