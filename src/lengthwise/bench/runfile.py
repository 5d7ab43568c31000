"""One benchmark run on disk: its configuration and its request records, in one JSON file.

The file is a JSON object with "config" and "records", which
`lengthwise.core.records.load_records` also reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lengthwise.core.io import atomic_write_json
from lengthwise.core.records import RequestRecord


@dataclass
class BenchRun:
    config: dict[str, Any]
    records: list[RequestRecord] = field(default_factory=list)

    @property
    def succeeded(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]


def save_run(path: Path, run: BenchRun) -> Path:
    """Write atomically (a crash mid-write leaves the previous file intact)."""
    return atomic_write_json(path, {"config": run.config, "records": [r.to_dict() for r in run.records]}, indent=1)


def load_run(path: Path) -> BenchRun:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path}: not a benchmark run (a JSON object with 'config' and 'records')")
    return BenchRun(dict(data.get("config") or {}), [RequestRecord.from_dict(r) for r in data["records"]])
