"""Run logging: one JSON object per meta-iteration in ``metrics.jsonl``, console output, and the tables and
page sections that scripts write."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON line per record to ``path`` and flushes it at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
            self._file.flush()
        except OSError as error:  # a full disk: say which file
            raise OSError(error.errno, error.strerror, str(self.path)) from None

    def close(self) -> None:
        self._file.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: str | Path, skip_damaged: bool = False) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file; with ``skip_damaged``, lines that are not a JSON object
    (the half-written last line of a killed run) are left out instead of raising ``ValueError``."""
    records = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if not skip_damaged:
                raise
            continue
        if isinstance(record, dict) or not skip_damaged:
            records.append(record)
    return records


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool = False) -> str:
    """A plain-text table with right-aligned columns (a markdown pipe table with ``markdown``)."""
    cells = [list(map(str, header))] + [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "| " + " | ".join("---" for _ in header) + " |")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def append_section(page: Path, header: str, script: str, arguments: Sequence[str], text: str) -> None:
    """Append ``text`` to a markdown page under a heading that is the command that made it
    (``python <script> <arguments>``); a new page starts with ``header``."""
    command = " ".join(["python", script, *arguments])
    if not page.exists():
        page.write_text(header, encoding="utf-8")
    with page.open("a", encoding="utf-8") as out:
        out.write(f"\n## `{command}`\n\n{text}\n")
