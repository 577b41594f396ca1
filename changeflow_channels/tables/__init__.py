"""RethinkDB tables as configured by CHANGEFLOW_TABLES: the settings parsed,
creating databases, tables and indexes, the worker's start-up setup, and
retention (autoclean). Used by the worker and by ``changeflow clean``.
"""
