"""Django models in the flow: ``post_save``/``post_delete`` become pushes to the worker.

``connect_models()`` (called from ``AppConfig.ready``) connects the signals of
every model in ``CHANGEFLOW_MODELS``; it runs again whenever that setting (or
``CHANGEFLOW_MODELS_DB``) changes, as under ``override_settings``.

A create or update is pushed as a ``replace`` of the whole document (it inserts
a missing one, a push sent twice does no harm, and a key gone from the model's
serialization, such as a field newly excluded, is gone from the mirror too:
a merge would keep it), a delete as a ``delete`` by key, each after the
transaction commits (``transaction.on_commit``): a rolled-back save pushes
nothing. The document is taken when the signal fires, so each push carries the
state of its own save. Sending never fails the save: see ``model_push``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

from ..conf import get_settings
from ..pushes import build_push
from .config import ModelFlow, load_flows
from .sender import retry_queue
from .serializer import document_key, serialize

logger = logging.getLogger(__name__)

_flows: dict[type[Model], ModelFlow] = {}
WATCHED_SETTINGS = ("CHANGEFLOW_MODELS", "CHANGEFLOW_MODELS_DB")


def registered_flows() -> dict[type[Model], ModelFlow]:
    """The models whose signals are connected now, with their configuration."""
    return dict(_flows)


def _push_after_commit(message: dict[str, Any], using: str) -> None:
    transaction.on_commit(lambda: retry_queue.submit(message), using=using, robust=True)


def _saved(sender: type[Model], instance: Model, created: bool, using: str, **kwargs: Any) -> None:
    flow = _flows.get(sender)
    if flow is None or ("c" if created else "u") not in flow.events:
        return
    try:
        message = build_push(flow.database, flow.table, serialize(instance, flow), op="replace")
    except Exception:  # the model's serialization is user code: logged, the save goes on
        logger.exception(
            "changeflow: could not serialise %s pk=%r; not pushed", flow.label, instance.pk
        )
        return
    _push_after_commit(message, using)


def _deleted(sender: type[Model], instance: Model, using: str, **kwargs: Any) -> None:
    flow = _flows.get(sender)
    if flow is None or "d" not in flow.events:
        return
    try:
        message = build_push(
            flow.database, flow.table, None, op="delete", key=document_key(instance)
        )
    except Exception:  # the model's key is user code: logged, the delete goes on
        logger.exception(
            "changeflow: could not push the delete of %s pk=%r", flow.label, instance.pk
        )
        return
    _push_after_commit(message, using)


def disconnect_models() -> None:
    """Disconnect every model connected by ``connect_models``."""
    for model in list(_flows):
        post_save.disconnect(
            _saved, sender=model, dispatch_uid=f"changeflow-save:{model._meta.label}"
        )
        post_delete.disconnect(
            _deleted, sender=model, dispatch_uid=f"changeflow-delete:{model._meta.label}"
        )
    _flows.clear()


def connect_models() -> None:
    """Connect the signals of every valid ``CHANGEFLOW_MODELS`` entry (replacing earlier ones).

    Invalid entries are skipped with a warning; ``manage.py check`` explains them.
    """
    disconnect_models()
    flows, errors = load_flows(get_settings())
    for error in errors:
        logger.warning("changeflow: %s (ignored; see manage.py check)", error)
    for flow in flows:
        model = flow.model
        _flows[model] = flow
        post_save.connect(
            _saved, sender=model, weak=False, dispatch_uid=f"changeflow-save:{model._meta.label}"
        )
        post_delete.connect(
            _deleted,
            sender=model,
            weak=False,
            dispatch_uid=f"changeflow-delete:{model._meta.label}",
        )
    setting_changed.connect(_setting_changed, dispatch_uid="changeflow-models-setting")


def _setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in WATCHED_SETTINGS:
        connect_models()
