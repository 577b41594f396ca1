"""``manage.py changeflow sync``: RethinkDB ends up equal to the model table."""

from __future__ import annotations

import io
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings

from changeflow_channels.conf import get_settings
from changeflow_channels.mirror.config import load_flows
from changeflow_channels.mirror.serializer import serialize
from tests.shop.models import Order

pytestmark = pytest.mark.django_db

MODELS = {
    "auth.User": {"events": "cud", "exclude": ["password"]},
    "shop.Order": {"events": "cud", "exclude": ["secret"]},
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def models_db(rethinkdb_target, r):
    """Settings pointing at the tests' RethinkDB, with a model database of the test's own."""
    name = "dj_" + uuid.uuid4().hex[:10]
    with override_settings(
        CHANGEFLOW_RETHINKDB=rethinkdb_target.url,
        CHANGEFLOW_MODELS=MODELS,
        CHANGEFLOW_MODELS_DB=name,
    ):
        yield name
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        if name in r.db_list().run(conn):
            r.db_drop(name).run(conn)


def stored(r, target, database: str, table: str) -> dict:
    with r.connect(**target.connect_kwargs()) as conn:
        return {doc["id"]: doc for doc in r.db(database).table(table).run(conn)}


def expected(model) -> dict:
    [flow] = [f for f in load_flows(get_settings())[0] if f.model is model]
    return {obj.pk: serialize(obj, flow) for obj in model.objects.all()}


def sync(*args: str, stdout: io.StringIO | None = None) -> str:
    out = stdout or io.StringIO()
    call_command("changeflow", "sync", *args, stdout=out)
    return out.getvalue()


def test_sync_copies_every_row_and_removes_stale_documents(models_db, rethinkdb_target, r):
    alice = User.objects.create_user("alice", password="secret-pw")
    orders = [
        Order.objects.create(total=Decimal(n) / 4, customer=alice if n % 2 else None, secret="x")
        for n in range(7)
    ]
    output = sync("--batch-size", "3")
    assert "auth.User: 1 rows copied" in output
    assert f"shop.Order: 7 rows copied to {models_db}.shop_order, 0 stale" in output
    assert stored(r, rethinkdb_target, models_db, "shop_order") == expected(Order)
    users = stored(r, rethinkdb_target, models_db, "auth_user")
    assert users == expected(User) and "password" not in users[alice.pk]
    assert users[alice.pk]["username"] == "alice"

    # Changes that bypass the signals: bulk_create, QuerySet.update, and rows gone behind our back.
    Order.objects.bulk_create([Order(total=Decimal(9)), Order(total=Decimal(10))])
    Order.objects.filter(total__lt=1).update(status="cheap")
    Order.objects.filter(pk__in=[orders[5].pk, orders[6].pk])._raw_delete("default")
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db(models_db).table("shop_order").insert({"id": 999_999, "ghost": True}).run(conn)
    assert stored(r, rethinkdb_target, models_db, "shop_order") != expected(Order)

    output = sync("shop.Order")
    assert "shop.Order: 7 rows copied" in output and "3 stale documents removed" in output
    assert "auth.User" not in output
    mirror = stored(r, rethinkdb_target, models_db, "shop_order")
    assert mirror == expected(Order)
    assert sorted(d["status"] for d in mirror.values()).count("cheap") == 4


def test_progress_on_a_terminal(models_db):
    Order.objects.bulk_create([Order(total=Decimal(n)) for n in range(5)])
    output = sync("shop.order", "--batch-size", "2", stdout=Tty())
    assert "\rshop.Order 0/5\rshop.Order 2/5\rshop.Order 4/5\rshop.Order 5/5" in output
    assert output.endswith(
        "shop.Order: 5 rows copied to " + models_db + ".shop_order, 0 stale documents removed\n"
    )


def test_sync_refuses_what_it_cannot_do(models_db, rethinkdb_target):
    with pytest.raises(CommandError, match="not an installed model"):
        sync("shop.Nope")
    with pytest.raises(CommandError, match=r"shop\.Tag is not in CHANGEFLOW_MODELS"):
        sync("shop.Tag")
    with override_settings(CHANGEFLOW_MODELS={}), pytest.raises(CommandError, match="empty"):
        sync()
    with override_settings(CHANGEFLOW_RETHINKDB="rethinkdb://127.0.0.1:1"):
        with pytest.raises(CommandError, match="sync failed"):
            sync()
