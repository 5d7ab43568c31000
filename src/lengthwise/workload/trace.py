"""Request traces from CSV or JSON lines: arrival times and token counts under the usual column names.

An operator's own log is rarely in our format, so the reader looks for each role
under the names the public traces and benchmark tools use (case, spaces and
underscores ignored):

- arrival: ``arrived_at`` (Splitwise/vidur), ``TIMESTAMP`` (Azure 2023/2024, absolute
  datetimes), ``Timestamp`` (BurstGPT), ``timestamp`` (Mooncake, in ms: add
  ``time_unit=ms``), ``arrival``/``arrival_time`` (our records), ...
- prompt tokens: ``ContextTokens`` (Azure), ``num_prefill_tokens``, ``prompt_tokens``,
  ``input_len``/``input_length`` (vLLM benchmarks, Mooncake), ``Request tokens`` (BurstGPT), ...
- output tokens: ``GeneratedTokens`` (Azure), ``num_decode_tokens``, ``output_tokens``,
  ``output_len``/``output_length``, ``completion_tokens``, ``Response tokens``, ...
- text (optional): ``prompt``, ``text``, ``input``; with no prompt-token column the
  prompt is counted from it (cl100k).

Spec (``--workload trace:...``): ``PATH`` or ``PATH,arrival=COL,prompt=COL,output=COL,
text=COL,time_unit=s|ms|us`` to name columns the aliases miss (quote names with spaces:
``prompt="Request tokens"``). Numbers are seconds unless `time_unit` says otherwise;
datetimes (ISO 8601, e.g. ``2023-11-16 18:15:46.6805900``) are read as such.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np

from lengthwise.core.spec import parse_params
from lengthwise.workload.arrivals import tile_arrivals

ALIASES: dict[str, tuple[str, ...]] = {
    "arrival": (
        "arrived_at", "arrival", "arrival_time", "arrival_s", "arrival_time_s", "timestamp", "time", "ts",
        "request_time", "created", "created_at", "start_time", "send_time",
    ),
    "prompt": (
        "context_tokens", "num_prefill_tokens", "prompt_tokens", "prompt_len", "prompt_length", "input_tokens",
        "input_len", "input_length", "num_input_tokens", "request_tokens", "prefill_tokens", "input_toks", "prompt",
        "input",
    ),
    "output": (
        "generated_tokens", "num_decode_tokens", "output_tokens", "output_len", "output_length", "completion_tokens",
        "num_output_tokens", "response_tokens", "decode_tokens", "output_toks", "output",
    ),
    "text": ("prompt", "text", "prompt_text", "input", "question"),
}  # fmt: skip
REQUIRED = ("arrival", "output")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
OPTIONS = (*ALIASES, "time_unit")


@dataclass(frozen=True)
class Trace:
    """Arrival offsets (s, from 0) and token counts, one row per request in arrival order; `texts` if the trace has them."""

    arrival: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    texts: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.arrival.size)

    def tiled(self, n: int | None) -> Trace:
        """The first `n` requests of the trace repeated back to back in time (itself when `n` is None)."""
        if n is None:
            return self
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        texts = None if self.texts is None else tuple(self.texts[i % len(self)] for i in range(n))
        return Trace(
            tile_arrivals(self.arrival, n), np.resize(self.prompt_tokens, n), np.resize(self.output_tokens, n), texts
        )


def _key(name: str) -> str:
    """A column name as compared with the aliases: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _open(path: Path) -> IO[str]:
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if ".jsonl" in suffixes or ".ndjson" in suffixes:
        return True
    if ".csv" in suffixes or ".tsv" in suffixes:
        return False
    with _open(path) as f:
        return f.read(256).lstrip()[:1] == "{"


def _dialect(sample: str) -> type[csv.Dialect]:
    """Comma, semicolon or tab separated, as the sample shows; commas when it cannot tell."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _rows(path: Path) -> Iterator[Mapping[str, Any]]:
    with _open(path) as f:
        if not _is_jsonl(path):
            sample = f.read(4096)
            f.seek(0)
            yield from csv.DictReader(f, dialect=_dialect(sample))
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON object ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
            yield row


def _find(role: str, columns: Sequence[str], mapping: Mapping[str, str]) -> str | None:
    """The column that plays `role`: the one mapped to it, else the first alias present."""
    by_key = {_key(c): c for c in columns}
    if role in mapping:
        wanted = str(mapping[role])
        return wanted if wanted in columns else by_key.get(_key(wanted))
    return next((by_key[_key(a)] for a in ALIASES[role] if _key(a) in by_key), None)


def _seconds(value: Any, unit: float) -> float:
    """A number of `unit` seconds, or an ISO 8601 datetime as POSIX seconds (naive ones taken as UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) * unit
    text = str(value).strip()
    try:
        return float(text) * unit
    except ValueError:
        stamp = datetime.fromisoformat(text)
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def _tokens(value: Any) -> int:
    number = float(value)
    if not number >= 0 or number != int(number):
        raise ValueError(f"{value!r} is not a token count")
    return int(number)


