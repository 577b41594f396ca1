"""What every write term shares: its options, its result and storing one change.

Results carry the six counters the real server always sends, plus
``generated_keys`` / ``first_error`` / ``changes`` only when they apply. An
error about one document (a bad primary key, a failing function, a write hook
refusing it) is counted there; the other documents are still written.
"""

from __future__ import annotations

from typing import Any

from .reql_datum import PTYPE, Bound, pretty, reql_eq, sort_key, truthy, type_name
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import as_str
from .reql_store import Table, TableLike

COUNTERS = ("deleted", "errors", "inserted", "replaced", "skipped", "unchanged")
# The optargs every write accepts; insert adds `conflict`, update/replace `non_atomic`.
WRITE_OPTARGS = ("durability", "return_vals", "return_changes", "ignore_write_hook")
MAX_PRIMARY_KEY_CHARS = 127
UNSTORABLE = "`r.minval` and `r.maxval` cannot be written to disk."
MAX_DISK_ARRAY = 100_000
TOO_LARGE = "Array too large for disk writes (limit 100,000 elements)."


class WriteResult:
    """Accumulates the counters, first error and changes of one write query."""

    def __init__(self, return_changes: bool | str, array_limit: int = 100_000) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.array_limit = array_limit  # `changes` beyond it are left out, with a warning
        self.truncated = False
        self.first_error: str | None = None
        self._early_error = False  # first_error is one found before any write
        self.generated: list[str] = []
        self.always = return_changes == "always"
        self.changes: list[dict] | None = [] if return_changes else None

    def error(self, message: str, old: Any = None, new: Any = None, early: bool = False) -> None:
        """Count an error about one document; ``early`` ones (a bad primary key)
        are found before the batch is written, so they come first in ``first_error``."""
        self.counts["errors"] += 1
        if self.first_error is None or (early and not self._early_error):
            self.first_error = message
            self._early_error = early
        if self.always and self.changes is not None:
            self._add({"error": message, "new_val": new, "old_val": old})

    def change(self, counter: str, old: Any, new: Any) -> None:
        self.counts[counter] += 1
        if self.changes is not None and (counter != "unchanged" or self.always):
            if counter != "skipped":
                self._add({"new_val": new, "old_val": old})

    def _add(self, change: dict) -> None:
        assert self.changes is not None
        if len(self.changes) >= self.array_limit:
            self.truncated = True
        else:
            self.changes.append(change)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        if self.changes is not None:
            out["changes"] = self.changes
        if self.first_error is not None:
            out["first_error"] = self.first_error
        if self.generated:
            out["generated_keys"] = self.generated
        if self.truncated:
            out["warnings"] = [f"Too many changes, array truncated to {self.array_limit}."]
        return dict(sorted(out.items()))


class WriteOptions:
    """The options every write checks, in the real server's order."""

    def __init__(self, opts: dict) -> None:
        if "return_vals" in opts:
            raise ReqlQueryLogicError(
                "Error: encountered obsolete optarg `return_vals`.  Use `return_changes` instead."
            )
        self.return_changes = return_changes_option(opts.get("return_changes", False))
        if "durability" in opts:
            durability_option(opts["durability"])
        self.ignore_hook = (
            truthy(opts["ignore_write_hook"]) if "ignore_write_hook" in opts else False
        )


def return_changes_option(value: Any) -> bool | str:
    if isinstance(value, str):
        if value != "always":
            raise ReqlQueryLogicError(
                f"Invalid return_changes value `{value}` "
                "(options are `true`, `false`, and `'always'`.)"
            )
        return value
    return truthy(value)  # optarg flags are truthy, as on the real server


def durability_option(value: Any) -> str:
    durability = as_str(value)
    if durability not in ("hard", "soft"):
        raise ReqlQueryLogicError(
            f'Durability option `{durability}` unrecognized (options are "hard" and "soft").'
        )
    return durability


def system_refusal(source: Any, deleting: bool = False) -> str | None:
    """The real server's error for each document written to a read-only system
    table (the write itself succeeds, counting one error per document)."""
    name = getattr(source, "name", None)
    if not getattr(source, "is_system", False) or name is None:
        return None
    if name == "jobs":
        if deleting:
            return "Interrupting a query through `rethinkdb.jobs` is not supported by the ReQL test server."
        return "The `rethinkdb.jobs` system table only allows deletions, not inserts or updates."
    if name == "logs":
        return "It's illegal to write to the `rethinkdb.logs` system table."
    if name in ("stats", "table_status", "server_status", "current_issues"):
        return f"It's illegal to write to the `rethinkdb.{name}` table."
    return None


