"""Run the benchmark scenarios: ``python -m bench [--quick] [--json PATH] [SCENARIO ...]``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import traceback
from types import ModuleType

from . import report, stack

# Scenario modules of this package, run in this order (``reql_server``, the
# database alone, runs only when named).
SCENARIOS = (
    "ceilings_db",
    "ceiling_group_send",
    "ceiling_send",
    "ceiling_ws",
    "e2e",
    "fanout",
    "pushes",
    "push_ws",
    "latency_1k",
    "clients_10k",
    "memory",
    "many_tables",
    "decode",
)


def derived(figures: dict[str, float]) -> dict[str, float]:
    """Ratios of figures of one run: pushes from browsers to the insert ceiling."""
    if "push_ws_per_s" in figures and "ceiling_insert_per_s" in figures:
        return {"push_ws_ratio": figures["push_ws_per_s"] / figures["ceiling_insert_per_s"]}
    return {}


def load(name: str) -> ModuleType:
    """A scenario module: ``NAME``, ``DESCRIPTION`` and ``async run(quick) -> figures``."""
    return importlib.import_module(f"bench.{name}")


def format_table(rows: list[tuple[str, str, float]]) -> str:
    """Scenario, figure and value, aligned."""
    header = ("scenario", "figure", "value")
    widths = [
        max(len(header[0]), *(len(row[0]) for row in rows)),
        max(len(header[1]), *(len(row[1]) for row in rows)),
    ]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]:>12}"]
    lines.append("-" * len(lines[0]))
    lines.extend(f"{s:<{widths[0]}}  {f:<{widths[1]}}  {v:>12,.1f}" for s, f, v in rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs, rougher figures")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - {*SCENARIOS, "reql_server"})
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    figures: dict[str, float] = {}
    rows: list[tuple[str, str, float]] = []
    failed: list[str] = []
    try:
        for name in args.scenarios or SCENARIOS:
            scenario = load(name)
            sys.stderr.write(f"# {scenario.NAME}: {scenario.DESCRIPTION}\n")
            started = time.monotonic()
            try:
                result = asyncio.run(scenario.run(quick=args.quick))
            except Exception:  # the other scenarios still run; the run fails at the end
                sys.stderr.write(f"#   {scenario.NAME} FAILED:\n{traceback.format_exc()}")
                failed.append(scenario.NAME)
                continue
            sys.stderr.write(f"#   done in {time.monotonic() - started:.1f} s\n")
            figures.update(result)
            rows.extend((scenario.NAME, key, value) for key, value in result.items())
    finally:
        stack.shutdown()
    extra = derived(figures)
    figures.update(extra)
    rows.extend(("derived", key, value) for key, value in extra.items())

    if rows:
        sys.stdout.write(format_table(rows) + "\n")
    path = args.json or (None if args.quick else str(stack.RESULTS / "latest.json"))
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2, sort_keys=True)
            out.write("\n")
    if failed:
        sys.stderr.write(f"# failed: {', '.join(failed)}\n")
        return 1
    if not args.quick and not args.scenarios:
        report.write(figures)  # plots and docs/benchmarks.md: full runs of every scenario
    return 0


if __name__ == "__main__":
    sys.exit(main())
