"""Daphne as changeflow-channels runs it:
``python -m changeflow_channels.serve [daphne's options] myproject.asgi:application``.

It takes Daphne's own command line and runs Daphne, with two differences:

- A client that breaks the websocket protocol gets a close frame with RFC 6455's code
  instead of a dropped TCP connection: a message larger than
  ``--websocket-max-message-size`` (or a frame larger than ``--websocket-max-frame-size``,
  both 1 MiB by default) is closed with **1009**, a text frame that is not valid UTF-8
  with **1007**, other protocol errors with 1002. Autobahn, which Daphne uses, drops the
  connection on these by default (its ``failByDrop`` option, which Daphne does not
  expose): the client saw 1006, as for a network failure, and could not tell that its
  own frame was at fault (a client resending it after reconnecting would loop).
- It refuses to start when ``CHANGEFLOW_MAX_FRAME_BYTES`` is not below what Daphne
  accepts, or ``CHANGEFLOW_MAX_SENT_FRAME_BYTES`` is above what it sends
  (``frame_limits``): every frame over ``CHANGEFLOW_MAX_FRAME_BYTES`` that Daphne
  accepts is then answered ``too_large``, on a connection that stays open.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from daphne.cli import CommandLineInterface  # type: ignore[import-untyped]
from daphne.server import Server  # type: ignore[import-untyped]

from .conf import get_settings
from .frame_limits import limit_problems

logger = logging.getLogger(__name__)


class LimitsDisagree(SystemExit):
    """The settings' frame limits and Daphne's disagree (see ``frame_limits``)."""


class ChangeflowServer(Server):  # type: ignore[misc]  # daphne is untyped
    """Daphne's server, failing websockets with a close frame, limits checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        problems = limit_problems(
            get_settings(), self.websocket_max_message_size, self.websocket_max_frame_size
        )
        if problems:
            for problem in problems:
                logger.critical("%s", problem)
            raise LimitsDisagree(
                "changeflow_channels.serve: " + " ".join(problems) + " Raise Daphne's "
                "--websocket-max-message-size and --websocket-max-frame-size, or lower the setting."
            )

    # Server.run() makes its websocket factory and then sets Daphne's options on it
    # (failByDrop untouched); this setter adds ours as the factory is made.
    @property
    def ws_factory(self) -> Any:
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory: Any) -> None:
        if factory is not None:
            factory.setProtocolOptions(failByDrop=False)
        self._ws_factory = factory


class ChangeflowCommandLine(CommandLineInterface):  # type: ignore[misc]
    description = "Daphne for changeflow-channels (websocket failures closed with a code)"
    server_class = ChangeflowServer


def main() -> None:
    ChangeflowCommandLine().run(sys.argv[1:])


if __name__ == "__main__":
    main()
