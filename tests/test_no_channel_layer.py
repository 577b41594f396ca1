"""A project without CHANNEL_LAYERS: websocket clients are told so in plain words (and the
server logs it), instead of an AttributeError's text."""

from __future__ import annotations

import logging

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import CLOSE_NO_LAYER, ChangeflowConsumer

# Channels closes old database connections around each message it dispatches.
pytestmark = pytest.mark.django_db


@override_settings(CHANNEL_LAYERS={})
async def test_a_client_is_told_that_channel_layers_is_missing(caplog):
    communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    with caplog.at_level(logging.ERROR, logger="changeflow_channels"):
        connected, _ = await communicator.connect()
        assert connected
        frame = await communicator.receive_json_from()
        closed = await communicator.receive_output()
    assert frame["event"] == "error" and frame["code"] == "unavailable"
    assert "CHANNEL_LAYERS setting is missing" in frame["message"]
    assert closed == {"type": "websocket.close", "code": CLOSE_NO_LAYER}
    assert "CHANNEL_LAYERS setting is missing" in caplog.text
    await communicator.disconnect()
