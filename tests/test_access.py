"""Who sees what: the rules policy, row rules, filters, revocation and tokens.

The consumer runs in-process on a real (in-memory) channel layer; where a
worker would answer (sync requests), the test answers, so every frame the
client must get is known exactly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, Permission
from django.test import override_settings

from changeflow_channels.auth import TokenAuthMiddleware, make_token
from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.permissions import RulesPolicy
from changeflow_channels.web.filters import FilterError, parse_filter, seen_through

LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
RULES = {
    "shop.orders": {"subscribe": "authenticated", "push": "staff"},
    "shop.*": {"subscribe": ["staff", "auth.view_user"]},
    "*": {"subscribe": "superuser"},
    "public.news": {"subscribe": "anyone", "push": "nobody"},
}


@pytest.fixture
def users(django_user_model):
    perm = Permission.objects.get(codename="view_user", content_type__app_label="auth")
    viewer = django_user_model.objects.create_user("viewer")
    viewer.user_permissions.add(perm)
    return {
        "anonymous": AnonymousUser(),
        "regular": django_user_model.objects.create_user("regular"),
        "staff": django_user_model.objects.create_user("staff", is_staff=True),
        "viewer": viewer,
        "superuser": django_user_model.objects.create_superuser("root"),
    }


EXPECTED = [
    # who, stream, may subscribe, may push
    ("anonymous", "shop.orders", False, False),
    ("anonymous", "public.news", True, False),
    ("anonymous", "other.table", False, False),
    ("regular", "shop.orders", True, False),
    ("regular", "shop.items", False, False),
    ("regular", "other.table", False, False),
    ("staff", "shop.orders", True, True),
    ("staff", "shop.items", True, False),
    ("staff", "other.table", False, False),
    ("viewer", "shop.items", True, False),
    ("viewer", "other.table", False, False),
    ("superuser", "other.table", True, False),
    ("superuser", "public.news", True, False),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("who", "stream", "subscribe", "push"), EXPECTED)
async def test_the_rules_policy_grants_exactly_what_it_says(users, who, stream, subscribe, push):
    policy = RulesPolicy(RULES)
    user = users[who]
    assert await policy.can_subscribe(user, stream) is subscribe
    assert await policy.can_push(user, stream, "insert") is push


class OwnRowsPolicy:
    """A row rule: each user sees only their own rows, without the ``secret`` field."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return True

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False

    async def filter_change(self, user: Any, stream: str, change: dict) -> dict:
        def visible(document: Any) -> Any:
            if document is None or document.get("owner") != user.username:
                return None
            return {k: v for k, v in document.items() if k != "secret"}

        return {
            **change,
            "old_val": visible(change["old_val"]),
            "new_val": visible(change["new_val"]),
        }


def change(seq: int, old: Any, new: Any, epoch: str = "e1") -> dict:
    kind = "add" if old is None else "remove" if new is None else "change"
    return {
        "type": "changeflow.change",
        "database": "shop",
        "table": "orders",
        "change": {"type": kind, "old_val": old, "new_val": new},
        "epoch": epoch,
        "seq": seq,
    }


async def connect(user: Any) -> WebsocketCommunicator:
    """A client; call it inside ``override_settings``: changing settings gives
    Channels a new in-memory layer, and the test must share the consumer's."""
    communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def answer_sync(**result: Any) -> None:
    """Play the worker: answer the next sync request."""
    layer = get_channel_layer()
    request = await asyncio.wait_for(layer.receive("changeflow.sync"), 3)
    answer = {
        "type": "changeflow.sync.result",
        "id": request["id"],
        "database": request["database"],
        "table": request["table"],
        "changes": None,
        "resync": None,
        "snapshot": None,
    }
    await layer.send(request["reply_channel"], {**answer, **result})


# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
@pytest.mark.django_db
async def test_row_rules_hide_other_users_rows_in_snapshots_changes_and_replays():
    alice = type("User", (), {"username": "alice", "is_authenticated": True})()
    with override_settings(CHANGEFLOW_PERMISSIONS=OwnRowsPolicy, CHANNEL_LAYERS=LAYER):
        client = await connect(alice)
        layer = get_channel_layer()
        await client.send_json_to(
            {"action": "subscribe", "stream": "shop.orders", "snapshot": True, "id": 1}
        )
        assert (await client.receive_json_from())["event"] == "subscribed"
        mine = {"id": 1, "owner": "alice", "secret": "s"}
        theirs = {"id": 2, "owner": "bob", "secret": "t"}
        await answer_sync(
            epoch="e1", seq=0, snapshot={"documents": [mine, theirs], "truncated": False}
        )
        snapshot = await client.receive_json_from()
        assert snapshot["documents"] == [{"id": 1, "owner": "alice"}]
        # live: bob's row changes (nothing), then moves to alice (add), then back (remove)
        await layer.group_send("shop.orders", change(1, theirs, {**theirs, "total": 5}))
        await layer.group_send(
            "shop.orders", change(2, {**theirs, "total": 5}, {**theirs, "owner": "alice"})
        )
        await layer.group_send(
            "shop.orders", change(4, None, {"id": 3, "owner": "alice"})
        )  # 3 was lost
        # the gap is filled from the "history", seen through the same rule
        await answer_sync(
            epoch="e1",
            seq=4,
            changes=[
                change(3, {**theirs, "owner": "alice"}, theirs),
                change(4, None, {"id": 3, "owner": "alice"}),
            ],
        )
        frames = [await client.receive_json_from() for _ in range(3)]
        await client.disconnect()
    # Under a row rule seq counts what alice was sent (docs/protocol.md, "Positions under a
    # row rule"): bob's hidden change 1 takes no number.
    assert [(f["type"], f["seq"]) for f in frames] == [("add", 1), ("remove", 2), ("add", 3)]
    assert frames[0]["new_val"] == {"id": 2, "owner": "alice"} and frames[0]["old_val"] is None
    assert frames[1]["old_val"] == {"id": 2, "owner": "alice"} and frames[1]["new_val"] is None
    assert all("secret" not in str(frame) for frame in frames)


