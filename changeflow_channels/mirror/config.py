"""``CHANGEFLOW_MODELS``: which Django models are mirrored into RethinkDB, and how.

    CHANGEFLOW_MODELS = {
        "auth.User": {"events": "cud", "exclude": ["password"]},
        "shop.Order": {"events": "cu", "fields": ["id", "status", "total"]},
    }

Each entry becomes a ``ModelFlow``: the model, the events it pushes (``c`` create,
``u`` update, ``d`` delete), the fields sent besides the primary key (always sent,
as ``"id"``) and its stream, ``<CHANGEFLOW_MODELS_DB>.<app_label>_<model_name>``.
The system checks (``checks``) and the signal registration (``signals``) read the
settings through ``load_flows``, so both agree on what is valid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db.models import Field, Model

from ..conf import ChangeflowSettings
from ..names import InvalidName, stream_name, validate_name

EVENT_LETTERS = "cud"
OPTIONS = ("events", "fields", "exclude")
DEFAULT_EVENTS = "cud"

# What each kind of mistake is reported as by ``manage.py check``.
NOT_A_DICT = "changeflow_channels.E020"
UNKNOWN_MODEL = "changeflow_channels.E021"
UNKNOWN_FIELD = "changeflow_channels.E022"
BAD_EVENTS = "changeflow_channels.E023"
FIELDS_AND_EXCLUDE = "changeflow_channels.E024"
UNKNOWN_OPTION = "changeflow_channels.E025"
BAD_NAME = "changeflow_channels.E026"


class ModelConfigError(ValueError):
    """A ``CHANGEFLOW_MODELS`` entry that cannot be used; ``check_id`` names its kind,
    ``hint`` says what would do."""

    def __init__(self, check_id: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.check_id = check_id
        self.hint = hint


@dataclass(frozen=True)
class ModelFlow:
    """One registered model: what is pushed, and where to."""

    model: type[Model]
    events: frozenset[str]
    fields: tuple[Field, ...]  # sent besides the primary key
    database: str
    table: str

    @property
    def label(self) -> str:
        """``"app_label.ModelName"``, as ``manage.py changeflow sync`` takes it."""
        return self.model._meta.label

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"


def table_name(model: type[Model]) -> str:
    """``<app_label>_<model_name>``, e.g. ``auth_user``."""
    return f"{model._meta.app_label}_{model._meta.model_name}"


def _field_index(model: type[Model]) -> dict[str, Field]:
    """Fields that can be sent, by name and by attname (``customer`` and ``customer_id``)."""
    meta = model._meta
    index: dict[str, Field] = {}
    for field in [*meta.concrete_fields, *meta.many_to_many]:
        index[field.name] = field
        index[field.attname] = field
    return index


def _names(model_label: str, option: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ModelConfigError(
            UNKNOWN_FIELD,
            f'CHANGEFLOW_MODELS["{model_label}"]["{option}"] must be a list of field names, not {value!r}.',
            hint='For example ["id", "status", "total"].',
        )
    return list(value)


def _resolve(
    model: type[Model], model_label: str, option: str, names: Iterable[Any]
) -> list[Field]:
    index = _field_index(model)
    fields = []
    for name in names:
        field = index.get(name) if isinstance(name, str) else None
        if field is None:
            known = sorted({f.name for f in index.values()})
            raise ModelConfigError(
                UNKNOWN_FIELD,
                f'CHANGEFLOW_MODELS["{model_label}"]["{option}"]: {model._meta.label} has no field {name!r}.',
                hint=f"Its fields are: {', '.join(known)}.",
            )
        fields.append(field)
    return fields


def _events(model_label: str, events: Any) -> frozenset[str]:
    if not isinstance(events, str) or not events or set(events) - set(EVENT_LETTERS):
        raise ModelConfigError(
            BAD_EVENTS,
            f'CHANGEFLOW_MODELS["{model_label}"]["events"] is {events!r}: expected letters among "cud".',
            hint='"c" pushes creates, "u" updates, "d" deletes; for example "cud" or "cu".',
        )
    return frozenset(events)


def _model(model_label: Any) -> type[Model]:
    try:
        if not isinstance(model_label, str):
            raise ValueError
        return apps.get_model(model_label)
    except (LookupError, ValueError):
        raise ModelConfigError(
            UNKNOWN_MODEL,
            f"CHANGEFLOW_MODELS: {model_label!r} is not an installed model.",
            hint='Use "app_label.ModelName" of a model in INSTALLED_APPS, e.g. "auth.User".',
        ) from None


def parse_entry(model_label: Any, entry: Any, database: str) -> ModelFlow:
    """One ``CHANGEFLOW_MODELS`` entry as a ``ModelFlow``; raises ``ModelConfigError``."""
    if not isinstance(entry, dict):
        raise ModelConfigError(
            NOT_A_DICT,
            f"CHANGEFLOW_MODELS[{model_label!r}] must be a dict, not {type(entry).__name__}.",
            hint='For example {"events": "cud", "exclude": ["password"]}.',
        )
    model = _model(model_label)
    unknown = sorted(str(key) for key in entry if key not in OPTIONS)
    if unknown:
        raise ModelConfigError(
            UNKNOWN_OPTION,
            f"CHANGEFLOW_MODELS[{model_label!r}] has unknown option(s) {', '.join(unknown)}.",
            hint=f"The options are {', '.join(OPTIONS)}.",
        )
    if "fields" in entry and "exclude" in entry:
        raise ModelConfigError(
            FIELDS_AND_EXCLUDE,
            f"CHANGEFLOW_MODELS[{model_label!r}] gives both fields and exclude.",
            hint="Give the fields to send, or the fields to leave out, not both.",
        )
    events = _events(model_label, entry.get("events", DEFAULT_EVENTS))
    meta = model._meta
    if getattr(meta, "is_composite_pk", False):
        raise ModelConfigError(
            UNKNOWN_FIELD,
            f"CHANGEFLOW_MODELS: {meta.label} has a composite primary key, which is not supported.",
        )
    pk = meta.pk
    if "fields" in entry:
        listed = _resolve(
            model, model_label, "fields", _names(model_label, "fields", entry["fields"])
        )
        fields = [f for f in dict.fromkeys(listed) if f is not pk]
    else:
        excluded = _resolve(
            model, model_label, "exclude", _names(model_label, "exclude", entry.get("exclude", []))
        )
        if pk in excluded:
            raise ModelConfigError(
                UNKNOWN_FIELD,
                f"CHANGEFLOW_MODELS[{model_label!r}]: the primary key {pk.name!r} cannot be excluded.",
                hint='The primary key is always sent, as "id": it is the document\'s key in RethinkDB.',
            )
        fields = [f for f in meta.concrete_fields if f is not pk and f not in excluded]
    table = table_name(model)
    try:
        stream_name(database, table)
    except InvalidName as error:
        raise ModelConfigError(
            BAD_NAME,
            f"CHANGEFLOW_MODELS_DB / {meta.label}: {error}.",
            hint="CHANGEFLOW_MODELS_DB must be a RethinkDB database name (A-Z, a-z, 0-9, _ and -).",
        ) from None
    return ModelFlow(
        model=model, events=events, fields=tuple(fields), database=database, table=table
    )


def models_db_problem(database: Any) -> ModelConfigError | None:
    """What is wrong with ``CHANGEFLOW_MODELS_DB``, or None."""
    try:
        validate_name(database, "database")
    except InvalidName as error:
        return ModelConfigError(
            BAD_NAME,
            f"CHANGEFLOW_MODELS_DB: {error}.",
            hint='Model tables go into this RethinkDB database; the default is "django".',
        )
    return None


def load_flows(conf: ChangeflowSettings) -> tuple[list[ModelFlow], list[ModelConfigError]]:
    """Every valid entry of ``CHANGEFLOW_MODELS``, and the errors of the others."""
    if not isinstance(conf.models, dict):
        return [], [
            ModelConfigError(
                NOT_A_DICT,
                f"CHANGEFLOW_MODELS must be a dict, not {type(conf.models).__name__}.",
                hint='For example {"auth.User": {"events": "cud", "exclude": ["password"]}}.',
            )
        ]
    if conf.models:
        problem = models_db_problem(conf.models_db)
        if problem:
            return [], [problem]
    flows: list[ModelFlow] = []
    errors: list[ModelConfigError] = []
    for model_label, entry in conf.models.items():
        try:
            flows.append(parse_entry(model_label, entry, conf.models_db))
        except ModelConfigError as error:
            errors.append(error)
    return flows, errors
