"""System checks (``manage.py check``) for every ``CHANGEFLOW_*`` setting.

One check, ``check_settings`` (registered by ``AppConfig.ready()``), reads the settings once
(``conf.get_settings()``) and runs one function per setting (a few look at two
settings together; the single values share one, from the table of what each must be
in ``setting_kinds``). Each finding is an ``Error`` or a ``Warning`` whose message
names the setting and its value and whose hint says what would do; the problems of
``CHANGEFLOW_TABLES``, ``CHANGEFLOW_MODELS`` and ``CHANGEFLOW_RULES`` are found beside
the code that reads them (``tables.config``, ``mirror.config``, ``permissions``), and
those of what surrounds the settings (``CHANNEL_LAYERS``, Daphne's frame limits, the ASGI
wiring) in ``deployment_checks``. The checks are fast and do no I/O beyond importing the
modules the settings name (and ``ASGI_APPLICATION``).

Ids (silence one with ``SILENCED_SYSTEM_CHECKS = ["changeflow_channels.W002"]``);
they keep their meaning from release to release, new ones continue the numbering:

====  ===============================================================
E001  CHANGEFLOW_RETHINKDB is not a server URL
E002  CHANGEFLOW_WATCH is not a list of patterns, or has a bad pattern
E003  CHANGEFLOW_HANDLERS is not a list of modules, or one cannot be used
E004  no channel layer (CHANNEL_LAYERS)
E005  CHANGEFLOW_PERMISSIONS cannot be loaded, or is not a policy
E006  CHANGEFLOW_LEASE_TIME is not a positive number of seconds
E007  CHANGEFLOW_REDIS is neither a Redis URL, a Sentinel host nor None
E008  CHANGEFLOW_METRICS_PORT is neither a TCP port nor None
E010  CHANGEFLOW_TABLES: not a dict, or a bad stream name
E011  CHANGEFLOW_TABLES: an entry that is not a dict, or unknown keys
E012  CHANGEFLOW_TABLES: a bad primary key
E013  CHANGEFLOW_TABLES: a malformed index
E014  CHANGEFLOW_TABLES: a malformed retention
E015  CHANGEFLOW_TABLES: a retention field that cannot be used
E016  CHANGEFLOW_CLEAN_EVERY is not a positive number of seconds
E017  CHANGEFLOW_TABLES: replicas or shards not a positive integer (or over 64 shards)
E020  CHANGEFLOW_MODELS (or one of its entries) is not a dict
E021  CHANGEFLOW_MODELS: not an installed model
E022  CHANGEFLOW_MODELS: an unknown field, or the primary key excluded
E023  CHANGEFLOW_MODELS: bad ``events`` letters
E024  CHANGEFLOW_MODELS: both ``fields`` and ``exclude``
E025  CHANGEFLOW_MODELS: an unknown option
E026  CHANGEFLOW_MODELS_DB is not a database name (or makes a stream name too long)
E027  CHANGEFLOW_CHANNEL is not a channel name
E028  CHANGEFLOW_VERBOSE is not True or False
E029  CHANGEFLOW_HANDLER_TIMEOUT is not a positive number of seconds
E030  CHANGEFLOW_PUSH_TIMEOUT is not a positive number of seconds
E031  CHANGEFLOW_HISTORY is not an integer >= 0
E032  CHANGEFLOW_SNAPSHOT_LIMIT is not a positive integer
E033  CHANGEFLOW_RULES is not a dict of pattern: {action: requirement}
E034  CHANGEFLOW_RECHECK_EVERY is not a positive number of seconds
E035  CHANGEFLOW_TOKEN_MAX_AGE is not a positive number of seconds
E036  CHANGEFLOW_MAX_FRAME_BYTES is not a positive integer
E037  CHANGEFLOW_MAX_SUBSCRIPTIONS is not a positive integer
E038  CHANGEFLOW_PUSH_RATE is not a positive number
E039  CHANGEFLOW_MAX_DOCUMENT_BYTES is not a positive integer
E040  CHANGEFLOW_SEND_QUEUE is not a positive integer
E041  CHANGEFLOW_SEND_QUEUE_BYTES is not a positive integer
E042  CHANGEFLOW_BATCH_SIZE is not a positive integer
E043  CHANGEFLOW_BATCH_BYTES is not a positive integer
E044  CHANGEFLOW_SYNC_TIMEOUT is not a positive number of seconds
E045  CHANGEFLOW_METRICS_PER_TABLE is not True or False
E046  CHANGEFLOW_IDEMPOTENCY_WINDOW is not a positive number of seconds
E050  CHANGEFLOW_MAX_SENT_FRAME_BYTES is not a positive integer
E051  CHANGEFLOW_SEND_WINDOW is not a positive integer
E052  CHANGEFLOW_SEND_WINDOW_BYTES is not a positive integer
E053  CHANGEFLOW_FEED_QUEUE_SIZE is not a positive integer
E054  CHANGEFLOW_ALLOWED_ORIGINS is neither None nor a list of origins (identity, issue 15)
E055  CHANGEFLOW_TOKEN_CONNECTIONS is not a positive integer (identity, issue 15)
E056  CHANGEFLOW_RECHECK_GRACE is not a positive number of seconds (identity, issue 15)
E057  CHANGEFLOW_SUBSCRIBE_RATE is not a positive number (amplification, issue 15)
E058  CHANGEFLOW_SYNC_RATE is not a positive number (amplification, issue 15)
E059  CHANGEFLOW_SYNC_BURST is not a positive integer (amplification, issue 15)
E060  CHANGEFLOW_FEED_CONNECTIONS is not a positive integer (many tables, issue 17)
E061  CHANGEFLOW_MEMORY_BUDGET is neither None nor a positive integer (many tables, issue 17)
E062  CHANGEFLOW_LEASE_REPLICAS is not an integer >= 0 (Redis Sentinel, issue 18)
W001  a Redis channel layer without ``socket_timeout``
W002  CHANGEFLOW_PERMISSIONS allows everything while DEBUG is off
W003  channels_redis's pub/sub layer (one worker only)
W004  CHANGEFLOW_LEASE_TIME below 3 s
W005  CHANGEFLOW_RULES is set, but CHANGEFLOW_PERMISSIONS is not a RulesPolicy
W006  CHANGEFLOW_BATCH_BYTES is not below CHANGEFLOW_SEND_QUEUE_BYTES
W007  channels_redis's own RedisChannelLayer (bursts of clients, Redis restarts)
W008  ASGI_APPLICATION checks origins with channels' validators (host names only)
W009  CHANGEFLOW_MAX_FRAME_BYTES or _MAX_SENT_FRAME_BYTES passes Daphne's default limit (inbound, issue 15)
W010  the leases' Redis is a Sentinel master and CHANGEFLOW_LEASE_REPLICAS is 0
====  ===============================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import Error

from .check_messages import Messages, check_error, check_warning
from .conf import ChangeflowSettings, defaults, get_settings, setting_name
from .deployment_checks import (
    check_channel_layers,
    check_frame_limits,
    check_lease_replicas,
    check_wiring,
)
from .mirror import config as models_config
from .mirror.config import ModelConfigError
from .names import InvalidName
from .permissions import RULES_HINT, AllowAllPolicy, RulesPolicy, load_policy, rules_problems
from .rethinkdb_url import parse_rethinkdb_url
from .setting_kinds import HINTED, KINDS, PLAIN, is_valid
from .tables import config as tables_config
from .tables.config import TableConfigError

# Below this, a busy machine makes workers give up tables they still hold.
SHORT_LEASE_TIME = 3.0


def check_settings(app_configs: Any = None, **kwargs: Any) -> Messages:
    """Every problem of every ``CHANGEFLOW_*`` setting (and of ``CHANNEL_LAYERS``)."""
    conf = get_settings()
    messages: Messages = []
    for check in CHECKS:
        messages.extend(check(conf))
    return messages


def _reported(problem: TableConfigError | ModelConfigError, message: str) -> Error:
    """A problem that carries its own id and hint (``CHANGEFLOW_TABLES``, ``CHANGEFLOW_MODELS``)."""
    return Error(message, hint=problem.hint, id=problem.check_id)


# Single values: what each must be (``setting_kinds``), checked the same way. -------------


def _check_plain(conf: ChangeflowSettings) -> Messages:
    all_defaults = defaults()
    messages: Messages = []
    for attribute, (code, kind, meaning) in PLAIN.items():
        name = setting_name(attribute)
        hint = f"{name} is {meaning}; the default is {all_defaults[name]!r}."
        messages.extend(_check_value(conf, attribute, code, kind, hint))
    for attribute, (code, kind, hint) in HINTED.items():
        messages.extend(_check_value(conf, attribute, code, kind, hint))
    return messages


def _check_value(
    conf: ChangeflowSettings, attribute: str, code: str, kind: str, hint: str
) -> Messages:
    value = getattr(conf, attribute)
    if KINDS[kind][0](value):
        return []
    return [
        check_error(
            code, f"{setting_name(attribute)} must be {KINDS[kind][1]}, not {value!r}.", hint
        )
    ]


# Settings with a shape of their own. ----------------------------------------------------


def _check_rethinkdb(conf: ChangeflowSettings) -> Messages:
    try:
        parse_rethinkdb_url(conf.rethinkdb)
    except ValueError as error:
        return [
            check_error(
                "E001",
                f"CHANGEFLOW_RETHINKDB is not a valid server URL: {error}.",
                'Use "rethinkdb://[user[:password]@]host[:port]" (rethinkdbs:// for TLS), '
                'or the servers of a cluster: "rethinkdb://user@db1:28015,db2,db3".',
            )
        ]
    return []


def _not_a_list(name: str, value: Any, code: str, of: str, example: str) -> Messages:
    """One error for a setting that must be a list (a string is not one: no error per character)."""
    if isinstance(value, list | tuple):
        return []
    hint = (
        f"Put it in a list: [{value!r}]." if isinstance(value, str) else f"For example {example}."
    )
    return [check_error(code, f"{name} must be a list of {of}, not {value!r}.", hint)]


def _check_watch(conf: ChangeflowSettings) -> Messages:
    # Imported here: loading the app (Daphne too) imports this module, and must not load the worker.
    from .worker.watch import check_pattern

    example = '["*"], ["shop.*"] or ["shop.orders"]'
    messages = _not_a_list("CHANGEFLOW_WATCH", conf.watch, "E002", "patterns", example)
    if messages:
        return messages
    for pattern in conf.watch:
        try:
            check_pattern(pattern)
        except InvalidName as error:
            messages.append(
                check_error(
                    "E002",
                    f"CHANGEFLOW_WATCH: {error}.",
                    'Patterns are "*", "db.*" or "db.table", with names of A-Z, a-z, 0-9, _ and -.',
                )
            )
    return messages


def _check_handlers(conf: ChangeflowSettings) -> Messages:
    from .worker.hooks import HandlerError, handler_modules, load_handler

    hint = "Each module must import cleanly and define flow_handlers(database, table, change)."
    messages = _not_a_list(
        "CHANGEFLOW_HANDLERS", conf.handlers, "E003", "module paths", '["shop.changeflow"]'
    )
    if messages:
        return messages
    modules = []
    for module in conf.handlers:
        if isinstance(module, str) and module:
            modules.append(module)
        else:
            message = f"CHANGEFLOW_HANDLERS: {module!r} is not a module path."
            messages.append(check_error("E003", message, hint))
    for module in handler_modules(modules, os.environ.get("DJANGO_SETTINGS_MODULE")):
        try:
            load_handler(module)
        except HandlerError as error:
            messages.append(check_error("E003", f"CHANGEFLOW_HANDLERS: {error}.", hint))
    return messages


def _check_permissions(conf: ChangeflowSettings) -> Messages:
    try:
        policy = load_policy(conf.permissions)
    except Exception as error:
        return [
            check_error(
                "E005",
                f"CHANGEFLOW_PERMISSIONS cannot be used: {error}.",
                "Name a class or object with can_subscribe(user, stream) and can_push(user, stream, op).",
            )
        ]
    messages: Messages = []
    if isinstance(policy, AllowAllPolicy) and not settings.DEBUG:
        messages.append(
            check_warning(
                "W002",
                "CHANGEFLOW_PERMISSIONS allows anyone to read and write every stream.",
                "AllowAllPolicy is for demos on loopback; use a real policy in production.",
            )
        )
    if isinstance(conf.rules, dict) and conf.rules and not isinstance(policy, RulesPolicy):
        messages.append(
            check_warning(
                "W005",
                "CHANGEFLOW_RULES is set, but CHANGEFLOW_PERMISSIONS is "
                f"{type(policy).__name__}, which does not read it: the rules are not applied.",
                'Set CHANGEFLOW_PERMISSIONS = "changeflow_channels.permissions.RulesPolicy", '
                "or remove CHANGEFLOW_RULES.",
            )
        )
    return messages


def _check_rules(conf: ChangeflowSettings) -> Messages:
    return [check_error("E033", problem, RULES_HINT) for problem in rules_problems(conf.rules)]


def _check_lease_time(conf: ChangeflowSettings) -> Messages:
    """A short lease (its type is among the plain settings)."""
    lease_time = conf.lease_time
    if is_valid("lease_time", lease_time) and lease_time < SHORT_LEASE_TIME:
        return [
            check_warning(
                "W004",
                f"CHANGEFLOW_LEASE_TIME = {lease_time:g} s: a worker whose event loop or Redis "
                "stalls for two thirds of it gives up its tables (a new epoch, a resync).",
                f"Use at least {SHORT_LEASE_TIME:g} s outside tests.",
            )
        ]
    return []


def _check_batch_bytes(conf: ChangeflowSettings) -> Messages:
    """A batch must fit in a connection's send queue (each type is among the plain settings)."""
    batch, queue = conf.batch_bytes, conf.send_queue_bytes
    if is_valid("batch_bytes", batch) and is_valid("send_queue_bytes", queue) and batch >= queue:
        return [
            check_warning(
                "W006",
                f"CHANGEFLOW_BATCH_BYTES ({batch}) is not below CHANGEFLOW_SEND_QUEUE_BYTES "
                f"({queue}): one batch of changes can fill a connection's send queue, which "
                "then closes the connection (4009) however fast its client reads.",
                "Keep CHANGEFLOW_BATCH_BYTES well below CHANGEFLOW_SEND_QUEUE_BYTES "
                "(the defaults: 262144 and 16777216).",
            )
        ]
    return []


