"""The full run's report: PNG plots in ``bench/results/`` and ``docs/benchmarks.md``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

from . import stack

DOC = stack.REPO / "docs" / "benchmarks.md"


def against_real_server() -> bool:
    """A real RethinkDB (given by URL or by binary), not the ReQL test server."""
    return bool(
        os.environ.get("CHANGEFLOW_TEST_RETHINKDB")
        or os.environ.get("CHANGEFLOW_TEST_RETHINKDB_BIN")
    )


def markers() -> tuple[str, str]:
    """Where this run's figures go in docs/benchmarks.md: the test server's and a real
    server's runs each keep their own section."""
    kind = "figures, real RethinkDB" if against_real_server() else "figures"
    return f"<!-- {kind}: begin -->", f"<!-- {kind}: end -->"


def plot_name(name: str) -> str:
    return f"{name}-real.png" if against_real_server() else f"{name}.png"


# (name, achieved key, goal as text, test on the figures)
GOALS: list[tuple[str, str, str, Any]] = [
    (
        "feed to browser",
        "e2e_changes_per_s",
        "≥ 0.8 x min(ceiling_feed_per_s, ceiling_ws_frames_per_s)",
        lambda f: (
            f["e2e_changes_per_s"] / min(f["ceiling_feed_per_s"], f["ceiling_ws_frames_per_s"])
        ),
    ),
    (
        "fan-out",
        "fanout_frames_per_s",
        "≥ 0.8 x ceiling_ws_frames_per_s",
        lambda f: f["fanout_frames_per_s"] / f["ceiling_ws_frames_per_s"],
    ),
    (
        "pushes",
        "push_per_s",
        "≥ 0.8 x ceiling_insert_per_s",
        lambda f: f["push_per_s"] / f["ceiling_insert_per_s"],
    ),
    (
        # Not an issue goal: what one sending process gets through the channel layer
        # (the sender's side of ceiling_send), the bound that binds a single producer.
        "pushes against one sender's send rate (context, not an issue goal)",
        "push_per_s",
        "≥ 0.8 x ceiling_send_sender_per_s",
        lambda f: f["push_per_s"] / f["ceiling_send_sender_per_s"],
    ),
]


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, OS, Python and the versions of the parts."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    ram = next(
        int(line.split()[1]) / 1024 / 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "Django",
            "channels",
            "channels-redis",
            "daphne",
            "redis",
            "rethinkdb",
            "websockets",
        )
    )
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "RAM": f"{ram:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "Redis": redis.split()[2].removeprefix("v=") if redis else "?",
        "RethinkDB": (os.environ.get("CHANGEFLOW_TEST_RETHINKDB") and "real server")
        or (os.environ.get("CHANGEFLOW_TEST_RETHINKDB_BIN") and "real server, its own process")
        or "the ReQL test server (in-memory, Python), its own process",
        "packages": packages,
    }


