"""The messages of ``manage.py check`` (``checks.py``, ``deployment_checks.py``): an id
under ``changeflow_channels.``, the problem (naming the setting and its value) and a hint."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, Warning

PREFIX = "changeflow_channels."

Messages = list[CheckMessage]


def check_error(code: str, message: str, hint: str) -> Error:
    return Error(message, hint=hint, id=PREFIX + code)


def check_warning(code: str, message: str, hint: str) -> Warning:
    return Warning(message, hint=hint, id=PREFIX + code)
