"""The benchmark's scenario list and its derived figures (no stack started: fast).

The scenarios themselves run in ``python -m bench --quick``; here, only that
every named scenario is a module with what ``bench.__main__`` needs, that the
issue's keys are each made by one of them, and the ratio computed from two."""

from __future__ import annotations

import inspect
from pathlib import Path

from bench import __main__ as bench_main

ISSUE_17_KEYS = (
    "tables_10k_rss_mb",
    "tables_10k_ready_s",
    "clients_10k_rss_kb_per_client",
    "clients_10k_last_ms",
    "push_ws_per_s",
    "latency_1k_p99_ms",
    "decode_before_us_per_change",
    "decode_after_us_per_change",
)


def test_every_scenario_has_a_name_a_description_and_an_async_run() -> None:
    for name in bench_main.SCENARIOS:
        module = bench_main.load(name)
        assert module.NAME == name
        assert module.DESCRIPTION
        assert inspect.iscoroutinefunction(module.run)


def test_every_key_of_the_issue_is_made_by_a_scenario() -> None:
    sources = "".join(
        Path(bench_main.load(name).__file__ or "").read_text() for name in bench_main.SCENARIOS
    )
    assert [key for key in ISSUE_17_KEYS if f'"{key}"' not in sources] == []


def test_browser_pushes_are_also_a_ratio_to_the_insert_ceiling_of_the_same_run() -> None:
    figures = {"push_ws_per_s": 500.0, "ceiling_insert_per_s": 20_000.0}
    assert bench_main.derived(figures) == {"push_ws_ratio": 0.025}
    assert bench_main.derived({"push_ws_per_s": 500.0}) == {}
