"""Results as Markdown: a table per section (target, measured, met or missed, and why)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT


@dataclass
class Row:
    metric: str
    target: str
    measured: str
    met: bool | None = None  # None: informational, no target
    why: str = ""


@dataclass
class Section:
    title: str
    issue: int | None = None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0

    def add(self, metric: str, target: str, measured: str, met: bool | None = None, why: str = "") -> Row:
        row = Row(metric, target, measured, met, why)
        self.rows.append(row)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({model}){mem}, Linux {platform.release()}, Python {platform.python_version()}"


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "interlock"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + (" (+ uncommitted changes in interlock/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[met]


def render(sections: list[Section], *, preamble: list[str], command: str) -> str:
    lines = [
        "# interlock benchmark results",
        "",
        *preamble,
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: {commit()}",
        f"- Machine: {machine()}",
        f"- Command: `{command}`",
        "",
    ]
    summary = [(s, r) for s in sections for r in s.rows if r.met is not None]
    met = sum(1 for _, r in summary if r.met)
    lines += [f"Targets met: {met} of {len(summary)}.", ""]
    for section in sections:
        title = section.title + (f" (issue {section.issue})" if section.issue else "")
        lines += [f"## {title}", ""]
        if section.skipped:
            lines += [f"Skipped: {section.skipped}", ""]
            continue
        lines += ["| Metric | Target | Measured | Result | Why (when missed) |", "|---|---|---|---|---|"]
        for row in section.rows:
            lines.append(f"| {row.metric} | {row.target} | {row.measured} | {_mark(row.met)} | {row.why} |")
        lines.append("")
        for text in section.notes:
            lines.append(f"- {text}")
        if section.notes:
            lines.append("")
        lines += [f"_Section time: {section.seconds:.0f} s._", ""]
    return "\n".join(lines)
