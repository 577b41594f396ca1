"""orjson where it can, the standard json module for what orjson refuses: the same
values either way (frames to browsers, changefeed responses from the driver)."""

from __future__ import annotations

import json

import pytest

from changeflow_channels import changes, jsonsafe
from changeflow_channels.changes import build_change
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


def _feed_response(new_val: dict[str, object]) -> str:
    item = {"type": "change", "old_val": {"id": 1, "n": 0}, "new_val": new_val}
    return json.dumps({"t": 3, "r": [item, {"type": "state", "state": "ready"}]})


def _spy_on_json_safe(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The values ``json_safe`` is called with, wherever the feed's path calls it."""
    walked: list[object] = []
    original = jsonsafe.json_safe

    def spy(value: object) -> object:
        walked.append(value)
        return original(value)

    monkeypatch.setattr(jsonsafe, "json_safe", spy)
    monkeypatch.setattr(changes, "json_safe", spy, raising=False)
    return walked


def test_a_change_without_pseudo_types_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    walked = _spy_on_json_safe(monkeypatch)
    text = _feed_response({"id": 1, "n": 1, "tags": ["a", {"deep": [1, 2]}], "note": "$reql"})
    response = RawDecoder().decode(text)
    change = build_change(response["r"][0])
    assert walked == []
    assert response == json.loads(text)
    assert change["new_val"] == json.loads(text)["r"][0]["new_val"]


def test_a_change_with_pseudo_types_is_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    walked = _spy_on_json_safe(monkeypatch)
    at = {"$reql_type$": "TIME", "epoch_time": 0, "timezone": "+01:00"}
    blob = {"$reql_type$": "BINARY", "data": "AAE="}
    response = RawDecoder().decode(_feed_response({"id": 1, "at": at, "list": [{"b": blob}]}))
    assert walked and walked[0] is response  # the whole response, walked once from the top
    change = build_change(response["r"][0])
    assert change == {
        "type": "change",
        "old_val": {"id": 1, "n": 0},
        "new_val": {"id": 1, "at": "1970-01-01T01:00:00+01:00", "list": [{"b": "AAE="}]},
    }
