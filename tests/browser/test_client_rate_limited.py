"""changeflow.js and ``rate_limited`` subscribes (issue 15, item 4): one refused with
``retry_after`` (too many subscribes, snapshots or resumes at once) is sent again after
that long; one refused without it (``CHANGEFLOW_MAX_SUBSCRIPTIONS``) is an error. And a
push over the connection's rate (``retry_after``) goes again after it, with its key."""

from __future__ import annotations

import pytest

from .scripted import scripted
from .test_client import MODULE, open_blank

pytestmark = pytest.mark.slow

# A WebSocket stand-in: refuses the first subscribe of each stream rate_limited (with
# retry_after for "db.later", without for "db.full"), takes the next.
SCRIPTED = scripted(
    setup="const refused = new Set();",
    answer="""
        if (frame.action !== "subscribe") return [];
        sent.push({ stream: frame.stream, at: performance.now() });
        if (refused.has(frame.stream)) {
            return [{ event: "subscribed", stream: frame.stream, id: frame.id }];
        }
        refused.add(frame.stream);
        const reply = { event: "error", code: "rate_limited", message: "slow down", id: frame.id };
        if (frame.stream === "db.later") reply.retry_after = 0.3;
        return [reply];
    """,
    run="""
        const flow = new Changeflow("ws://scripted.invalid/ws/", { minDelay: 10, maxDelay: 20 });
        flow.subscribe("db.later", () => {});
        flow.subscribe("db.full", () => {});
        const later = await flow.subscribed("db.later");
        let full = null;
        try {
            await flow.subscribed("db.full");
        } catch (error) {
            full = error.code;
        }
        flow.close();
        return { sent, later: later.event, full };
    """,
)


async def test_a_subscribe_refused_with_retry_after_is_sent_again_after_it(browser, demo_stack):
    page, errors = await open_blank(browser, demo_stack)
    result = await page.evaluate(SCRIPTED, MODULE)
    later = [frame["at"] for frame in result["sent"] if frame["stream"] == "db.later"]
    full = [frame for frame in result["sent"] if frame["stream"] == "db.full"]
    assert result["later"] == "subscribed" and len(later) == 2
    assert later[1] - later[0] >= 300  # not before retry_after (its backoff is shorter)
    assert result["full"] == "rate_limited" and len(full) == 1  # not sent again
    assert errors == []


# A WebSocket stand-in for pushes: refuses the first attempt of each push rate_limited with
# retry_after 0.3 s, answers the next one "pushed".
SCRIPTED_PUSH = scripted(
    answer="""
        if (frame.action !== "push") return [];
        sent.push({ key: frame.idempotency_key, at: performance.now() });
        if (sent.length === 1) {
            return [{ event: "error", code: "rate_limited", message: "slow down", id: frame.id,
                      retry_after: 0.3 }];
        }
        return [{ event: "pushed", id: frame.id, ok: true, inserted: 1 }];
    """,
    run="""
        const flow = new Changeflow("ws://scripted.invalid/ws/", { minDelay: 10, maxDelay: 20 });
        const pushed = await flow.push("db.t", { n: 1 });
        flow.close();
        return { sent, answer: pushed.event };
    """,
)


async def test_a_push_refused_with_retry_after_is_sent_again_after_it(browser, demo_stack):
    page, errors = await open_blank(browser, demo_stack)
    result = await page.evaluate(SCRIPTED_PUSH, MODULE)
    first, second = result["sent"]  # two attempts, no more
    assert result["answer"] == "pushed"
    assert first["key"] == second["key"]  # one push: written once whatever happened
    assert second["at"] - first["at"] >= 300  # not before retry_after (its backoff is shorter)
    assert errors == []
