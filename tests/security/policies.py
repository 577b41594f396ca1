"""The README's row-rule policy, as the security tests attack it."""

from typing import Any

from changeflow_channels.permissions import RulesPolicy


class OwnOrders(RulesPolicy):
    """``CHANGEFLOW_RULES`` decide per stream; each user sees only the documents
    whose ``owner`` is their username."""

    async def filter_change(self, user: Any, stream: str, change: dict[str, Any]) -> Any:
        def mine(doc: Any) -> Any:
            return doc if doc is not None and doc.get("owner") == user.username else None

        return {**change, "old_val": mine(change["old_val"]), "new_val": mine(change["new_val"])}
