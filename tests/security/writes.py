"""What the write attacks of issue 15 (item 1) share: bob's hidden row, and what a
push frame from alice gets back."""

from __future__ import annotations

import json
from typing import Any

from rethinkdb import RethinkDB

from .conftest import DATABASE

SECRET = "bobs-secret-card-4111"


def bobs_row(owner: str) -> dict[str, Any]:
    return {"id": "b1", "owner": owner, "secret": SECRET, "total": 7}


def stored(site: Any, table: str, key: Any) -> Any:
    """The document under ``key`` as RethinkDB holds it (read with the driver)."""
    r = RethinkDB()
    with r.connect(**site.rethinkdb) as conn:
        return r.db(DATABASE).table(table).get(key).run(conn)


async def pushed(client: Any, stream: str, data: Any, **fields: Any) -> dict[str, Any]:
    """Push from ``client``; the answer without its ``id`` (which differs per push)."""
    answer = await client.request("push", stream, data=data, **fields)
    answer.pop("id", None)
    return answer


def leaks(answer: Any) -> bool:
    return SECRET in json.dumps(answer)


# Each attack on bob's row "b1", and the same push on a key nobody has ("nope").
# (op, data on "b1", key-fields), written so that only the key differs.
ATTACKS: list[tuple[str, str, Any, dict[str, Any]]] = [
    ("update {} (existence probe)", "update", {}, {"key": "KEY"}),
    ("update owner (take over)", "update", {"owner": "ALICE"}, {"key": "KEY"}),
    ("update without key", "update", [{"id": "KEY", "owner": "ALICE"}], {}),
    ("replace", "replace", {"owner": "ALICE", "total": 0}, {"key": "KEY"}),
    ("replace without key", "replace", [{"id": "KEY", "owner": "ALICE"}], {}),
    ("delete by key", "delete", None, {"key": "KEY"}),
    ("delete by documents", "delete", ["KEY"], {}),
    ("upsert", "upsert", [{"id": "KEY", "owner": "ALICE"}], {}),
]


def fill(value: Any, key: str, alice: str) -> Any:
    """``value`` with "KEY" and "ALICE" filled in."""
    text = json.dumps(value).replace('"KEY"', json.dumps(key)).replace('"ALICE"', json.dumps(alice))
    return json.loads(text)
