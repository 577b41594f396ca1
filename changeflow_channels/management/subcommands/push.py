"""``manage.py changeflow push STREAM DATA``: push from the command line, print the answer."""

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from changeflow_channels.names import InvalidName, parse_stream
from changeflow_channels.push_api import PushFailed, apush_to_flow
from changeflow_channels.pushes import OPS, PushError
from changeflow_channels.redis_layer import LAYER_ERRORS

HELP = "Push a document (or a JSON list of them, '-' for standard input) and print the worker's answer."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("stream", help='"database.table"')
    parser.add_argument(
        "data", nargs="?", help="JSON: a document or a list; '-' reads standard input"
    )
    parser.add_argument("--op", choices=OPS, default="insert")
    parser.add_argument("--key", help="primary key (JSON, or plain text for a string key)")
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="pushes with one key into one table are written once (at most 128 characters)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the answer"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="with --idempotency-key: send again after a timeout or an unavailable answer",
    )
    parser.add_argument("--layer", default="default", help="channel layer alias")


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise CommandError(f"{what} is not valid JSON: {error}") from None


def _key(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare string key, no quotes needed


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    try:
        database, table = parse_stream(options["stream"])
    except InvalidName as error:
        raise CommandError(str(error)) from None
    raw = options["data"]
    if raw == "-":
        raw = sys.stdin.read()
    data = None if raw is None else _json(raw, "DATA")
    layer = get_channel_layer(options["layer"])
    if layer is None:
        raise CommandError("No channel layer is configured (CHANNEL_LAYERS).")
    try:
        result = async_to_sync(apush_to_flow)(
            database,
            table,
            data,
            op=options["op"],
            key=_key(options["key"]),
            idempotency_key=options["idempotency_key"],
            wait=True,
            timeout=options["timeout"],
            retries=options["retries"],
            channel_layer=layer,
        )
    except PushError as error:
        raise CommandError(f"push refused: {error}") from None
    except PushFailed as error:
        command.stdout.write(json.dumps(error.result, indent=2))
        raise CommandError(f"the worker refused the push: {error}") from None
    except LAYER_ERRORS as error:
        raise CommandError(
            f"the channel layer {options['layer']!r} is unreachable "
            f"({type(error).__name__}: {error}); is Redis running?"
        ) from None
    except TimeoutError:
        raise CommandError(
            f"no answer from the worker within {options['timeout']:g} s (is `manage.py changeflow` running?)"
        ) from None
    command.stdout.write(json.dumps(result, indent=2))
