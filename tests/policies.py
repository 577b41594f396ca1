"""A permission policy for the end-to-end tests (clients there are anonymous)."""


class TestPolicy:
    """Anyone may subscribe, except to database ``private``; anyone may push,
    except into database ``readonly``. Sync on purpose: sync policies run in a thread."""

    def can_subscribe(self, user, stream):
        return not stream.startswith("private.")

    def can_push(self, user, stream, op):
        return not stream.startswith("readonly.")
