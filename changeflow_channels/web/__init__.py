"""What runs in Daphne beside ``consumers.ChangeflowConsumer``: the browser
protocol's frames, subscription filters, per-connection rate limits and the
ordered delivery of changes to a websocket.

Nothing here imports the worker (``worker/``) or the RethinkDB driver.
"""
