"""A WebSocket stand-in for the tests of ``changeflow.js`` in Chromium.

``scripted(answer, run)`` is a function for ``page.evaluate(..., MODULE)``: it imports the
client, replaces the page's ``WebSocket`` for the time of ``run`` by a socket that opens at
once and answers each frame the client sends with the frames ``answer`` returns, and gives
back what ``run`` returns. Both are JavaScript: ``answer`` a function body of ``frame``
returning a list of frames (or nothing); ``run`` a block using ``Changeflow``. ``sent`` (an
array) and whatever ``setup`` declares are shared by both."""

from __future__ import annotations

TEMPLATE = """async (module) => {
    const { Changeflow } = await import(module);
    const sent = [];
    /*SETUP*/
    const answer = (frame) => {
        /*ANSWER*/
    };
    class ScriptedSocket {
        constructor(url) {
            setTimeout(() => this.onopen && this.onopen(), 0);
        }
        send(text) {
            for (const reply of answer(JSON.parse(text)) || []) {
                setTimeout(() => this.onmessage && this.onmessage({ data: JSON.stringify(reply) }), 0);
            }
        }
        close() {}
    }
    const real = window.WebSocket;
    window.WebSocket = ScriptedSocket;
    try {
        /*RUN*/
    } finally {
        window.WebSocket = real;
    }
}"""


def scripted(answer: str, run: str, setup: str = "") -> str:
    """The page function of a test (see the module doc)."""
    return (
        TEMPLATE.replace("/*SETUP*/", setup).replace("/*ANSWER*/", answer).replace("/*RUN*/", run)
    )
