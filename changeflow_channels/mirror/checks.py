"""System checks for CHANGEFLOW_MODELS (Django models in the flow).

E020 an entry (or the setting) that is not a dict, E021 an unknown model label,
E022 an unknown field name in ``fields``/``exclude`` (or the primary key
excluded), E023 bad ``events`` letters, E024 both ``fields`` and ``exclude``,
E025 an unknown option, E026 an invalid ``CHANGEFLOW_MODELS_DB`` (or a stream
name that would be too long).
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Tags, register

from ..conf import get_settings
from . import config

CHECK_IDS = {
    config.NOT_A_DICT: "changeflow_channels.E020",
    config.UNKNOWN_MODEL: "changeflow_channels.E021",
    config.UNKNOWN_FIELD: "changeflow_channels.E022",
    config.BAD_EVENTS: "changeflow_channels.E023",
    config.FIELDS_AND_EXCLUDE: "changeflow_channels.E024",
    config.UNKNOWN_OPTION: "changeflow_channels.E025",
    config.BAD_NAME: "changeflow_channels.E026",
}


@register(Tags.compatibility)
def check_models(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Every ``CHANGEFLOW_MODELS`` entry that cannot be used, with why."""
    _, errors = config.load_flows(get_settings())
    return [
        Error(str(error), hint=error.hint or None, id=CHECK_IDS[error.code]) for error in errors
    ]