def plots(figures: dict[str, float] | None = None) -> list[str]:
    """Latency distribution and throughput against clients, and (issue 17) latency
    at 1,000 changes/s and RSS against clients and tables, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    latencies = json.loads((stack.RESULTS / "e2e_latencies.json").read_text())
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.hist(latencies, bins=100, range=(0, max(50.0, max(latencies, default=0) * 0.5)))
    axis.set_xlabel("latency, write to client receipt (ms)")
    axis.set_ylabel("changes")
    axis.set_title("Feed to browser latency, 200 changes/s, 10 clients")
    figure.tight_layout()
    figure.savefig(stack.RESULTS / plot_name("latency"), dpi=100)
    made.append(plot_name("latency"))

    curve = json.loads((stack.RESULTS / "fanout_curve.json").read_text())
    sizes = [int(size) for size in curve if "frames_per_s" in curve[size]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [curve[str(s)]["frames_per_s"] for s in sizes], marker="o")
    left.set_xscale("log")
    left.set_xlabel("subscribed clients")
    left.set_ylabel("change frames/s, all clients")
    left.set_title("Sustained throughput")
    every = [int(size) for size in curve]
    right.plot(every, [curve[str(s)]["last_ms"] for s in every], marker="o", label="last client")
    right.plot(every, [curve[str(s)]["first_ms"] for s in every], marker="o", label="first client")
    right.set_xscale("log")
    right.set_xlabel("subscribed clients")
    right.set_ylabel("ms from the write")
    right.set_title("One change to N clients")
    right.legend()
    figure.tight_layout()
    figure.savefig(stack.RESULTS / plot_name("throughput_clients"), dpi=100)
    made.append(plot_name("throughput_clients"))
    if figures is not None:
        made += issue_17_plots(plt, figures)
    return made


def issue_17_plots(plt: Any, figures: dict[str, float]) -> list[str]:
    """Latency percentiles at 1,000 changes/s to 100 clients; Daphne's RSS against
    clients (``fanout``'s 1,000, ``clients_10k``'s count) and a worker's against
    tables (``memory``'s 1,000, ``many_tables``' count)."""
    made = []
    latencies = stack.RESULTS / "latency_1k.json"
    if latencies.exists():
        values = sorted(json.loads(latencies.read_text()))
        figure, axis = plt.subplots(figsize=(7, 4))
        fractions = [0.5, 0.9, 0.95, 0.99, 0.999]
        axis.plot(
            [f"p{f * 100:g}" for f in fractions],
            [values[min(len(values) - 1, int(f * len(values)))] for f in fractions],
            marker="o",
        )
        axis.set_yscale("log")
        axis.set_ylabel("ms, write to client receipt")
        axis.set_title("Latency percentiles, 1,000 changes/s to 100 clients")
        figure.tight_layout()
        figure.savefig(stack.RESULTS / plot_name("latency_1k"), dpi=100)
        made.append(plot_name("latency_1k"))
    clients = measured_points(
        (1000, figures.get("daphne_rss_mb_1000_clients")),
        (figures.get("clients_10k_count", 0), figures.get("clients_10k_daphne_rss_mb")),
    )
    tables = measured_points(
        (1000, figures.get("worker_rss_mb_1000_tables")),
        (figures.get("tables_10k_count", 0), figures.get("tables_10k_rss_mb")),
    )
    if clients or tables:
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.plot([n for n, _ in clients], [rss for _, rss in clients], marker="o")
        left.set_xlabel("subscribed clients")
        left.set_ylabel("Daphne RSS (MiB)")
        left.set_title("Memory against clients")
        right.plot([n for n, _ in tables], [rss for _, rss in tables], marker="o")
        right.set_xlabel("tables followed")
        right.set_ylabel("worker RSS (MiB)")
        right.set_title("Memory against tables")
        figure.tight_layout()
        figure.savefig(stack.RESULTS / plot_name("rss"), dpi=100)
        made.append(plot_name("rss"))
    return made


def measured_points(*pairs: tuple[Any, Any]) -> list[tuple[int, Any]]:
    """The (count, value) pairs that were measured (a count and a value), by count."""
    return sorted((int(n), value) for n, value in pairs if value is not None and n)


def figures_section(figures: dict[str, float]) -> str:
    """The machine, every figure, the ratios and the plots, as Markdown."""
    lines = ["## Machine", ""]
    lines += [f"- **{key}**: {value}" for key, value in machine().items()]
    lines += ["", "## Figures", "", "| key | value |", "|---|---:|"]
    lines += [f"| `{key}` | {value:,.1f} |" for key, value in sorted(figures.items())]
    lines += [
        "",
        "## Against the goals",
        "",
        "| goal | figure | ratio | met |",
        "|---|---|---:|---|",
    ]
    for name, key, goal, ratio in GOALS:
        value = ratio(figures)
        lines.append(
            f"| {name}: {goal} | `{key}` | {value:.2f} | {'yes' if value >= 0.8 else 'no'} |"
        )
    p99 = figures["e2e_latency_p99_ms"]
    lines.append(
        f"| p99 latency < 25 ms at 200/s, 10 clients | `e2e_latency_p99_ms` | {p99:.1f} ms | {'yes' if p99 < 25 else 'no'} |"
    )
    last = figures["fanout_last_ms"]
    clients = int(figures["fanout_clients"])
    lines.append(
        f"| 1,000 clients reached < 250 ms | `fanout_last_ms` ({clients} clients) | {last:.0f} ms | {'yes' if last < 250 and clients >= 1000 else 'no'} |"
    )
    lines += issue_17_goals(figures)
    lines += [
        "",
        f"![Latency distribution](../bench/results/{plot_name('latency')})",
        "",
        f"![Throughput against clients](../bench/results/{plot_name('throughput_clients')})",
        "",
        f"![Latency at 1,000 changes/s](../bench/results/{plot_name('latency_1k')})",
        "",
        f"![RSS against clients and tables](../bench/results/{plot_name('rss')})",
    ]
    return "\n".join(lines)


def issue_17_goals(figures: dict[str, float]) -> list[str]:
    """Issue 17's goals as rows of the goals table (those the run measured)."""
    rows = []
    if "push_ws_ratio" in figures:
        ratio = figures["push_ws_ratio"]
        rows.append(
            f"| pushes from 100 browser connections ≥ 0.5 x ceiling_insert_per_s | `push_ws_per_s` | {ratio:.2f} | {'yes' if ratio >= 0.5 else 'no'} |"
        )
    if "latency_1k_p99_ms" in figures:
        p99 = figures["latency_1k_p99_ms"]
        rows.append(
            f"| p99 latency < 10 ms at 1,000/s, 100 clients | `latency_1k_p99_ms` | {p99:.1f} ms | {'yes' if p99 < 10 else 'no'} |"
        )
    if "clients_10k_count" in figures:
        held = int(figures["clients_10k_count"])
        rows.append(
            f"| one Daphne holds 10,000 subscribed clients | `clients_10k_count` | {held:,} ({figures['clients_10k_rss_kb_per_client']:.1f} KB each, last {figures['clients_10k_last_ms']:,.0f} ms) | {'yes' if held >= 10_000 else 'no'} |"
        )
    if "tables_10k_count" in figures:
        count = int(figures["tables_10k_count"])
        rows.append(
            f"| a worker follows 10,000 tables | `tables_10k_count` | {count:,} ({figures['tables_10k_rss_mb']:.0f} MB, ready in {figures['tables_10k_ready_s']:.1f} s) | {'yes' if count >= 10_000 else 'no'} |"
        )
    return rows


def write(figures: dict[str, float]) -> None:
    """Plots, then the generated part of ``docs/benchmarks.md`` (the rest is kept)."""
    plots(figures)
    begin, end = markers()
    section = f"{begin}\n{figures_section(figures)}\n{end}"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if begin not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    DOC.write_text(head + section + tail, encoding="utf-8")
