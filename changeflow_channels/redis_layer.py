"""Receiving from the channel layer without dying when the layer fails.

redis-py 8 gives every connection a 5 s ``socket_timeout``; channels_redis's
blocking ``receive()`` then raises ``redis.exceptions.TimeoutError`` after five
idle seconds (channels_redis #422). With a plain ``CHANNEL_LAYERS`` config that
would kill an idle worker and close every idle websocket with 1011. Here an
idle timeout just means "receive again", and a real outage (Redis restarted)
is retried with backoff.

Everything that relies on channels_redis's behaviour or internals beyond the
channel-layer API is here: ``receive_forever`` (its idle timeouts and
outages), ``ResilientChannelMixin`` (consumers built on it),
``exclusive_pop`` (a channel several worker processes read at once), the
one version check, ``internals_known``, that the worker's one-round-trip
``group_send`` (``worker/group_sender.py``) is gated by, the layer's
connection pools (``RedisChannelLayer``: bursts and Redis restarts) with
``group_discard_retrying``, and which Redis host holds changeflow's own keys
(``changeflow_redis_host``: the worker's leases, and check W010).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from importlib import metadata
from typing import Any

from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from channels_redis import core
from channels_redis.utils import decode_hosts
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# The channels_redis releases whose internals (a sorted set per channel, its
# serializer, its group keys) are relied on here; ``make test`` runs the
# tests that use them on the oldest and on the newest, and setup.cfg pins the
# same range.
OLDEST_KNOWN = (4, 2)
FIRST_UNKNOWN = (4, 4)
# A group nobody is in: discarding from it is the cheapest command that needs Redis.
PROBE_GROUP = "changeflow-probe"

# What Redis (the leases, channels_redis) raises when it is down or slow.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, OSError, asyncio.TimeoutError)
# What a channel layer's send, group_add or group_discard raises when the layer is
# down, slow or full.
LAYER_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, ChannelFull)


# -- Connection pools that hold under bursts and Redis restarts ---------------
#
# channels_redis gives each Redis host a redis-py ``ConnectionPool``: at most 100
# connections, and ``MaxConnectionsError`` for the 101st command running at once
# (1,000 clients subscribing together on one Daphne). Its connections are never
# checked either: after a Redis restart, the first command on each pooled
# connection fails with ``ConnectionError``. ``RedisChannelLayer`` makes the pool
# blocking (a command waits for a free connection, up to ``POOL_TIMEOUT``) and
# runs a command again once, on a new connection, when its connection was dead.

POOL_CONNECTIONS = 100  # per Redis host and event loop, unless the host says otherwise
POOL_TIMEOUT = 20.0  # seconds a command waits for a free connection
# A command whose connection failed is sent again once, on a fresh connection.
RECONNECT_RETRIES = 1
RECONNECT_BACKOFF = ExponentialWithJitterBackoff(cap=0.5, base=0.05)

# But not while receiving (``receive_forever``): a receive must see an outage, so
# that its consumer rejoins its groups, which a restarted Redis has forgotten.
_receiving: ContextVar[bool] = ContextVar("changeflow_receiving", default=False)


def _may_retry(error: Exception) -> bool:
    return not _receiving.get()


def pool_options(host: dict[str, Any]) -> dict[str, Any]:
    """A host's connection settings with this layer's defaults under them (what the
    host sets wins: ``max_connections``, ``timeout``, ``retry``...)."""
    defaults: dict[str, Any] = {
        "max_connections": POOL_CONNECTIONS,
        "timeout": POOL_TIMEOUT,
        "retry": Retry(
            RECONNECT_BACKOFF,
            RECONNECT_RETRIES,
            supported_errors=(RedisConnectionError,),
            is_retryable=_may_retry,
        ),
    }
    return {**defaults, **host}


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's pool of a Sentinel master (every new connection asks the Sentinels where
    the master is), blocking as ``BlockingConnectionPool`` does."""


class RedisChannelLayer(core.RedisChannelLayer):
    """channels_redis's ``RedisChannelLayer`` with a blocking pool of connections
    that reconnects once when Redis restarted (``CHANNEL_LAYERS``'s ``BACKEND``:
    ``"changeflow_channels.redis_layer.RedisChannelLayer"``), a Sentinel host's too
    (after a failover: once on the promoted replica)."""

    def create_pool(self, index: int) -> Any:
        options = pool_options(dict(self.hosts[index]))
        if "master_name" in options:  # channels_redis's Sentinel host
            master_name = options.pop("master_name")
            sentinels = Sentinel(
                options.pop("sentinels"), sentinel_kwargs=options.pop("sentinel_kwargs", None)
            )
            return BlockingSentinelConnectionPool(master_name, sentinels, **options)
        address = options.pop("address", None)
        if address is not None:
            return BlockingConnectionPool.from_url(address, **options)
        return BlockingConnectionPool(**options)


