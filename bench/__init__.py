"""Benchmarks (not tests): ``python -m bench`` runs every scenario and prints its figures.

Each scenario is a module of this package exposing ``NAME``, ``DESCRIPTION`` and
``async def run(quick: bool) -> dict[str, float]``; ``bench.__main__`` lists them.
"""
