"""Specs: one string names a component, its parameters and the components it is built from.

Policies and predictors share this grammar; their registries (tables of name → factory)
turn the parsed `Spec` trees into objects.

    sjf                                  a name
    srpt:overrun=0.3                     flat parameters, for the command line
    sjf+aging:rate=2,max_wait=30         a chain: a base, then the wrappers around it
    auto(candidates=[learned(wrap=self(postfix=fewshot, timeout=5)), prompt-length])

Grammar (spaces between tokens are ignored)::

    chain := spec ("+" spec)*                    at the top only
    spec  := NAME "(" [param ("," param)*] ")"   nests to any depth
           | NAME ":" param (SEP param)*         flat, see below
           | NAME
    param := KEY "=" value
    value := "[" [value ("," value)*] "]" | spec | QUOTED | SCALAR

The flat form keeps command-line specs short. At the top its SEP is "," and a value may
list items with "|"; a flat spec inside such a value takes ";" as SEP and no "|" lists:
``auto:candidates=learned:wrap=none;state=x|prompt-length``. Deeper than that, write the
spec with parentheses. Scalars: ``none``/``null`` → None, ``inf`` → math.inf, integers,
floats, else the text; a bare word such as ``self`` stays text, and a factory that wants
a spec reads it as one (`as_spec`). Names are lower-cased; dashes in keys become underscores.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple, NoReturn

_NAME = re.compile(r"[A-Za-z_][\w-]*")
_QUOTED = re.compile(r"\"([^\"]*)\"|'([^']*)'")
_SCALAR = re.compile(r"[^\s,;|()\[\]+=\"']+")
_NESTED_AHEAD = re.compile(r"[A-Za-z_][\w-]*\s*\(")
_FLAT_AHEAD = re.compile(r"[A-Za-z_][\w-]*\s*:\s*[A-Za-z_][\w-]*\s*=")


class Spec(NamedTuple):
    """A parsed spec: a component's name and its parameters (scalars, lists or specs)."""

    name: str
    params: dict[str, Any]


def parse_chain(text: str, what: str = "spec") -> list[Spec]:
    """A spec and the wrappers chained after it with "+", base first; ValueError if malformed."""
    if not text or not text.strip():
        raise ValueError(f"empty {what}")
    parser = _Parser(text, what)
    chain = [parser.spec(flat=",")]
    while parser.eat("+"):
        chain.append(parser.spec(flat=","))
    parser.expect_end("',', '+' or the end")
    return chain


def parse_spec(text: str, what: str = "spec") -> Spec:
    """Exactly one spec, no "+" chain; ValueError if malformed."""
    first, *rest = parse_chain(text, what)
    if rest:
        raise ValueError(f"{what} {text!r}: takes one spec, not a '+' chain (a list is [A, B])")
    return first


def parse_params(text: str, what: str = "spec") -> dict[str, Any]:
    """Flat ``K=V,K=V`` parameters alone (the part after ``NAME:``); ValueError if malformed."""
    if not text.strip():
        return {}
    parser = _Parser(text, what)
    params = parser.flat_params(",")
    parser.expect_end("',' or the end")
    return params


def as_spec(value: Any, what: str = "spec") -> Spec:
    """A parameter value that names a component (a bare word, a spec string or a `Spec`) as a `Spec`."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, str):
        return parse_spec(value, what)
    raise ValueError(f"{what}: expected a spec, got {value!r}")


def parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("inf", "infinity"):
        return math.inf
    for number in (int, float):
        try:
            return number(low)
        except ValueError:
            pass
    return text


class _Parser:
    """Recursive descent over `text`; `flat` is the separator a flat spec takes here, None: none allowed."""

    def __init__(self, text: str, what: str) -> None:
        self.text, self.what, self.pos = text, what, 0

    def fail(self, expected: str) -> NoReturn:
        rest = self.text[self.pos :]
        found = repr(rest if len(rest) <= 20 else rest[:20] + "…") if rest else "the end"
        raise ValueError(f"{self.what} {self.text!r}: at character {self.pos + 1}, expected {expected}, found {found}")

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos : self.pos + 1]

    def eat(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def ahead(self, pattern: re.Pattern[str]) -> bool:
        self.peek()
        return pattern.match(self.text, self.pos) is not None

    def take(self, pattern: re.Pattern[str], expected: str) -> re.Match[str]:
        self.peek()
        match = pattern.match(self.text, self.pos) or self.fail(expected)
        self.pos = match.end()
        return match

    def expect_end(self, expected: str) -> None:
        if self.peek():
            self.fail(expected)

    def spec(self, flat: str | None) -> Spec:
        name = self.take(_NAME, "a name").group().lower()
        if self.eat("("):
            return Spec(name, self.nested_params())
        if flat is not None and self.eat(":"):
            return Spec(name, self.flat_params(flat))
        return Spec(name, {})

    def nested_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.eat(")"):
            return params
        while True:
            key = self.key()
            params[key] = self.value(flat=None)
            if self.eat(")"):
                return params
            if not self.eat(","):
                self.fail("',' or ')'")

    def flat_params(self, sep: str) -> dict[str, Any]:
        params: dict[str, Any] = {}
        while True:
            key = self.key()
            if sep == ",":  # the top: "|" lists, flat specs one level down
                items = [self.value(flat=";")]
                while self.eat("|"):
                    items.append(self.value(flat=";"))
                params[key] = items if len(items) > 1 else items[0]
            else:
                params[key] = self.value(flat=None)
            if not self.eat(sep):
                return params

    def key(self) -> str:
        key = self.take(_NAME, "KEY=VALUE").group()
        if not self.eat("="):
            self.fail(f"'=' after {key!r} (a parameter is KEY=VALUE; {key!r} is not key=value)")
        return key.replace("-", "_")

    def value(self, flat: str | None) -> Any:
        if self.eat("["):
            items: list[Any] = []
            if self.eat("]"):
                return items
            items.append(self.value(flat=None))
            while self.eat(","):
                items.append(self.value(flat=None))
            if not self.eat("]"):
                self.fail("',' or ']'")
            return items
        if self.ahead(_QUOTED):
            quoted = self.take(_QUOTED, "a quoted value")
            return quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        if self.ahead(_NESTED_AHEAD):
            return self.spec(flat=None)
        if self.ahead(_FLAT_AHEAD):
            if flat is None:
                self.fail("a value (a spec this deep takes its parameters in parentheses: NAME(KEY=VALUE, ...))")
            return self.spec(flat)
        return parse_value(self.take(_SCALAR, "a value").group())