DISCARD_ATTEMPTS = 4
DISCARD_BACKOFF = 0.2  # seconds before the second attempt, doubled (with jitter) after


async def group_discard_retrying(
    channel_layer: Any, group: str, channel: str, attempts: int = DISCARD_ATTEMPTS
) -> None:
    """``group_discard``, tried again with backoff while the layer fails: a member
    left in a group after its client is gone is sent every change until the group
    expires (a day by default). Raises the last error (``LAYER_ERRORS``) when every
    attempt failed."""
    delay = DISCARD_BACKOFF
    for attempt in range(1, attempts + 1):
        try:
            await channel_layer.group_discard(group, channel)
            return
        except LAYER_ERRORS as error:
            if attempt == attempts:
                raise
            logger.info("group_discard(%s) failed (%r); trying again", group, error)
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay *= 2


def changeflow_redis_host(
    layer_alias: str, redis_url: str | dict[str, Any] | None
) -> dict[str, Any] | None:
    """The Redis holding changeflow's own keys (the leases, the worker registry), as a
    channels_redis host: ``redis_url`` (CHANGEFLOW_REDIS: a URL, or a Sentinel host
    ``{"sentinels": [(host, port), ...], "master_name": ...}``) when set, else the first
    host of the channel layer ``layer_alias`` when it is a Redis layer (channels_redis's
    or this module's); None otherwise: no leases, one worker."""
    from django.conf import settings

    if isinstance(redis_url, dict):
        return dict(redis_url)
    if redis_url:
        return {"address": redis_url}
    config = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get(layer_alias) or {}
    backend = str(config.get("BACKEND", ""))
    if not any(name in backend for name in ("channels_redis", "redis_layer")):
        return None
    host: dict[str, Any] = decode_hosts((config.get("CONFIG") or {}).get("hosts"))[0]
    return host


def channels_redis_version() -> tuple[int, int] | None:
    """channels_redis's installed (major, minor) release; None if unknown."""
    try:
        major, minor = metadata.version("channels-redis").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def internals_known() -> bool:
    """Whether the installed channels_redis is one whose internals are tested here."""
    version = channels_redis_version()
    return version is not None and OLDEST_KNOWN <= version < FIRST_UNKNOWN