def _check_tables(conf: ChangeflowSettings) -> Messages:
    problems = tables_config.all_problems(conf.tables)
    return [_reported(problem, f"CHANGEFLOW_TABLES: {problem}.") for problem in problems]


def _check_models_db(conf: ChangeflowSettings) -> Messages:
    problem = models_config.models_db_problem(conf.models_db)
    return [_reported(problem, str(problem))] if problem else []


def _check_models(conf: ChangeflowSettings) -> Messages:
    """Every ``CHANGEFLOW_MODELS`` entry that cannot be used, with why (with a valid
    ``CHANGEFLOW_MODELS_DB``: ``_check_models_db`` reports a bad one)."""
    if isinstance(conf.models, dict) and _check_models_db(conf):
        return []
    _, errors = models_config.load_flows(conf)
    return [_reported(error, str(error)) for error in errors]


def _check_allowed_origins(conf: ChangeflowSettings) -> Messages:
    from .web.origins import OriginError, configured_origins

    try:
        configured_origins(conf.allowed_origins)
    except OriginError as error:
        return [
            check_error(
                "E054",
                f"CHANGEFLOW_ALLOWED_ORIGINS must be None or a list of origins: {error}.",
                'For example ["https://example.com", "http://127.0.0.1:8000"]; None allows '
                "the site's own origin (its Host, if in ALLOWED_HOSTS, with ws -> http, wss -> https).",
            )
        ]
    return []


# In the order of the README's table of settings.
CHECKS: list[Callable[[ChangeflowSettings], Messages]] = [
    _check_plain,
    _check_rethinkdb,
    _check_watch,
    _check_handlers,
    _check_permissions,
    _check_rules,
    _check_batch_bytes,
    check_frame_limits,
    _check_tables,
    _check_models_db,
    _check_models,
    _check_lease_time,
    check_lease_replicas,
    check_channel_layers,
    _check_allowed_origins,
    check_wiring,
]
