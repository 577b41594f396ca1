"""orjson where it can, the standard json module for what orjson refuses: the same
values either way (frames to browsers, changefeed responses from the driver)."""

from __future__ import annotations

import json

from changeflow_channels.jsonsafe import RawDecoder, json_safe
from changeflow_channels.web.protocol import encode


def test_frames_encode_compactly_and_what_orjson_refuses_still_encodes():
    frame = {"event": "change", "new_val": {"name": "café", "n": 1.5, "list": [1, None]}}
    text = encode(frame)
    assert " " not in text.replace("café", "")
    assert json.loads(text) == frame
    assert json.loads(encode([frame, frame])) == [frame, frame]
    for odd in ({"big": 2**70}, {"lone": "\ud800"}, {1: "int key"}):
        assert encode(odd) == json.dumps(odd, separators=(",", ":"))


def test_raw_decoder_keeps_pseudo_types_for_json_safe():
    text = json.dumps(
        {
            "t": 3,
            "r": [{"new_val": {"at": {"$reql_type$": "TIME", "epoch_time": 0, "timezone": "Z"}}}],
        }
    )
    response = RawDecoder({"time_format": "raw"}).decode(text)
    assert json_safe(response["r"][0]["new_val"]) == {"at": "1970-01-01T00:00:00+00:00"}


def test_raw_decoder_reads_what_orjson_refuses():
    for text in ('{"big": 1180591620717411303424}', '{"lone": "\\ud800"}'):
        assert RawDecoder().decode(text) == json.loads(text)
