"""Issue 15, item 8: what Daphne and the worker log (at INFO and above: the site logs
``changeflow_channels`` at INFO) never holds another user's data, after every write
attack of item 1 on bob's row."""

from __future__ import annotations

from ..polling import poll_until
from .writes import ATTACKS, SECRET, bobs_row, fill, pushed


async def test_the_logs_hold_nothing_of_a_hidden_row_after_the_write_attacks(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    await push(table, bobs_row(bob.name))
    client = await connect(user=alice)
    stream = f"secdb.{table}"
    answers = [await pushed(client, stream, {"id": "b1", "owner": alice.name})]
    answers.append(
        await pushed(
            client, stream, [{"id": "a9", "owner": alice.name}, {"id": "b1", "owner": alice.name}]
        )
    )
    for _, op, data, fields in ATTACKS:
        for key in ("b1", "nope"):
            filled = fill(fields, key, alice.name)
            answers.append(
                await pushed(client, stream, fill(data, key, alice.name), op=op, **filled)
            )
    # The worker logs each refused push before it answers: both duplicates are logged.
    refused = f"push refused (secdb.{table})"

    async def worker_output() -> str:
        return site.worker_output()

    await poll_until(
        worker_output,
        lambda output: output.count(refused) >= 2,
        10,
        lambda output: f"the worker did not log the refusals: {output[-2000:]}",
    )
    assert SECRET not in site.worker_output()
    assert SECRET not in site.daphne_output()
    assert all(answer["event"] == "error" for answer in answers)
