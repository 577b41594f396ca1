"""Reading a /metrics page with a real HTTP client and Prometheus' own parser."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from .polling import poll_until


class Scrape:
    """One scrape: every sample by name and labels, and the families' names."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: set[str] = set()
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        """The sample's value, None when the page has no such sample."""
        return self.samples.get((name, frozenset(labels.items())))

    def get(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when absent (a labelled series not yet created)."""
        return self.value(name, **labels) or 0.0


def _fetch(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode(), response.headers.get("Content-Type", "")


async def scrape(url: str) -> Scrape:
    text, _ = await asyncio.to_thread(_fetch, url)
    return Scrape(text)


async def fetch(url: str, accept: str | None = None) -> tuple[str, str]:
    """The page and its content type."""
    return await asyncio.to_thread(_fetch, url, accept)


async def wait_for_metrics(
    url: str, predicate: Callable[[Scrape], bool], timeout: float = 10.0
) -> Scrape:
    """Scrape until ``predicate`` holds (or fail after ``timeout`` with the last page)."""
    return await poll_until(
        lambda: scrape(url),
        predicate,
        timeout,
        lambda page: f"metrics never matched within {timeout} s:\n{page.text}",
    )
