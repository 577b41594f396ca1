"""CHANGEFLOW_MODELS: the checks, the documents models become, the retry queue."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from changeflow_channels.checks import check_settings
from changeflow_channels.conf import get_settings
from changeflow_channels.mirror.config import load_flows
from changeflow_channels.mirror.sender import RetryQueue
from changeflow_channels.mirror.serializer import document_key, serialize
from changeflow_channels.mirror.signals import registered_flows
from tests.shop.models import Order, Tag

GOOD = {
    "auth.User": {"events": "cud", "exclude": ["password"]},
    "shop.Order": {"events": "cu", "fields": ["id", "status", "total"]},
}


MODEL_IDS = {f"changeflow_channels.E02{n}" for n in range(7)}  # MODELS, MODELS_DB


def check_models():
    return [m for m in check_settings() if m.id in MODEL_IDS]


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_a_good_config_passes_and_is_connected():
    with override_settings(CHANGEFLOW_MODELS=GOOD):
        assert check_models() == []
        flows = registered_flows()
        assert set(flows) == {User, Order}
        assert flows[Order].stream == "django.shop_order"
        assert [f.name for f in flows[Order].fields] == ["status", "total"]
        assert flows[Order].events == {"c", "u"}
        assert "password" not in [f.name for f in flows[User].fields]
    assert registered_flows() == {}  # the override is gone, and so are the receivers


@pytest.mark.parametrize(
    ("models", "check_id", "words"),
    [
        ({"shop.Nope": {}}, "E021", "'shop.Nope' is not an installed model"),
        ({"nolabel": {}}, "E021", "not an installed model"),
        ({"shop.Order": {"fields": ["id", "colour"]}}, "E022", "has no field 'colour'"),
        ({"shop.Order": {"exclude": ["secrets"]}}, "E022", "has no field 'secrets'"),
        ({"shop.Order": {"exclude": ["id"]}}, "E022", "primary key 'id' cannot be excluded"),
        ({"shop.Order": {"fields": "status"}}, "E022", "must be a list of field names"),
        ({"shop.Order": {"events": "cx"}}, "E023", "'cx'"),
        ({"shop.Order": {"events": ""}}, "E023", "expected letters"),
        ({"shop.Order": {"events": ["c"]}}, "E023", "expected letters"),
        (
            {"shop.Order": {"fields": ["id"], "exclude": ["secret"]}},
            "E024",
            "both fields and exclude",
        ),
        ({"shop.Order": ["id", "status"]}, "E020", "must be a dict"),
        ({"shop.Order": {"event": "c"}}, "E025", "unknown option(s) event"),
    ],
)
def test_each_bad_entry_is_flagged(models, check_id, words):
    with override_settings(CHANGEFLOW_MODELS={**models, "auth.User": {"exclude": ["password"]}}):
        [error] = check_models()
        assert error.id == f"changeflow_channels.{check_id}"
        assert words in error.msg, error.msg
        assert error.hint
        # The good entry still works; the bad one is ignored.
        assert set(registered_flows()) == {User}


def test_models_setting_and_database_name_are_checked():
    with override_settings(CHANGEFLOW_MODELS=["auth.User"]):
        assert ids(check_models()) == ["changeflow_channels.E020"]
    with override_settings(CHANGEFLOW_MODELS=GOOD, CHANGEFLOW_MODELS_DB="bad name"):
        assert ids(check_models()) == ["changeflow_channels.E026"]
    with override_settings(CHANGEFLOW_MODELS_DB="x" * 95, CHANGEFLOW_MODELS=GOOD):
        assert set(ids(check_models())) == {"changeflow_channels.E026"}


def test_documents_follow_djangos_serialisation():
    with override_settings(
        CHANGEFLOW_MODELS={"shop.Order": {"exclude": ["secret"]}}, CHANGEFLOW_MODELS_DB="shopdb"
    ):
        [flow], _ = load_flows(get_settings())
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    order = Order(
        id=7,
        uid=uid,
        status="paid",
        total=Decimal("12.50"),
        created=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
        customer_id=42,
        secret="never sent",
    )
    assert serialize(order, flow) == {
        "id": 7,
        "uid": "12345678-1234-5678-1234-567812345678",
        "status": "paid",
        "total": "12.50",
        "created": "2024-05-06T07:08:09.123Z",  # DjangoJSONEncoder: milliseconds, Z for UTC
        "customer": 42,
    }
    assert document_key(Tag(code="red")) == "red"


@pytest.mark.django_db
def test_many_to_many_fields_are_sent_only_when_listed():
    with override_settings(CHANGEFLOW_MODELS={"shop.Order": {"fields": ["status", "tags"]}}):
        [flow], _ = load_flows(get_settings())
    order = Order.objects.create(total=Decimal(1), secret="s")
    order.tags.add(Tag.objects.create(code="a"), Tag.objects.create(code="b"))
    assert serialize(order, flow) == {"id": order.pk, "status": "new", "tags": ["a", "b"]}


class FlakySender:
    """Fails while ``down`` is set; records what got through."""

    def __init__(self) -> None:
        self.down = True
        self.sent: list[dict] = []
        self.attempts = 0
        self.attempted = threading.Event()

    async def __call__(self, message: dict) -> None:
        await asyncio.sleep(0)
        self.attempts += 1
        self.attempted.set()
        if self.down:
            raise ConnectionError("layer down")
        self.sent.append(message)


def test_retry_queue_keeps_order_and_delivers_once_the_layer_is_back(caplog):
    sender = FlakySender()
    queue = RetryQueue(sender, first_delay=60, max_delay=60)  # retries only when flushed
    with caplog.at_level(logging.WARNING, logger="changeflow_channels"):
        queue.submit({"op": "upsert", "database": "d", "table": "t", "data": {"id": 1}})
        queue.submit({"op": "delete", "database": "d", "table": "t", "key": 1})
        assert len(queue) == 2
        assert "queued for retry" in caplog.text
        assert sender.attempted.wait(10)  # the retry thread tried, and failed
        assert not queue.flush(0.5)  # still down
        sender.down = False
        assert queue.flush(10)
    assert [m["op"] for m in sender.sent] == ["upsert", "delete"]
    assert len(queue) == 0
    assert "2 queued pushes delivered" in caplog.text


def test_a_full_retry_queue_drops_with_an_error(caplog):
    sender = FlakySender()
    queue = RetryQueue(sender, max_size=2, first_delay=60, max_delay=60)
    with caplog.at_level(logging.WARNING, logger="changeflow_channels"):
        for n in range(3):
            queue.submit({"op": "upsert", "database": "d", "table": "t", "data": {"id": n}})
    assert len(queue) == 2 and queue.dropped == 1
    [full] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "retry queue is full" in full.getMessage() and "changeflow sync" in full.getMessage()
    sender.down = False
    assert queue.flush(10)
    assert [m["data"]["id"] for m in sender.sent] == [0, 1]
