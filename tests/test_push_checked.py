"""The worker's side of checked pushes (worker/push_checked.py) and of answers that
hold no stored document, against a RethinkDB of the test's own (a ReQL test server,
or a real process with CHANGEFLOW_TEST_RETHINKDB_BIN)."""

from __future__ import annotations

import json

from rethinkdb import RethinkDB

from changeflow_channels.pushes import READ_RESULT_TYPE, READ_TYPE, new_document, parse_push
from changeflow_channels.worker.push_checked import read_for_write
from changeflow_channels.worker.push_writer import push_result

from .test_push_writer import make_writer, push, stored

SECRET = "s3cr3t-of-bob"


def seed(server, *docs) -> None:
    r = RethinkDB()
    with r.connect(host=server.host, port=server.port) as conn:
        if "d" not in r.db_list().run(conn):
            r.db_create("d").run(conn)
        if "t" not in r.db("d").table_list().run(conn):
            r.db("d").table_create("t").run(conn)
        r.db("d").table("t").insert(list(docs)).run(conn)


def by_id(server) -> dict:
    return {doc["id"]: doc for doc in stored(server)}


async def test_a_duplicate_key_is_answered_with_the_key_and_never_the_stored_document(
    faulty_rethinkdb,
):
    seed(faulty_rethinkdb, {"id": "b1", "owner": "bob", "secret": SECRET})
    writer = make_writer(faulty_rethinkdb.url)
    answer = await writer.write(push({"id": "b1", "owner": "alice"}))
    assert (answer["ok"], answer["code"], answer["errors"]) == (False, "rejected", 1)
    assert answer["error"] == 'Duplicate primary key `id`: "b1"'
    assert SECRET not in json.dumps(answer)
    # several documents: only the taken keys are named, the others are written
    answer = await writer.write(push([{"id": "a1"}, {"id": "b1", "x": 1}, {"n": 3}]))
    assert (answer["inserted"], answer["errors"], answer["unchanged"]) == (2, 1, 0)
    assert answer["error"] == 'Duplicate primary key `id`: "b1"' and SECRET not in str(answer)
    assert by_id(faulty_rethinkdb)["b1"]["secret"] == SECRET  # left as it was
    # a key given twice in one push: refused as RethinkDB would
    answer = await writer.write(push([{"id": "c1"}, {"id": "c1", "n": 2}]))
    assert (answer["inserted"], answer["errors"]) == (1, 1)


def test_rethinkdbs_own_error_text_is_never_answered():
    # RethinkDB's first_error may quote a stored document (a duplicate key, a changed
    # primary key): the answer says what happened in our words, with the counts.
    counts = {
        "inserted": 1,
        "errors": 1,
        "first_error": f'Duplicate primary key `id`: {{"secret": "{SECRET}"}}',
    }
    answer = push_result(push([{"id": 1}, {"id": 2}]), counts, [])
    assert (answer["ok"], answer["code"]) == (False, "rejected")
    assert answer["error"] == "RethinkDB refused 1 of 2 document(s)"
    assert SECRET not in json.dumps(answer)


def expect(*entries):
    return parse_push(
        {
            "database": "d",
            "table": "t",
            "data": None,
            "op": "delete",
            "key": 0,
            "expect": list(entries),
        }
    )


async def test_a_checked_write_lands_only_where_the_document_is_still_the_one_checked(
    faulty_rethinkdb,
):
    seed(faulty_rethinkdb, {"id": 1, "v": 1}, {"id": 2, "v": 2}, {"id": 3, "v": 3})
    writer = make_writer(faulty_rethinkdb.url)
    answer = await writer.write(
        expect(
            [1, {"id": 1, "v": 1}, {"id": 1, "v": 10}],  # as checked: replaced
            [2, {"id": 2, "v": 99}, {"id": 2, "v": 20}],  # changed meanwhile: conflict
            [3, {"id": 3, "v": 3}, None],  # deleted
            [4, None, {"id": 4, "v": 4}],  # inserted
            [5, None, None],  # a missing document stays missing: skipped
            [2, {"id": 2, "v": 2}, {"id": 2, "v": 2}],  # nothing to write: unchanged
        )
    )
    assert (answer["ok"], answer["code"], answer["conflicts"]) == (False, "conflict", [1])
    counts = [answer[name] for name in ("replaced", "deleted", "inserted", "skipped", "unchanged")]
    assert counts == [1, 1, 1, 1, 1]
    assert by_id(faulty_rethinkdb) == {
        1: {"id": 1, "v": 10},
        2: {"id": 2, "v": 2},
        4: {"id": 4, "v": 4},
    }
    # a document that appeared since a missing one was checked is not written over
    answer = await writer.write(expect([4, None, {"id": 4, "v": 5}]))
    assert answer["conflicts"] == [0] and by_id(faulty_rethinkdb)[4] == {"id": 4, "v": 4}


async def test_a_read_before_a_checked_push_answers_the_documents_in_order(faulty_rethinkdb):
    seed(faulty_rethinkdb, {"id": "a", "v": 1}, {"id": "b", "v": 2})
    writer = make_writer(faulty_rethinkdb.url)

    def read(**fields):
        message = {"type": READ_TYPE, "database": "d", "table": "t", "id": {"guard": 1}}
        return read_for_write(writer, {**message, **fields})

    answer = await read(op="update", data=[{"id": "b"}, {"id": "zz"}, {"id": "a"}])
    assert answer == {
        "type": READ_RESULT_TYPE,
        "id": {"guard": 1},
        "ok": True,
        "pk": "id",
        "documents": [{"id": "b", "v": 2}, None, {"id": "a", "v": 1}],
    }
    answer = await read(op="delete", key="a", data=None)
    assert answer["documents"] == [{"id": "a", "v": 1}]
    answer = await read(op="update", data=[{"v": 1}])  # no key: invalid, as the write would be
    assert (answer["type"], answer["ok"], answer["code"]) == (READ_RESULT_TYPE, False, "invalid")
    answer = await read(op="delete", key="a", data=None, table="nothere")
    assert answer["ok"] and answer["documents"] == [None]


async def test_a_checked_update_keeps_times_as_times(faulty_rethinkdb):
    r = RethinkDB()
    seed(faulty_rethinkdb, {"id": "a", "owner": "alice"})
    with r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port) as conn:
        r.db("d").table("t").get("a").update({"at": r.epoch_time(1000)}).run(conn)
    writer = make_writer(faulty_rethinkdb.url)
    message = {"type": READ_TYPE, "database": "d", "table": "t", "op": "update", "key": "a"}
    read = await read_for_write(writer, {**message, "data": {"n": 1}})
    (old,) = read["documents"]
    assert old["at"]["$reql_type$"] == "TIME"  # raw: written back as it was read
    new = new_document("update", old, {"id": "a", "n": 1})
    answer = await writer.write(expect(["a", old, new]))
    assert answer["ok"] and answer["replaced"] == 1, answer
    with r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port) as conn:
        stored_type = r.db("d").table("t").get("a")["at"].type_of().run(conn)
    assert stored_type == "PTYPE<TIME>"