def writable(source: TableLike) -> Table:
    if not isinstance(source, Table):
        raise ReqlOpFailedError(
            f"Writing to the system table `{source.qualified}` is not supported by the "
            "ReQL test server."
        )
    return source


def is_object(value: Any) -> bool:
    return isinstance(value, dict) and PTYPE not in value


def unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be written to disk: ``r.minval``/``r.maxval`` in it, or
    an array over the disk limit; None when it can."""
    if isinstance(value, Bound):
        return UNSTORABLE
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        if len(value) > MAX_DISK_ARRAY:
            return TOO_LARGE
        items = value
    else:
        return None
    for item in items:
        problem = unstorable(item)
        if problem is not None:
            return problem
    return None


def key_error(value: Any) -> str | None:
    """Why ``value`` cannot be a primary key, or None."""
    if value is None or (isinstance(value, dict) and PTYPE not in value):
        return (
            "Primary keys must be either a number, string, bool, pseudotype or array "
            f"(got type {type_name(value)}):\n{pretty(value)}"
        )
    if isinstance(value, list):
        found, bad = _bad_array_key(value)
        if found:
            return (
                "Array keys can only contain numbers, strings, bools,  pseudotypes, or arrays "
                f"(got {pretty(bad)} of type {type_name(bad)})."
            )
    null_byte = _null_byte_error(value)
    if null_byte is not None:
        return null_byte
    if isinstance(value, str) and len(value.encode("utf-8")) > MAX_PRIMARY_KEY_CHARS:
        return f"Primary key too long (max {MAX_PRIMARY_KEY_CHARS} characters): {pretty(value)}"
    return None


def _bad_array_key(value: list) -> tuple[bool, Any]:
    """(True, element) for the first element of an array key that is an object or
    null (nested arrays included), else (False, None)."""
    for item in value:
        if isinstance(item, list):
            found = _bad_array_key(item)
            if found[0]:
                return found
        elif item is None or (isinstance(item, dict) and PTYPE not in item):
            return True, item
    return False, None


def _quoted(byte: int) -> str:
    """One byte of a string as the real server quotes it in an error."""
    if byte in (34, 92):  # " and \
        return "\\" + chr(byte)
    return chr(byte) if 32 <= byte < 127 else f"\\x{byte:02x}"


def _null_byte_error(value: Any) -> str | None:
    """Strings in a primary key (arrays included) may not hold a NULL byte."""
    if isinstance(value, list):
        for item in value:
            found = _null_byte_error(item)
            if found is not None:
                return found
        return None
    if not isinstance(value, str) or "\x00" not in value:
        return None
    data = value.encode("utf-8")
    shown = "".join(_quoted(b) for b in data[:20])
    return (
        f'String "{shown}" (truncated) contains NULL byte at offset {data.index(0)} in index key.'
    )


def commit(table: Table, result: WriteResult, old: Any, new: Any, key: tuple) -> None:
    """Classify and store one replacement of ``old`` by ``new`` (either may be None)."""
    if old is None and new is None:
        result.change("skipped", None, None)
        return
    if new is not None:
        problem = unstorable(new)
        if problem is not None:
            result.error(problem, old, old)
            return
        if not is_object(new):
            result.error(
                f"Inserted value must be an OBJECT (got {type_name(new)}):\n{pretty(new)}", old, old
            )
            return
        pk = table.primary_key
        if pk not in new:
            result.error(f"Inserted object must have primary key `{pk}`:\n{pretty(new)}", old, old)
            return
        if sort_key(new[pk]) != key:
            before = "null" if old is None else pretty(old)
            result.error(
                f"Primary key `{pk}` cannot be changed (`{before}` -> `{pretty(new)}`).", old, old
            )
            return
    if old is None:
        result.change("inserted", None, new)
    elif new is None:
        result.change("deleted", old, None)
    elif reql_eq(old, new):
        result.change("unchanged", old, new)
        return
    else:
        result.change("replaced", old, new)
    table.apply(key, old, new)
