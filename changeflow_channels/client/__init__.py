"""A Python client of the browser protocol, for services, scripts and tests::

    from changeflow_channels.client import ChangeflowClient

    async with ChangeflowClient("wss://example.com/ws/changeflow/", token=token) as client:
        answer = await client.push("shop.orders", {"total": 10})
        async with client.subscribe("shop.orders", snapshot=True) as events:
            async for event in events:
                if event["event"] == "snapshot": ...   # the documents, parts put together
                elif event["event"] == "change": ...   # one change, in order, exactly once
                elif event["event"] == "resync": ...   # changes were lost: a snapshot follows

It does what ``changeflow.js`` does (docs/protocol.md): it sends the token as an
``Authorization: Bearer`` header and the Origin of the URL; it acknowledges what it reads
(flow control); it reconnects with backoff (full jitter) and resumes every subscription with
``since``, so its events go on in order and exactly once, or it yields ``resync``; a push
carries an idempotency key and is sent again with it after a timeout, an ``unavailable``
answer or a lost connection, so the server writes it once.

Each ``subscribe`` is a server subscription of its own (named with ``sub``), however many
share a stream. Its events wait in a bounded queue: a subscription nobody reads stops the
reading of the whole connection (and then the server closes it): read every subscription
you open, or leave its ``async with``.
"""

from .connection import ChangeflowClient, origin_of
from .subscription import ChangeflowError, Subscription

__all__ = ["ChangeflowClient", "ChangeflowError", "Subscription", "origin_of"]
