"""The lease intervals the Sentinel failover test reads from the workers' logs (no I/O)."""

from __future__ import annotations

from .helpers import holdings, overlaps

PREFIX = "changeflow_channels.worker"
# Lines as two workers logged them in a failover with CHANGEFLOW_LEASE_REPLICAS = 1 (CI,
# 2026-12-05): leases given back for want of a replica's acknowledgement were never held.
WORKER_0 = f"""\
2026-12-05 15:23:36,177 INFO {PREFIX}.table_sharing: db.b: lease taken (1 worker(s) alive)
2026-12-05 15:23:41,686 ERROR {PREFIX}.table_sharing: db.b: lease not renewed for 3.3 s
2026-12-05 15:23:45,337 WARNING {PREFIX}.leases: db.b: lease taken but acknowledged by 0 of 1 replica(s): given back
2026-12-05 15:23:52,923 WARNING {PREFIX}.leases: db.b: lease not counted on, acknowledged by 0 of 1 replica(s): given back
2026-12-05 15:23:54,741 INFO {PREFIX}.table_sharing: db.a: lease taken (2 worker(s) alive)
"""
WORKER_1 = f"""\
2026-12-05 15:23:38,208 INFO {PREFIX}.table_sharing: db.a: lease taken (2 worker(s) alive)
2026-12-05 15:23:41,710 ERROR {PREFIX}.table_sharing: db.a: lease not renewed for 3.3 s
2026-12-05 15:23:46,842 WARNING {PREFIX}.leases: db.a: lease taken but acknowledged by 0 of 1 replica(s): given back
2026-12-05 15:23:54,741 INFO {PREFIX}.table_sharing: db.b: lease taken (1 worker(s) alive)
2026-12-05 15:23:58,064 INFO {PREFIX}.table_sharing: released the leases of 1 table(s)
"""


def test_a_lease_given_back_was_never_held():
    held = holdings(0, WORKER_0) + holdings(1, WORKER_1)
    assert sorted((h.worker, h.stream, h.end is None) for h in held) == [
        (0, "db.a", True),
        (0, "db.b", False),
        (1, "db.a", False),
        (1, "db.b", False),
    ]
    assert overlaps(held) == []


def test_two_workers_holding_one_table_overlap():
    later = WORKER_1.replace("db.b: lease taken (1", "db.a: lease taken (1")
    found = overlaps(holdings(0, WORKER_0) + holdings(1, later))
    assert len(found) == 1 and found[0].startswith("db.a: worker 0 ")
