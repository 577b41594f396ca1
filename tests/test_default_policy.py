"""The default policy: authenticated users read, nobody pushes from a browser."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from changeflow_channels.consumers import ChangeflowConsumer

# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
pytestmark = pytest.mark.django_db


async def frames_for(user, *frames):
    communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    answers = []
    for frame in frames:
        await communicator.send_json_to(frame)
        answers.append(await communicator.receive_json_from(timeout=5))
    await communicator.disconnect()
    return answers


async def test_anonymous_may_neither_subscribe_nor_push():
    subscribe, push = await frames_for(
        AnonymousUser(),
        {"action": "subscribe", "stream": "shop.orders", "id": 1},
        {"action": "push", "stream": "shop.orders", "data": {"a": 1}, "id": 2},
    )
    assert (subscribe["event"], subscribe["code"], subscribe["id"]) == ("error", "forbidden", 1)
    assert (push["event"], push["code"], push["id"]) == ("error", "forbidden", 2)


async def test_authenticated_users_may_subscribe_but_not_push():
    user = SimpleNamespace(is_authenticated=True)
    subscribe, push = await frames_for(
        user,
        {"action": "subscribe", "stream": "shop.orders", "id": 1},
        {"action": "push", "stream": "shop.orders", "data": {"a": 1}, "id": 2},
    )
    assert subscribe == {"event": "subscribed", "stream": "shop.orders", "id": 1}
    assert push["code"] == "forbidden"
