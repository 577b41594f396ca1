"""CHANGEFLOW_MEMORY_BUDGET (``worker/memory_budget.py``) over the tables' states
(``worker/table_state.py``), without I/O: the oldest change of any table goes
first, a client resuming from it is told ``history_exceeded``, mirrors go once no
history is left (largest first), and a table forgotten gives its bytes back."""

from __future__ import annotations

from typing import Any

from changeflow_channels.changes import change_message
from changeflow_channels.sync import SyncRequest
from changeflow_channels.worker.memory_budget import MemoryBudget, estimated_bytes
from changeflow_channels.worker.table_state import TableState, sync_answer


def change(table: str, seq: int, key: str = "k", epoch: str = "e1") -> dict[str, Any]:
    document = {"id": f"{key}{seq}", "text": "x" * 50}
    return change_message(
        "db", table, {"type": "add", "old_val": None, "new_val": document}, epoch, seq
    )


def state(budget: MemoryBudget, *, mirrored: bool = False, history: int = 100) -> TableState:
    table = TableState("id", history, 1000, budget=budget)
    table.reset("e1", mirrored=mirrored)
    return table


def resume_from(seq: int) -> SyncRequest:
    return SyncRequest("db", "a", "reply", 1, ("e1", seq), snapshot=False)


def size(seq: int) -> int:
    return estimated_bytes(change("a", seq)["change"])


ONE = size(1)  # of changes 1 to 9


def test_no_budget_keeps_everything():
    budget = MemoryBudget(None)
    table = state(budget)
    for seq in range(1, 51):
        table.record(change("a", seq))
    assert len(table.history) == 50 and budget.dropped == 0
    assert budget.used == sum(size(seq) for seq in range(1, 51))


def test_the_oldest_change_of_any_table_goes_first():
    budget = MemoryBudget(10 * ONE)
    a, b = state(budget), state(budget)
    for seq in range(1, 6):
        a.record(change("a", seq))
    for seq in range(1, 6):
        b.record(change("b", seq))
    assert budget.used == 10 * ONE and budget.dropped == 0
    b.record(change("b", 6))
    b.record(change("b", 7))
    # a's two oldest went, though b is the one that grew.
    assert [m["seq"] for m in a.history] == [3, 4, 5]
    assert [m["seq"] for m in b.history] == [1, 2, 3, 4, 5, 6, 7]
    assert budget.used <= budget.limit and budget.dropped == 2


def test_a_client_resuming_from_dropped_history_is_told_history_exceeded():
    budget = MemoryBudget(3 * ONE)
    table = state(budget)
    for seq in range(1, 7):
        table.record(change("a", seq))
    assert [m["seq"] for m in table.history] == [4, 5, 6]
    late = sync_answer(resume_from(1), table)
    assert late["resync"] == "history_exceeded" and late["changes"] is None
    recent = sync_answer(resume_from(3), table)
    assert recent["resync"] is None and [m["seq"] for m in recent["changes"]] == [4, 5, 6]


def test_mirrors_go_once_no_history_is_left_largest_first():
    budget = MemoryBudget(None)
    small, large = state(budget, mirrored=True, history=0), state(budget, mirrored=True, history=0)
    small.load({"id": 1})
    for n in range(5):
        large.load({"id": n, "text": "y" * 100})
    budget.limit = budget.used - 1
    budget.enforce()
    assert large.mirror is None and large.documents() is None and large.mirror_bytes == 0
    assert small.documents() == [{"id": 1}]
    assert budget.used == small.mirror_bytes and budget.mirrors_dropped == 1


def test_a_new_epoch_and_a_forgotten_table_give_their_bytes_back():
    budget = MemoryBudget(10**9)
    table = state(budget, mirrored=True)
    for seq in range(1, 21):
        table.record(change("a", seq))
    assert budget.used > 0 and budget.kept == 20
    table.reset("e2", mirrored=True)
    assert budget.used == 0 and budget.kept == 0
    table.record(change("a", 1, epoch="e2"))
    table.forget()
    assert budget.used == 0 and budget.kept == 0


def test_the_history_bound_of_a_table_releases_what_it_drops():
    budget = MemoryBudget(None)
    table = state(budget, history=3)
    for seq in range(1, 1001):
        table.record(change("a", seq))
    assert budget.kept == 3 and budget.used == size(998) + size(999) + size(1000)
    # Its order of changes holds about as many entries as changes kept, not 1,000.
    assert len(budget._order) <= 2 * budget.kept + 1024
