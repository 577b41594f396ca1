"""Make ReQL values JSON-safe for the channel layer and browsers.

The worker reads with ``time_format="raw"`` and ``binary_format="raw"``, so
pseudo-types arrive as ``{"$reql_type$": ...}`` objects: times become ISO 8601
strings, binary becomes base64 text. Everything else is already JSON.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

PSEUDO_TYPE_KEY = "$reql_type$"  # the key of every pseudo-type object


def _iso8601(value: dict[str, Any]) -> str | float:
    """ISO 8601 with the time's own offset; the bare epoch seconds for a time
    Python cannot represent (beyond year 9999, or a malformed offset)."""
    epoch_time = value.get("epoch_time", 0)
    try:
        offset = str(value.get("timezone") or "+00:00")
        if offset == "Z":
            offset = "+00:00"
        sign = -1 if offset.startswith("-") else 1
        hours, _, minutes = offset.lstrip("+-").partition(":")
        tz = timezone(sign * timedelta(hours=int(hours or 0), minutes=int(minutes or 0)))
        return datetime.fromtimestamp(epoch_time, tz).isoformat()
    except (ValueError, OverflowError, OSError, TypeError):
        return epoch_time


_CONTAINERS = (dict, list)  # a tuple: ``dict | list`` would build a union object per call


def json_safe(value: Any) -> Any:
    """``value`` with times and binary turned into strings.

    Containers are changed in place and returned (no copy: the worker calls
    this once per change on values the driver has just decoded, which nobody
    else holds); a pseudo-type at the top is returned converted."""
    if isinstance(value, dict):
        reql_type = value.get(PSEUDO_TYPE_KEY)
        if reql_type == "TIME":
            return _iso8601(value)
        if reql_type == "BINARY":
            return value.get("data", "")
        for key, item in value.items():
            if isinstance(item, _CONTAINERS):
                safe = json_safe(item)
                if safe is not item:
                    value[key] = safe  # replacing a value while iterating is allowed
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, _CONTAINERS):
                safe = json_safe(item)
                if safe is not item:
                    value[index] = safe
        return value
    return value


class RawDecoder:
    """The driver's response decoder for queries run with raw time and binary
    formats (``json_decoder=RawDecoder``): orjson, and none of ``ReQLDecoder``'s
    per-object hook, which does nothing for raw formats but costs a Python call
    per object. Text orjson refuses (lone surrogates, integers beyond 64 bits)
    goes through the standard decoder.

    What it returns is JSON-safe: a response whose text holds ``$reql_type$``
    is walked by ``json_safe`` (times and binary become strings); any other,
    almost every changefeed response, is not walked at all. The server writes
    the key literally (``$`` is never escaped), and user documents cannot carry
    it as a key, so a response without the text has no pseudo-type."""

    def __init__(self, reql_format_opts: dict[str, Any] | None = None) -> None:
        """The driver passes its format options; raw formats need none of them."""

    def decode(self, text: str) -> Any:
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = json.loads(text)
        if PSEUDO_TYPE_KEY in text:
            return json_safe(response)
        return response


def is_unicode(text: str) -> bool:
    """False for text with lone surrogates ("\\ud800"): valid JSON escapes, but
    not Unicode, so neither UTF-8 nor the channel layer can carry them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
