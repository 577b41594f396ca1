"""An update of a key with no document writes nothing, and every sender hears it:
``ok: false`` with the code ``not_found`` (it answered ``ok: true, skipped: 1`` before)."""

from __future__ import annotations

import json

import pytest

from changeflow_channels import apush_to_flow
from changeflow_channels.push_api import PushFailed

from .test_cli_push import changeflow

pytestmark = pytest.mark.usefixtures("worker")


async def test_an_update_of_a_missing_key_is_not_found_for_every_sender(
    layer, ws_connect, stream_db, process_env
):
    await apush_to_flow(stream_db, "items", {"id": "here"}, wait=True, channel_layer=layer)
    with pytest.raises(PushFailed) as refused:
        await apush_to_flow(
            stream_db, "items", {"n": 1}, op="update", key="gone", wait=True, channel_layer=layer
        )
    answer = refused.value.result
    assert (answer["ok"], answer["code"], answer["skipped"]) == (False, "not_found", 1)
    # Documents carrying their keys: one is missing, the answer says so.
    with pytest.raises(PushFailed) as several:
        await apush_to_flow(
            stream_db,
            "items",
            [{"id": "here", "n": 2}, {"id": "gone", "n": 2}],
            op="update",
            wait=True,
            channel_layer=layer,
        )
    assert several.value.result["code"] == "not_found"
    assert several.value.result["replaced"] == 1  # the document that exists is updated

    client = await ws_connect()
    frame = await client.request(
        "push", f"{stream_db}.items", data={"n": 3}, op="update", key="gone"
    )
    assert (frame["event"], frame["code"]) == ("error", "not_found")

    done = changeflow(
        process_env, "push", f"{stream_db}.items", '{"n": 4}', "--op", "update", "--key", "gone"
    )
    assert done.returncode != 0
    assert json.loads(done.stdout)["code"] == "not_found"
