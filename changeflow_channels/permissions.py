"""Who may subscribe to and push into which stream.

``CHANGEFLOW_PERMISSIONS`` names a policy: a class (instantiated once per
connection, so it may cache), or an object, with ``can_subscribe(user,
stream)`` and ``can_push(user, stream, op)``, and optionally ``can_write(user,
stream, op, key, new, old)``, asked for every document a browser's push writes
(``web/push_guard.py``). Each may be sync or async; sync ones run in a thread,
so they may use the ORM.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Protocol, cast

from asgiref.sync import sync_to_async
from django.utils.module_loading import import_string

from .conf import get_settings
from .jsonsafe import json_safe
from .names import InvalidName, validate_name
from .pushes import OPS


class Policy(Protocol):
    def can_subscribe(self, user: Any, stream: str) -> Any: ...

    def can_push(self, user: Any, stream: str, op: str) -> Any: ...


class AuthenticatedReadPolicy:
    """The default: authenticated users may subscribe to any stream; no browser may push."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return bool(user is not None and user.is_authenticated)

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False


class AllowAllPolicy:
    """Anyone may subscribe and push anywhere. For demos on loopback only."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return True

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return True


class DenyAllPolicy:
    """Nobody may do anything from a websocket (server-side pushes still work)."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return False

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False


KEYWORDS = ("anyone", "authenticated", "staff", "superuser", "nobody")


def check_requirement(requirement: Any) -> None:
    """Raise ``ValueError`` unless ``requirement`` is a keyword, a permission name
    ("app.codename") or a list of those (any of them suffices)."""
    items = requirement if isinstance(requirement, list | tuple) else [requirement]
    for item in items:
        if not isinstance(item, str) or (item not in KEYWORDS and item.count(".") != 1):
            raise ValueError(
                f"{item!r} is neither one of {', '.join(KEYWORDS)} nor a permission name like 'shop.view_order'"
            )


# "push" stands for every op; an op named in a rule decides for that op.
ACTIONS = ("subscribe", "push", *OPS)
# What ``manage.py check`` suggests for a bad ``CHANGEFLOW_RULES`` (E033).
RULES_HINT = (
    'For example {"shop.orders": {"subscribe": "authenticated", "push": "staff", '
    '"update": "authenticated"}, "*": {"subscribe": ["staff", "shop.view_order"]}}. '
    f"Actions: {', '.join(ACTIONS)} (push: every op)."
)


def rules_problems(rules: Any) -> Iterator[str]:
    """Every problem of ``CHANGEFLOW_RULES``, each a sentence (for ``manage.py check``)."""
    if not isinstance(rules, dict):
        yield f"CHANGEFLOW_RULES must be a dict of pattern: rule, not {rules!r}."
        return
    for pattern, rule in rules.items():
        problem = _pattern_problem(pattern)
        if problem:
            yield f"CHANGEFLOW_RULES: {problem}."
            continue
        if not isinstance(rule, dict):
            yield f"CHANGEFLOW_RULES[{pattern!r}] must be a dict of action: requirement, not {rule!r}."
            continue
        unknown = [action for action in rule if action not in ACTIONS]
        if unknown:
            yield (
                f"CHANGEFLOW_RULES[{pattern!r}] has unknown action(s) "
                f"{', '.join(map(repr, unknown))} (allowed: {', '.join(ACTIONS)})."
            )
        for action in ACTIONS:
            if action not in rule:
                continue
            try:
                check_requirement(rule[action])
            except ValueError as error:
                yield f"CHANGEFLOW_RULES[{pattern!r}][{action!r}]: {error}."


def _pattern_problem(pattern: Any) -> str | None:
    """What is wrong with a key of ``CHANGEFLOW_RULES`` (``RulesPolicy`` looks up exactly
    ``"db.table"``, ``"db.*"`` and ``"*"``), or None."""
    if pattern == "*":
        return None
    if not isinstance(pattern, str) or "." not in pattern:
        return f'pattern {pattern!r} must be "*", "db.*" or "db.table"'
    database, _, table = pattern.partition(".")
    try:
        validate_name(database, "database")
        if table != "*":
            validate_name(table, "table")
    except InvalidName as error:
        return f'pattern {pattern!r} must be "*", "db.*" or "db.table": {error}'
    return None


