"""The fault matrix (issue 14, item 10), last: a sender that goes away with answers due.

It runs last: while a worker spends seconds on each answer for a full reply channel,
the pushes of every other sender wait too, and a shared stack would carry that into
the scenarios after it.
"""

from __future__ import annotations

import pytest

from .scenario import Scenario

pytestmark = pytest.mark.slow
GONE_PUSHES = 150  # answers due on a channel nobody reads: more than it holds (100)


async def test_a_sender_gone_with_answers_due(scenario):
    """Another sender's pushes are still answered at once (the quiet burst after the
    fault must be accepted), and the gone sender's pushes are written."""
    s: Scenario = scenario("sender-gone-150-answers-due", "quiet")

    async def go_away() -> None:
        gone = await s.layer.new_channel()  # nobody will read it
        for i in range(GONE_PUSHES):
            message = {
                "type": "changeflow.push",
                "database": s.database,
                "table": s.table,
                "data": {"id": f"gone{i}", "w": s.fault_w + 0.5, "g": i % 3},
                "reply_channel": gone,
                "id": i,
            }
            await s.layer.send(s.writer.channel, message)

    await s.run(f"a sender goes away with {GONE_PUSHES} answers due", go_away)
    s.assert_ok()