def _roles(path: Path, columns: Sequence[str], mapping: Mapping[str, Any], first: Mapping[str, Any]) -> dict[str, Any]:
    """Which column plays each role; ValueError naming a missing one and the columns found.

    A column such as ``prompt`` may hold text or a token count: its first value decides.
    """
    found = {role: _find(role, columns, mapping) for role in ALIASES}
    if found["text"] is not None and _is_number(first.get(found["text"])) and "text" not in mapping:
        found["text"] = None
    elif found["text"] is not None and found["prompt"] == found["text"]:
        found["prompt"] = None
    for role in (*REQUIRED, *([] if found["text"] else ["prompt"])):
        if found[role] is None:
            looked = f"the column {mapping[role]!r} given" if role in mapping else ", ".join(ALIASES[role])
            raise ValueError(
                f"trace {path}: no {role} column (looked for {looked}); columns found: {', '.join(columns)}. "
                f"Name it with trace:{path},{role}=COLUMN"
            )
    return found


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _cell(path: Path, n: int, row: Mapping[str, Any], column: str, parse: Callable[[Any], Any]) -> Any:
    if column not in row or row[column] in (None, ""):
        raise ValueError(f"trace {path}: row {n} has no value in column {column!r}")
    try:
        return parse(row[column])
    except (TypeError, ValueError):
        raise ValueError(f"trace {path}: row {n}, column {column!r}: cannot read {row[column]!r}") from None


def load_trace(path: Path, mapping: Mapping[str, Any] | None = None) -> Trace:
    """A CSV (.csv, .csv.gz, ; or tab separated) or JSON-lines trace, sorted by arrival, first at 0.

    Zero-token prompts and answers count as one token (an engine serves at least one).
    ValueError names the missing column and the columns found, or the row and value it cannot read.
    """
    path = Path(path)
    mapping = dict(mapping or {})
    if unknown := sorted(set(mapping) - set(OPTIONS)):
        raise ValueError(f"trace {path}: unknown option {unknown[0]!r}; options: {', '.join(OPTIONS)}")
    unit_name = str(mapping.pop("time_unit", "s"))
    if unit_name not in TIME_UNITS:
        raise ValueError(f"trace {path}: time_unit must be one of {', '.join(TIME_UNITS)}, got {unit_name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"trace not found: {path}")
    rows = list(_rows(path))
    if not rows:
        raise ValueError(f"trace {path}: no rows")
    columns = list(dict.fromkeys(c for row in rows[:100] for c in row))
    found = _roles(path, columns, mapping, rows[0])
    unit = TIME_UNITS[unit_name]
    arrival = [_cell(path, n, row, found["arrival"], lambda v: _seconds(v, unit)) for n, row in enumerate(rows, 1)]
    output = [_cell(path, n, row, found["output"], _tokens) for n, row in enumerate(rows, 1)]
    texts = [_cell(path, n, row, found["text"], str) for n, row in enumerate(rows, 1)] if found["text"] else []
    if found["prompt"]:
        prompt = [_cell(path, n, row, found["prompt"], _tokens) for n, row in enumerate(rows, 1)]
    else:
        from lengthwise.core.tokens import count_tokens

        prompt = [count_tokens(t) for t in texts]
    order = np.argsort(np.asarray(arrival), kind="stable")
    start = np.asarray(arrival)[order[0]]
    return Trace(
        np.asarray(arrival)[order] - start,
        np.maximum(np.asarray(prompt, dtype=np.int64)[order], 1),
        np.maximum(np.asarray(output, dtype=np.int64)[order], 1),
        tuple(texts[i] for i in order) if found["text"] else None,
    )


def parse_trace_spec(spec: str) -> tuple[Path, dict[str, Any]]:
    """``PATH[,KEY=VALUE...]`` into the path and its options (see the module docstring)."""
    path, _, rest = spec.partition(",")
    if not path.strip():
        raise ValueError(f"trace spec {spec!r}: give a path, as trace:PATH[,arrival=COL,prompt=COL,output=COL]")
    return Path(path.strip()), {k: str(v) for k, v in parse_params(rest, f"trace {spec!r}").items()}


def trace_from_spec(spec: str) -> Trace:
    """The trace a ``trace:`` spec names (the part after the colon)."""
    return load_trace(*parse_trace_spec(spec))
