from tests.hooks.recorder import report, send_sync


def flow_handlers(database, table, change):
    send_sync(f"hooks.sync.{database}", report(database, table, change))
