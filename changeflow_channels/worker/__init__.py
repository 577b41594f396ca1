"""What runs in the worker (``manage.py changeflow``): the changefeeds, the
delivery of changes to the channel layer and the hooks, the pushes written to
RethinkDB, and the leases shared between several workers.

``runner.py`` is the Channels worker; ``flow.py`` assembles the rest.
"""

from .runner import WorkerConfigError, create_worker

__all__ = ["WorkerConfigError", "create_worker"]