async def receive_forever(
    channel_layer: Any,
    channel: str,
    recovered: dict[str, Any] | None = None,
    receive: Callable[[str], Awaitable[Any]] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """``channel_layer.receive(channel)``, retried until a message arrives.

    ``receive``: used instead of the layer's (what it returns is returned).
    ``should_stop``: asked after each failed receive (which took nothing): when
    true, None is returned instead of retrying, so a stopping worker is not held
    by a channel layer that is down.

    With ``recovered``: after an outage, that message is returned as soon as the
    layer answers again (a cheap probe), so the caller can rejoin its groups,
    which a restarted Redis has forgotten.
    """
    token = _receiving.set(True)
    try:
        return await _receive_forever(channel_layer, channel, recovered, receive, should_stop)
    finally:
        _receiving.reset(token)


async def _receive_forever(
    channel_layer: Any,
    channel: str,
    recovered: dict[str, Any] | None,
    receive: Callable[[str], Awaitable[Any]] | None,
    should_stop: Callable[[], bool] | None,
) -> Any:
    delay = 0.1
    failed = False
    while True:
        try:
            if failed and recovered is not None:
                await channel_layer.group_discard(PROBE_GROUP, channel)
                logger.warning("channel layer back for %s", channel)
                if OUTAGES.recovered(channel_layer, channel):
                    return dict(recovered)
                failed = False  # told already, by the receive that saw the layer back first
            return await (receive or channel_layer.receive)(channel)
        except asyncio.CancelledError:
            raise
        except RedisTimeoutError:
            continue  # an idle connection's socket_timeout: receive again
        except Exception as error:  # the receive loop's boundary: logged, retried with backoff
            failed = True
            OUTAGES.failed(channel_layer)
            if should_stop is not None and should_stop():
                return None
            logger.warning(
                "channel layer receive on %s failed (%r); retrying in %.1f s", channel, error, delay
            )
            await asyncio.sleep(delay)
            if should_stop is not None and should_stop():
                return None
            delay = min(delay * 2, MAX_BACKOFF)


class Outages:
    """Every consumer of a process must hear that the channel layer came back, but
    channels_redis's receives of one process share one pop: only the consumer whose
    receive made it sees an outage. So the first receive that sees the layer back
    after an outage tells every other consumer of the process listening
    (``listen``), once per outage."""

    def __init__(self) -> None:
        self._down: set[int] = set()  # id() of the layers in an outage
        self._listeners: dict[int, dict[str, Callable[[], None]]] = {}

    def listen(self, channel_layer: Any, channel: str, tell: Callable[[], None]) -> None:
        self._listeners.setdefault(id(channel_layer), {})[channel] = tell

    def forget(self, channel_layer: Any, channel: str) -> None:
        listeners = self._listeners.get(id(channel_layer), {})
        listeners.pop(channel, None)
        if not listeners:
            self._listeners.pop(id(channel_layer), None)

    def failed(self, channel_layer: Any) -> None:
        self._down.add(id(channel_layer))

    def recovered(self, channel_layer: Any, channel: str) -> bool:
        """The layer answers again (for ``channel``'s receive): whether that is news
        to ``channel`` (False: another receive saw it first and told everyone
        listening, ``channel`` too)."""
        if id(channel_layer) not in self._down:
            return channel not in self._listeners.get(id(channel_layer), {})
        self._down.discard(id(channel_layer))
        for other, tell in list(self._listeners.get(id(channel_layer), {}).items()):
            if other != channel:
                tell()
        return True


OUTAGES = Outages()


class ResilientChannelMixin:
    """``AsyncConsumer.__call__``, but its channel-layer receive survives the layer
    failing (see ``receive_forever``) instead of ending the consumer."""

    channel_layer_alias: str

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        recovered = {"type": "changeflow.layer_recovered"}
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(
                receive_forever, self.channel_layer, self.channel_name, recovered=recovered
            )
            sources.append(self.channel_receive)
            put = getattr(receive, "put", None)  # a queue of the consumer's own (LocalEvents)
            if put is not None:
                OUTAGES.listen(self.channel_layer, self.channel_name, lambda: put(dict(recovered)))
        try:
            with contextlib.suppress(StopConsumer):
                await await_many_dispatch(sources, self.dispatch)  # type: ignore[attr-defined]
        finally:
            if self.channel_layer is not None:
                OUTAGES.forget(self.channel_layer, self.channel_name)


# -- Receiving from a channel that several worker processes read at once -----
#
# channels_redis (4.x) keeps what ``receive()`` pops in a backup queue named after
# the channel, and every ``receive()`` first moves that whole queue back into the
# channel. With one reader that protects against a cancelled receive; with
# several processes reading one channel, a message another process has just
# taken is put back and handed out a second time (a push written twice). Here
# the message is popped atomically (``BZPOPMIN``) with no backup queue: each
# message goes to exactly one worker. The pop waits at most ``POP_TIMEOUT``, so
# a receive is never cancelled while it may be taking a message (see
# ``ChangeflowWorker._receive_unless_stopping``).

POP_TIMEOUT = 0.5  # seconds; must stay below the worker's RECEIVE_GRACE

Pop = Callable[[str, int], Awaitable[list[dict[str, Any] | None]]]


def exclusive_pop(channel_layer: Any) -> Pop | None:
    """``pop(channel, limit)``: up to ``limit`` messages of a channel shared by
    processes, oldest first (an empty list after ``POP_TIMEOUT`` without any);
    None (no such function) when the layer is not channels_redis's
    ``RedisChannelLayer`` (its own ``receive`` is fine then).

    Under load one round trip takes everything waiting (``ZPOPMIN`` with a
    count, as atomic as ``BZPOPMIN``: each message still goes to one worker);
    when the channel is empty it waits with ``BZPOPMIN``, then takes the rest.
    """
    needed = ("prefix", "ring_size", "connection", "deserialize", "require_valid_channel_name")
    from channels_redis.core import RedisChannelLayer

    # A subclass keeps the storage (a sorted set per channel): it is popped the same way.
    if not isinstance(channel_layer, RedisChannelLayer) or not all(
        hasattr(channel_layer, name) for name in needed
    ):
        return None
    if not internals_known():
        # Still popped this way: channels_redis's own receive would hand one
        # message to several workers. Its storage must be what it was.
        logger.warning(
            "channels_redis %s is outside the releases this worker is tested with "
            "(%d.%d to before %d.%d): several workers rely on its storage layout",
            channels_redis_version(),
            *OLDEST_KNOWN,
            *FIRST_UNKNOWN,
        )
    hosts = itertools.cycle(range(channel_layer.ring_size))

    async def pop(channel: str, limit: int = 1) -> list[dict[str, Any] | None]:
        assert "!" not in channel, "only for channels shared by processes"
        assert channel_layer.require_valid_channel_name(channel, receive=True)
        assert limit >= 1
        connection = channel_layer.connection(next(hosts))
        key = channel_layer.prefix + channel
        members = [member for member, _ in await connection.zpopmin(key, limit)]
        if not members:
            popped = await connection.bzpopmin(key, timeout=POP_TIMEOUT)
            if popped is None:
                return []
            members.append(popped[1])
            if limit > 1:
                members.extend(member for member, _ in await connection.zpopmin(key, limit - 1))
        return [load(member) for member in members]

    def load(member: bytes) -> dict[str, Any] | None:
        # One undecodable message must not cost the others popped with it.
        try:
            return channel_layer.deserialize(member)
        except Exception as error:  # one message's boundary: logged, the others go on
            logger.error("dropped an undecodable message: %r", error)
            return None

    return pop
