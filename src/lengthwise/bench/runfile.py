"""One benchmark run on disk: its configuration and its request records, in one JSON file.

The file is a JSON object with "config" and "records", which
`lengthwise.core.records.load_records` also reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"config": run.config, "records": [r.to_dict() for r in run.records]}, indent=1))
    tmp.replace(path)
    return path


def load_run(path: Path) -> BenchRun:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise ValueError(f"{path}: not a benchmark run (a JSON object with 'config' and 'records')")
    return BenchRun(dict(data.get("config") or {}), [RequestRecord.from_dict(r) for r in data["records"]])
