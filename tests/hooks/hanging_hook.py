import time


def flow_handlers(database, table, change):
    time.sleep(3600)  # far past CHANGEFLOW_HANDLER_TIMEOUT
