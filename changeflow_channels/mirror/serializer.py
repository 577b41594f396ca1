"""Model instances as RethinkDB documents, with Django's own serialisation rules.

The rules are those of ``django.core.serializers.python`` followed by
``DjangoJSONEncoder`` (what ``dumpdata --format json`` writes): dates and
datetimes become ISO 8601 strings, decimals and UUIDs strings, a foreign key its
target's primary key, a many-to-many field the list of its targets' keys. The
primary key is stored as ``"id"``; only the configured fields are read.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Field, Model
from django.utils.encoding import is_protected_type

from .config import ModelFlow


def _raw_value(instance: Model, field: Field) -> Any:
    """As ``django.core.serializers.python.Serializer._value_from_field``."""
    value = field.value_from_object(instance)
    return value if is_protected_type(value) else field.value_to_string(instance)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def document_key(instance: Model) -> Any:
    """The instance's primary key as it is stored under ``"id"``."""
    return _json(_raw_value(instance, instance._meta.pk))


def serialize(instance: Model, flow: ModelFlow) -> dict[str, Any]:
    """The document mirrored for ``instance``: ``{"id": <pk>, <field>: <value>, ...}``."""
    document: dict[str, Any] = {"id": _raw_value(instance, instance._meta.pk)}
    for field in flow.fields:
        if field.many_to_many:
            related = getattr(instance, field.name).all()  # uses a prefetch when there is one
            document[field.name] = [_raw_value(item, item._meta.pk) for item in related]
        else:
            document[field.name] = _raw_value(instance, field)
    return _json(document)
