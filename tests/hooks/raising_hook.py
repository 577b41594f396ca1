def flow_handlers(database, table, change):
    raise RuntimeError("this hook always fails")
