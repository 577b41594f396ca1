"""End to end: registered Django models reach websocket subscribers and hooks.

The test process is the Django project: it saves models (pytest-django, with
real commits so ``on_commit`` fires) and its channel layer is the suite's Redis,
where the subprocess worker takes the pushes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from changeflow_channels.mirror.sender import retry_queue
from changeflow_channels.testing.processes import free_port
from tests.shop.models import Order

from .helpers import WsClient, receive

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.django_db(transaction=True)]

T = TypeVar("T")
MODELS = {
    "auth.User": {"events": "cud", "exclude": ["password"]},
    "shop.Order": {"events": "cud", "exclude": ["secret"]},
}


def redis_layers(url: str) -> dict:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": None}]},
        }
    }


@pytest.fixture
def models_db(redis_url) -> Iterator[str]:
    """Models mirrored into a database of the test's own, pushed through the suite's Redis."""
    name = "dj_" + uuid.uuid4().hex[:10]
    with override_settings(
        CHANNEL_LAYERS=redis_layers(redis_url), CHANGEFLOW_MODELS=MODELS, CHANGEFLOW_MODELS_DB=name
    ):
        yield name


async def orm(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM code in a thread of this test's own.

    Not ``sync_to_async``: its shared thread would keep this test's database
    connection, and pytest-django refuses it to the consumers of later tests.
    """
    return await asyncio.to_thread(function, *args, **kwargs)


async def create_order(**fields: Any) -> Order:
    return await orm(
        Order.objects.create, **{"total": Decimal("12.50"), "secret": "s3cr3t", **fields}
    )


async def test_create_update_delete_reach_a_subscriber(ws_connect, models_db):
    client: WsClient = await ws_connect()
    orders, users = f"{models_db}.shop_order", f"{models_db}.auth_user"
    await client.subscribe(orders)
    await client.subscribe(users)

    alice = await orm(User.objects.create_user, "alice", password="pw")
    [user_added] = await client.changes(users, 1)
    assert user_added["new_val"]["username"] == "alice"
    assert user_added["new_val"]["id"] == alice.pk and "password" not in user_added["new_val"]

    order = await create_order(customer=alice)
    [added] = await client.changes(orders, 1)
    assert added["type"] == "add"
    new = added["new_val"]
    assert new["id"] == order.pk and new["total"] == "12.50" and new["customer"] == alice.pk
    assert new["uid"] == str(order.uid) and new["created"].startswith(str(order.created.year))
    assert "secret" not in new

    order.status = "paid"
    await orm(order.save)
    [changed] = await client.changes(orders, 1)
    assert changed["type"] == "change"
    assert (changed["old_val"]["status"], changed["new_val"]["status"]) == ("new", "paid")

    pk = order.pk
    await orm(order.delete)
    [removed] = await client.changes(orders, 1)
    assert removed["type"] == "remove" and removed["old_val"]["id"] == pk


async def test_a_rolled_back_save_pushes_nothing(ws_connect, models_db):
    from django.db import transaction

    client: WsClient = await ws_connect()
    stream = f"{models_db}.shop_order"
    await client.subscribe(stream)

    def rolled_back_then_committed() -> Order:
        try:
            with transaction.atomic():
                Order.objects.create(total=Decimal(1), status="rolled-back")
                raise RuntimeError("abort")
        except RuntimeError:
            pass
        return Order.objects.create(total=Decimal(2), status="committed")

    order = await orm(rolled_back_then_committed)
    [added] = await client.changes(stream, 1)
    assert added["new_val"]["status"] == "committed" and added["new_val"]["id"] == order.pk


async def test_hooks_see_model_events(layer, models_db):
    order = await create_order(status="hooked")
    for channel in (f"hooks.sync.{models_db}", f"hooks.async.{models_db}"):
        seen = await receive(layer, channel)
        assert seen["table"] == "shop_order"
        assert seen["change"]["new_val"]["id"] == order.pk
        assert seen["change"]["new_val"]["status"] == "hooked"


async def test_a_save_survives_a_dead_channel_layer_and_is_delivered_later(
    ws_connect, models_db, caplog
):
    client: WsClient = await ws_connect()
    stream = f"{models_db}.shop_order"
    await client.subscribe(stream)
    dead = f"redis://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING, logger="changeflow_channels"):
        with override_settings(CHANNEL_LAYERS=redis_layers(dead)):
            first = await create_order(status="while-down")  # does not raise
            second = await create_order(status="also-down")
            assert len(retry_queue) == 2
        assert "queued for retry" in caplog.text and "Connect call failed" in caplog.text
        # The layer is back (the override is gone): the queue drains in order.
        assert await asyncio.to_thread(retry_queue.flush, 30)
    added = await client.changes(stream, 2)
    assert [a["new_val"]["id"] for a in added] == [first.pk, second.pk]


async def test_a_save_replaces_the_mirrored_document_whole(ws_connect, models_db):
    """The mirror equals the model's serialization: a field newly excluded is gone
    after the next save (a merge would keep it for ever)."""
    client: WsClient = await ws_connect()
    orders = f"{models_db}.shop_order"
    await client.subscribe(orders)
    order = await create_order()
    [added] = await client.changes(orders, 1)
    assert added["new_val"]["status"] == "new"
    exclude_status = {**MODELS, "shop.Order": {"events": "cud", "exclude": ["secret", "status"]}}
    with override_settings(CHANGEFLOW_MODELS=exclude_status):
        order.total = Decimal("13.00")
        await orm(order.save)
        [changed] = await client.changes(orders, 1)
    assert changed["new_val"]["total"] == "13.00"
    assert "status" not in changed["new_val"]
