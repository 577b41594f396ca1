"""Units of the identity checks: exact origins, tokens that end, the W008 wiring check,
the refusal of a websocket in its handshake (issue 15, items 2, 3 and 5). No I/O but
an in-memory ASGI exchange and the test database."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.test import override_settings

from changeflow_channels import checks
from changeflow_channels.asgi import (
    old_origin_validators,
    websocket_application,
    wrapped_validators,
)
from changeflow_channels.auth import (
    EXPIRED,
    INVALID,
    REVOKED,
    SALT,
    TokenEnded,
    make_token,
    read_token,
    token_user,
)
from changeflow_channels.routing import websocket_urlpatterns
from changeflow_channels.web.origins import (
    ChangeflowOriginValidator,
    OriginError,
    canonical_origin,
    own_origin,
    refusal_for,
)

# Applications for the W008 check (ASGI_APPLICATION names one of these).
OLD_WIRING = ProtocolTypeRouter(
    {
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        )
    }
)
NO_CHECK = ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns))})
SECURE = ProtocolTypeRouter({"websocket": websocket_application()})


def scope(origin: str | None = None, host: str = "127.0.0.1:8000", **extra: Any) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.encode(), value.encode()) for name, value in extra.pop("headers", [])]
    return {"type": "websocket", "scheme": "ws", "headers": headers, **extra}


# -- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("http://example.com", "http://example.com"),
        ("HTTPS://Example.COM:443", "https://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://localhost:4443", "https://localhost:4443"),
    ],
)
def test_origins_are_put_in_the_form_browsers_send(text, canonical):
    assert canonical_origin(text) == canonical


@pytest.mark.parametrize(
    "text",
    ["example.com", "http://example.com/", "http://a@example.com", "http://x:99999", "null", ""],
)
def test_what_is_not_one_origin_is_refused(text):
    with pytest.raises(OriginError):
        canonical_origin(text)


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9999",  # another port of the same host
        "https://127.0.0.1:8000",  # another scheme
        "http://LOCALHOST",  # capitals: no browser sends them
        "http://127.0.0.1",  # the default port is another origin
        "http://evil.example",
        "null",
    ],
)
def test_only_the_sites_own_origin_passes_by_default(origin):
    assert refusal_for(scope("http://127.0.0.1:8000")) is None
    refusal = refusal_for(scope(origin))
    assert refusal is not None and refusal.close_code == 4003 and refusal.error_code == "forbidden"


def test_the_own_origin_follows_the_host_header_within_allowed_hosts():
    assert own_origin(scope(host="LocalHost:8000")) == "http://localhost:8000"
    assert own_origin(scope(host="localhost:80")) == "http://localhost"
    assert own_origin(scope(host="127.0.0.1:8000", scheme="wss")) == "https://127.0.0.1:8000"
    assert own_origin(scope(host="evil.example:8000")) is None  # not in ALLOWED_HOSTS
    assert refusal_for(scope("http://evil.example:8000", host="evil.example:8000")) is not None


@override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_a_proxy_that_ends_tls_is_believed_as_django_is_told():
    behind = scope(host="localhost", headers=[("x-forwarded-proto", "https")])
    assert own_origin(behind) == "https://localhost"
    assert own_origin(scope(host="localhost")) == "http://localhost"


@override_settings(
    CHANGEFLOW_ALLOWED_ORIGINS=["HTTPS://App.Example:443", "http://127.0.0.1:8000"],
    ALLOWED_HOSTS=["*"],
)
def test_configured_origins_replace_the_default():
    assert refusal_for(scope("https://app.example", host="api.example")) is None
    assert refusal_for(scope("http://127.0.0.1:8000")) is None
    assert refusal_for(scope("http://api.example", host="api.example")) is not None


def test_no_origin_passes_with_a_token_only():
    refusal = refusal_for(scope())
    assert refusal is not None and refusal.close_code == 4003 and "token" in refusal.message
    assert refusal_for(scope(changeflow_token_user="7")) is None
    assert refusal_for(scope("http://evil.example", changeflow_token_user="7")) is not None


async def test_a_refused_websocket_is_told_why_then_closed():
    """Daphne would turn a close in the handshake into a bare 403: accepted, one frame, closed."""
    reached = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    sent: list[dict[str, Any]] = []
    messages = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ChangeflowOriginValidator(inner)(scope("http://127.0.0.1:9999"), receive, send)
    assert reached == []
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    frame = json.loads(sent[1]["text"])
    assert frame["event"] == "error" and frame["code"] == "forbidden"
    assert "http://127.0.0.1:9999" in frame["message"] and sent[2]["code"] == 4003


# -- the W008 check ---------------------------------------------------------------------


def test_the_wiring_check_finds_channels_validators_and_missing_checks():
    assert old_origin_validators(OLD_WIRING) == ["OriginValidator"]
    assert old_origin_validators(SECURE) == [] and wrapped_validators(SECURE) == 1
    assert wrapped_validators(NO_CHECK) == 0
    for name, expected in (("OLD_WIRING", "host names only"), ("NO_CHECK", "checks no websocket")):
        with override_settings(ASGI_APPLICATION=f"tests.test_identity.{name}"):
            found = [m for m in checks.check_settings() if m.id == "changeflow_channels.W008"]
        assert len(found) == 1 and expected in found[0].msg, found
    with override_settings(ASGI_APPLICATION="tests.test_identity.SECURE"):
        assert not [m for m in checks.check_settings() if m.id == "changeflow_channels.W008"]


# -- tokens --------------------------------------------------------------------------


def test_a_token_carries_its_issue_time_and_ends_after_its_lifetime(django_user_model, db):
    user = django_user_model.objects.create_user("tok", password="one")
    before = time.time()
    claims = read_token(make_token(user))
    assert claims.user_id == str(user.pk) and before - 1 <= claims.issued_at <= time.time()
    with override_settings(CHANGEFLOW_TOKEN_MAX_AGE=60):
        assert claims.expires_at() == pytest.approx(claims.issued_at + 60)
        with pytest.raises(TokenEnded) as ended:
            read_token(make_token(user), now=time.time() + 61)
    assert ended.value.refusal == EXPIRED and EXPIRED.close_code == 4001


@pytest.mark.parametrize(
    "token",
    [
        "forged",
        # A well-signed token of the old format (no issue time, no user hash).
        pytest.param("old", id="old-format"),
    ],
)
def test_a_token_not_valid_is_refused_as_such(token):
    from django.core import signing

    if token == "old":
        token = signing.dumps({"uid": "1"}, salt=SALT)
    with pytest.raises(TokenEnded) as ended:
        read_token(token)
    assert ended.value.refusal == INVALID and INVALID.close_code == 4002


@pytest.mark.django_db(transaction=True)
async def test_a_new_password_or_a_deactivation_revokes_a_token(django_user_model):
    from asgiref.sync import sync_to_async

    user = await sync_to_async(django_user_model.objects.create_user)("rev", password="one")
    claims = read_token(make_token(user))
    assert (await token_user(claims)).pk == user.pk
    user.set_password("two")
    await sync_to_async(user.save)()
    with pytest.raises(TokenEnded) as ended:
        await token_user(claims)
    assert ended.value.refusal == REVOKED
    claims = read_token(make_token(user))  # a token of the new password
    assert (await token_user(claims)).pk == user.pk
    user.is_active = False
    await sync_to_async(user.save)()
    with pytest.raises(TokenEnded):
        await token_user(claims)


# -- re-checks fail closed, connection caps: the consumer in-process --------------------

LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


class FlakyPolicy:
    """Allows everything, but its re-checks raise while ``failing`` (its backend is away)."""

    failing = False
    failed_once = False
    failed: Any = None  # an asyncio.Event set by a failure
    recovered: Any = None  # an asyncio.Event set by the first success after a failure

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        cls = type(self)
        if cls.failing:
            cls.failed_once = True
            if cls.failed is not None:
                cls.failed.set()
            raise RuntimeError("the permission backend is unreachable")
        if getattr(cls, "failed_once", False) and cls.recovered is not None:
            cls.recovered.set()
        return True

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False


async def _subscribed_client(stream: str = "shop.orders") -> Any:
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth.models import AnonymousUser

    from changeflow_channels.consumers import ChangeflowConsumer

    client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    client.scope["user"] = AnonymousUser()
    assert (await client.connect())[0]
    await client.send_json_to({"action": "subscribe", "stream": stream, "id": 1})
    assert (await client.receive_json_from())["event"] == "subscribed"
    return client


@pytest.mark.django_db
async def test_a_recheck_that_keeps_failing_ends_the_subscriptions_after_the_grace():
    import asyncio

    FlakyPolicy.failing, FlakyPolicy.failed_once = False, False
    with override_settings(
        CHANNEL_LAYERS=LAYER,
        CHANGEFLOW_PERMISSIONS=FlakyPolicy,
        CHANGEFLOW_RECHECK_EVERY=0.1,
        CHANGEFLOW_RECHECK_GRACE=0.5,
    ):
        client = await _subscribed_client()
        FlakyPolicy.failing = True
        started = asyncio.get_running_loop().time()
        ended = await client.receive_json_from(timeout=5)
        connection = await client.receive_json_from(timeout=5)
        closed = await client.receive_output(timeout=5)
        elapsed = asyncio.get_running_loop().time() - started
    FlakyPolicy.failing = False
    assert (ended["code"], ended["stream"]) == ("unavailable", "shop.orders")
    assert connection["code"] == "unavailable" and "stream" not in connection
    assert closed == {"type": "websocket.close", "code": 4012, "reason": connection["message"]}
    assert 0.5 <= elapsed < 3, elapsed


@pytest.mark.django_db
async def test_a_recheck_that_recovers_within_the_grace_keeps_the_subscriptions():
    import asyncio

    from channels.layers import get_channel_layer

    FlakyPolicy.failing, FlakyPolicy.failed_once = False, False
    FlakyPolicy.failed, FlakyPolicy.recovered = asyncio.Event(), asyncio.Event()
    with override_settings(
        CHANNEL_LAYERS=LAYER,
        CHANGEFLOW_PERMISSIONS=FlakyPolicy,
        CHANGEFLOW_RECHECK_EVERY=0.1,
        CHANGEFLOW_RECHECK_GRACE=30,
    ):
        client = await _subscribed_client()
        FlakyPolicy.failing = True
        await asyncio.wait_for(FlakyPolicy.failed.wait(), 5)  # the next re-check fails
        FlakyPolicy.failing = False
        await asyncio.wait_for(FlakyPolicy.recovered.wait(), 5)  # and a later one passes
        message = {
            "type": "changeflow.change",
            "database": "shop",
            "table": "orders",
            "change": {"type": "add", "old_val": None, "new_val": {"id": 1}},
            "epoch": "e1",
            "seq": 1,
        }
        await get_channel_layer().group_send("shop.orders", message)
        frame = await client.receive_json_from(timeout=5)
        await client.disconnect()
    FlakyPolicy.failed = FlakyPolicy.recovered = None
    assert (frame["event"], frame["new_val"]) == ("change", {"id": 1})


@pytest.mark.django_db(transaction=True)
async def test_a_token_opens_at_most_its_connections_in_one_process(django_user_model):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.contrib.auth.models import AnonymousUser

    from changeflow_channels.auth import TokenAuthMiddleware
    from changeflow_channels.consumers import ChangeflowConsumer

    user = await sync_to_async(django_user_model.objects.create_user)("capped")
    token = make_token(user)

    async def opened() -> tuple[Any, dict[str, Any]]:
        application = TokenAuthMiddleware(ChangeflowConsumer.as_asgi())
        client = WebsocketCommunicator(application, f"/ws/changeflow/?token={token}")
        client.scope["user"] = AnonymousUser()
        assert (await client.connect())[0]
        await client.send_json_to({"action": "unsubscribe", "stream": "a.b", "id": 1})
        return client, await client.receive_json_from(timeout=5)

    with override_settings(CHANNEL_LAYERS=LAYER, CHANGEFLOW_TOKEN_CONNECTIONS=2):
        first, answer = await opened()
        assert answer["code"] == "not_found"  # served
        second, _ = await opened()
        third, refused = await opened()
        assert refused["code"] == "rate_limited" and "id" not in refused
        assert (await third.receive_output(timeout=5))["code"] == 4004
        await first.disconnect()
        fourth, answer = await opened()
        assert answer["code"] == "not_found"
        for client in (second, fourth):
            await client.disconnect()
