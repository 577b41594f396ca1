"""The fault matrix's table, from a run's figures (test-output/faults/<server>/*.json).

``python -m tests.faults.report`` prints the markdown table of each server that has
figures and, with ``--write``, puts it into docs/reliability.md between the markers
``<!-- matrix:<server> -->`` and ``<!-- /matrix:<server> -->`` (``make test-faults``
does both after running the matrix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "test-output" / "faults"
DOC = REPO / "docs" / "reliability.md"
COLUMNS = [
    "fault",
    "load",
    "recovery (s)",
    "resyncs",
    "changes lost",
    "duplicates",
    "pushes lost",
    "unanswered",
    "reordered",
    "pass",
]


def cell(value: Any) -> str:
    if value is None:
        return "never"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def row(figures: dict[str, Any]) -> list[str]:
    problems = figures.get("problems") or []
    return [
        figures["scenario"],
        figures["load"],
        cell(figures.get("recovery_s")),
        cell(figures.get("resyncs")),
        cell(figures.get("changes_lost")),
        cell(figures.get("duplicates")),
        cell(figures.get("pushes_lost")),
        cell((figures.get("writer") or {}).get("unanswered")),
        cell(figures.get("pushes_reordered", 0)),
        "yes" if not problems else "**no**: " + summary(problems[0]),
    ]


def summary(problem: str) -> str:
    """The first problem, short enough for a table cell."""
    text = re.sub(r"\{'stream'.*", "", problem).replace("|", "/")
    return text[:90].rstrip() + ("…" if len(text) > 90 else "")


def table(server: str) -> str:
    rows = []
    for path in sorted((RESULTS / server).glob("*.json")):
        figures = json.loads(path.read_text())
        if "scenario" in figures and "load" in figures:
            rows.append(row(figures))
    rows.sort(key=lambda r: (r[0], r[1] != "quiet"))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def servers() -> list[str]:
    if not RESULTS.is_dir():
        return []
    return sorted(p.name for p in RESULTS.iterdir() if p.is_dir())


def write(server: str, markdown: str) -> bool:
    """Replace the server's table in docs/reliability.md; False without its markers."""
    text = DOC.read_text()
    start, end = f"<!-- matrix:{server} -->", f"<!-- /matrix:{server} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        return False
    DOC.write_text(pattern.sub(lambda _: f"{start}\n{markdown}\n{end}", text))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/reliability.md")
    args = parser.parse_args(argv)
    found = servers()
    if not found:
        sys.stderr.write(f"no figures in {RESULTS}: run the matrix first\n")
        return 1
    for server in found:
        markdown = table(server)
        sys.stdout.write(f"## {server}\n\n{markdown}\n\n")
        if args.write and not write(server, markdown):
            sys.stderr.write(f"{DOC}: no markers for {server}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
