"""Result rows and how they are shown: a text table on stdout, JSON and Markdown files."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One scenario's outcome. `passed` is None when the scenario could not run."""

    key: str
    scenario: str
    figure: str = "-"
    baseline: str = "-"
    ratio: float | None = None
    ratio_label: str = ""  # what the ratio means, e.g. "x faster"
    target: str = ""
    passed: bool | None = None
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers for the JSON file
    error: str | None = None
    seconds: float = 0.0  # wall time of the whole scenario, data generation included

    @property
    def result(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.passed is None:
            return "-"
        return "pass" if self.passed else "FAIL"

    @property
    def ratio_text(self) -> str:
        if self.ratio is None:
            return "-"
        return f"{self.ratio:.2f}{(' ' + self.ratio_label) if self.ratio_label else ''}"


def machine() -> dict[str, Any]:
    """What the figures came from: they are only comparable on the same machine."""
    mem_total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem_total / 2**30, 1),
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


_COLUMNS = ("scenario", "figure", "baseline", "ratio", "target", "result")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.scenario, row.figure, row.baseline, row.ratio_text, row.target, row.result)


def render_text(rows: list[Row]) -> str:
    table = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    lines = []
    for n, line in enumerate(table):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.extend(_footnotes(rows))
    return "\n".join(lines)


def _footnotes(rows: list[Row]) -> list[str]:
    out = []
    for row in rows:
        for note in row.notes:
            out.append(f"- {row.scenario}: {note}")
        if row.error:
            out.append(f"- {row.scenario}: ERROR {row.error}")
    return ["", *out] if out else []


def render_markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    head = (
        f"Benchmark ({meta['scale']} scale), {meta['date']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, {m['cpu']}, Python {m['python']}, {m['system']}\n"
    )
    lines = [head, "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        cells = [c.replace("|", "\\|") for c in _cells(row)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = _footnotes(rows)
    return "\n".join([*lines, *notes]) + "\n"


def write_results(rows: list[Row], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    payload = {**meta, "rows": [asdict(r) | {"result": r.result} for r in rows]}
    js = json.dumps(payload, indent=2, default=str)
    md = render_markdown(rows, meta)
    json_path = out_dir / f"bench-{meta['scale']}-{stamp}.json"
    md_path = json_path.with_suffix(".md")
    json_path.write_text(js)
    md_path.write_text(md)
    # Stable names for "the latest run", so README updates and CI can find it.
    (out_dir / f"latest-{meta['scale']}.json").write_text(js)
    (out_dir / f"latest-{meta['scale']}.md").write_text(md)
    return json_path, md_path
