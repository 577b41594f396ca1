"""changeflow.js and the server's frame limits (issue 15, item 7): a push larger than the
server's websocket takes is rejected ``too_large`` at once, without a send; the server
would close the connection (1009) at every try, and the client reconnected and sent it
again until its retries were spent ("unavailable")."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.slow

MODULE = "/static/changeflow_channels/changeflow.js"


async def test_a_push_over_the_servers_limit_is_rejected_too_large_unsent(browser, demo_stack):
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(demo_stack.url)
    stream = f"web_{uuid.uuid4().hex[:8]}.frames"
    result = await page.evaluate(
        """async ([module, stream]) => {
            const { Changeflow } = await import(module);
            const flow = new Changeflow("/ws/changeflow/", { minDelay: 50, maxDelay: 200 });
            const states = [];
            flow.addEventListener("state", (e) => states.push(e.detail?.state ?? flow.state));
            await new Promise((resolve) => {
                const check = () => (flow.state === "open" ? resolve() : setTimeout(check, 20));
                check();
            });
            const outcome = async (data) => {
                try {
                    return { ok: true, frame: await flow.push(stream, data, { timeout: 5000 }) };
                } catch (error) {
                    return { ok: false, code: error.code };
                }
            };
            const big = await outcome({ pad: "x".repeat(1200000) });  // over Daphne's 1 MiB
            const over = await outcome({ pad: "y".repeat(100000) });  // over the server's 64 KiB
            const small = await outcome({ n: 1 });
            const result = { big, over, small, states: [...states], state: flow.state };
            flow.close();
            return result;
        }""",
        [MODULE, stream],
    )
    assert result["big"] == {"ok": False, "code": "too_large"}, result
    assert result["over"] == {"ok": False, "code": "too_large"}, result  # the server's answer
    assert result["small"]["ok"], result
    assert "reconnecting" not in result["states"], result  # no connection was closed
    assert result["state"] == "open", result
    assert errors == []
