"""Users and permissions: the test server has one user, ``admin``, who holds every
permission. ``grant`` answers as a real server with only that user does."""

from __future__ import annotations

from typing import Any

from .reql_errors import ReqlOpFailedError
from .reql_eval import Ctx, DbRef, Stream, T, as_str, handler, literal_type_error

ADMIN = "admin"


@handler(T.GRANT, 2, 3, optargs=())
def grant(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    user = as_str(args[-2])
    ctx.datum(args[-1])  # the permissions: a datum
    if len(args) == 3:
        target = args[0]
        if isinstance(target, DbRef):
            ctx.store.db_id(target.name)  # the database must exist
        elif not (isinstance(target, Stream) and target.kind == "TABLE"):
            raise literal_type_error(target, "TABLE")
    if user == ADMIN:
        raise ReqlOpFailedError(f"The permissions of the user `{ADMIN}` can't be modified.")
    raise ReqlOpFailedError(f"User `{user}` not found.")