class RulesPolicy:
    """Deny by default; ``CHANGEFLOW_RULES`` says who may do what, per stream pattern::

        CHANGEFLOW_RULES = {
            "shop.orders": {"subscribe": "authenticated", "push": "staff"},
            "shop.*": {"subscribe": ["staff", "shop.view_order"]},
            "*": {"subscribe": "superuser"},
        }

    The most specific pattern that names the action decides ("db.table", then
    "db.*", then "*"). A push's action is its op (``insert``, ``upsert``,
    ``update``, ``replace``, ``delete``) or ``push``, which stands for all of
    them; within one pattern the op wins. Requirements: ``anyone``,
    ``authenticated``, ``staff``, ``superuser``, ``nobody``, a Django permission
    name, or a list of those (any one suffices). Permission answers are cached
    per connection until ``refresh()`` (called before each revocation check).

    With a row rule (``filter_change``), a write is allowed only when every
    document it touches is visible to the user, before and after (``can_write``).
    """

    def __init__(self, rules: dict[str, Any] | None = None) -> None:
        if rules is None:
            rules = get_settings().rules
        self.rules = rules
        self._cache: dict[tuple[Any, str], bool] = {}

    def refresh(self) -> None:
        self._cache.clear()

    def requirement(self, stream: str, action: str) -> Any:
        """The requirement of ``action`` on ``stream``: an op is decided by the most
        specific pattern naming it or ``push`` (the op first)."""
        database = stream.split(".", 1)[0]
        names = (action, "push") if action in OPS else (action,)
        for pattern in (stream, f"{database}.*", "*"):
            rule = self.rules.get(pattern)
            if not isinstance(rule, dict):
                continue
            for name in names:
                if name in rule:
                    return rule[name]
        return "nobody"

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return await self._allows(user, self.requirement(stream, "subscribe"))

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return await self._allows(user, self.requirement(stream, op if op in OPS else "push"))

    def writes_guarded(self) -> bool:
        """Whether ``can_write`` has anything to say: only under a row rule."""
        return has_row_rule(self)

    async def can_write(
        self, user: Any, stream: str, op: str, key: Any, new: Any, old: Any
    ) -> bool:
        """Under a row rule: the document written over (``old``) and the one written
        (``new``) must both be visible to ``user``. An op that writes over a document
        (all but ``insert``) finding none is refused as if it were hidden: a missing
        document and a hidden one get the same answer."""
        if not has_row_rule(self):
            return True
        if op != "insert" and old is None:
            return False
        for document in (old, new):
            if document is not None and not await self.sees(user, stream, document):
                return False
        return True

    async def sees(self, user: Any, stream: str, document: dict[str, Any]) -> bool:
        """Whether the row rule shows ``document`` to ``user`` (as in a snapshot)."""
        change = {"type": "initial", "old_val": None, "new_val": document}
        shown = await apply_row_rule(self, user, stream, change)
        return shown is not None and shown.get("new_val") is not None

    async def _allows(self, user: Any, requirement: Any) -> bool:
        items = requirement if isinstance(requirement, list | tuple) else [requirement]
        for item in items:
            if await self._meets(user, item):
                return True
        return False

    async def _meets(self, user: Any, item: str) -> bool:
        if item == "anyone":
            return True
        if user is None or not getattr(user, "is_authenticated", False) or item == "nobody":
            return False
        if item == "authenticated":
            return True
        if item in ("staff", "superuser"):
            return bool(getattr(user, f"is_{item}", False))
        key = (getattr(user, "pk", None), item)
        if key not in self._cache:
            self._cache[key] = await sync_to_async(user.has_perm)(item)
        return self._cache[key]


def load_policy(setting: Any) -> Policy:
    """The policy named by ``CHANGEFLOW_PERMISSIONS`` (a dotted path, class or object)."""
    policy = import_string(setting) if isinstance(setting, str) else setting
    if inspect.isclass(policy):
        policy = policy()
    for method in ("can_subscribe", "can_push"):
        if not callable(getattr(policy, method, None)):
            raise TypeError(f"permission policy {setting!r} has no {method}() method")
    return cast(Policy, policy)


async def ask(method: Any, *args: Any) -> bool:
    """Call a policy method, sync or async, and return its answer as a bool."""
    if inspect.iscoroutinefunction(method):
        return bool(await method(*args))
    result = await sync_to_async(method, thread_sensitive=True)(*args)
    if inspect.isawaitable(result):
        result = await result
    return bool(result)


def has_row_rule(policy: Any) -> bool:
    return callable(getattr(policy, "filter_change", None))


def guards_writes(policy: Any) -> bool:
    """Whether a browser's pushes are checked document by document: the policy has
    ``can_write`` (and, if it has ``writes_guarded()``, that says so)."""
    if not callable(getattr(policy, "can_write", None)):
        return False
    guarded = getattr(policy, "writes_guarded", None)
    return bool(guarded()) if callable(guarded) else True


async def may_write(
    policy: Any, user: Any, stream: str, op: str, key: Any, new: Any, old: Any
) -> bool:
    """The policy's ``can_write`` for one document; ``new`` and ``old`` as browsers
    see documents (times and binary as text)."""
    return await ask(
        policy.can_write, user, stream, op, key, json_safe(_copy(new)), json_safe(_copy(old))
    )


def _copy(document: Any) -> Any:
    # json_safe changes containers in place: the raw documents are written afterwards.
    if isinstance(document, dict):
        return {name: _copy(value) for name, value in document.items()}
    if isinstance(document, list):
        return [_copy(value) for value in document]
    return document


async def apply_row_rule(policy: Any, user: Any, stream: str, change: dict[str, Any]) -> Any:
    """The policy's ``filter_change(user, stream, change)``, if it has one: the change,
    a redacted copy (a side set to None is hidden), or None to hide it all.

    Called once per change and subscriber: keep it cheap. An async rule runs on
    the event loop; a sync one costs a thread hop per call.
    """
    rule = getattr(policy, "filter_change", None)
    if rule is None:
        return change
    try:
        if inspect.iscoroutinefunction(rule):
            return await rule(user, stream, change)
        return await sync_to_async(rule, thread_sensitive=True)(user, stream, change)
    except Exception as error:
        # The class only: the error's text may quote the document (it is logged).
        detail = f"{type(policy).__name__}.filter_change raised {type(error).__name__}"
        raise RowRuleError(stream, detail) from error


class RowRuleError(Exception):
    """The policy's row rule raised: what this user may see of ``stream`` is unknown."""

    def __init__(self, stream: str, detail: str) -> None:
        super().__init__(detail)
        self.stream = stream