@pytest.mark.django_db
async def test_filters_keep_each_subscription_exact_with_move_in_and_move_out():
    with override_settings(
        CHANNEL_LAYERS=LAYER,
        CHANGEFLOW_PERMISSIONS="changeflow_channels.permissions.AllowAllPolicy",
    ):
        client = await connect(type("User", (), {"is_authenticated": True})())
        layer = get_channel_layer()
        for sub, spec in (("open", {"status": "open"}), ("big", {"total": {"gt": 100}})):
            await client.send_json_to(
                {
                    "action": "subscribe",
                    "stream": "shop.orders",
                    "sub": sub,
                    "filter": spec,
                    "id": sub,
                }
            )
            assert (await client.receive_json_from()) == {
                "event": "subscribed",
                "stream": "shop.orders",
                "id": sub,
                "sub": sub,
            }
        a_open = {"id": 1, "status": "open", "total": 50}
        a_closed = {"id": 1, "status": "closed", "total": 50}
        a_big = {"id": 1, "status": "closed", "total": 500}
        for seq, (old, new) in enumerate(
            [(None, a_open), (a_open, a_closed), (a_closed, a_big), (a_big, None)], 1
        ):
            await layer.group_send("shop.orders", change(seq, old, new))
        frames = [await client.receive_json_from() for _ in range(4)]
        await client.disconnect()
    seen = [(f["sub"], f["type"], f["seq"]) for f in frames]
    assert seen == [
        ("open", "add", 1),
        ("open", "remove", 2),
        ("big", "add", 3),
        ("big", "remove", 4),
    ]


def test_filter_parsing_and_views():
    spec = parse_filter(
        {"status": "open", "total": {"gt": 100, "le": 500}, "tag": {"in": ["a", "b"]}}
    )
    assert spec.matches({"status": "open", "total": 200, "tag": "a"})
    assert not spec.matches({"status": "open", "total": 200, "tag": "c"})
    assert not spec.matches(
        {"status": "open", "total": "many", "tag": "a"}
    )  # other types never match
    assert not spec.matches({"status": "open", "tag": "a"})  # a missing field never matches
    for bad in ({}, [], {"a": {"like": 1}}, {"a": {"in": 3}}, {"a": {"eq": {"x": 1}}}, {"": 1}):
        with pytest.raises(FilterError):
            parse_filter(bad)
    visible = parse_filter({"status": "open"}).matches
    moved_out = seen_through(
        {"type": "change", "old_val": {"status": "open"}, "new_val": {"status": "x"}}, visible
    )
    assert moved_out["type"] == "remove" and moved_out["new_val"] is None
    assert (
        seen_through({"type": "add", "old_val": None, "new_val": {"status": "x"}}, visible) is None
    )


@pytest.mark.django_db(transaction=True)
async def test_losing_a_permission_ends_the_subscription(users):
    viewer = users["viewer"]
    with override_settings(
        CHANNEL_LAYERS=LAYER,
        CHANGEFLOW_PERMISSIONS=RulesPolicy(RULES),
        CHANGEFLOW_RECHECK_EVERY=0.2,
    ):
        client = await connect(viewer)
        await client.send_json_to({"action": "subscribe", "stream": "shop.items", "id": 1})
        assert (await client.receive_json_from())["event"] == "subscribed"
        await sync_to_async(viewer.user_permissions.clear)()
        ended = await client.receive_json_from(timeout=5)
        await client.disconnect()
    assert ended["event"] == "error" and ended["code"] == "forbidden"
    assert "shop.items" in ended["message"] and "revoked" in ended["message"]


@pytest.mark.django_db(transaction=True)
async def test_a_token_stands_for_its_user_and_a_bad_one_for_nobody(users):
    token = make_token(users["regular"])
    with override_settings(CHANNEL_LAYERS=LAYER, CHANGEFLOW_PERMISSIONS=RulesPolicy(RULES)):
        for query, expected in ((f"token={token}", "subscribed"), ("token=forged", "error")):
            application = TokenAuthMiddleware(ChangeflowConsumer.as_asgi())
            communicator = WebsocketCommunicator(application, f"/ws/changeflow/?{query}")
            communicator.scope["user"] = AnonymousUser()
            assert (await communicator.connect())[0]
            await communicator.send_json_to(
                {"action": "subscribe", "stream": "shop.orders", "id": 1}
            )
            assert (await communicator.receive_json_from())["event"] == expected
            await communicator.disconnect()
