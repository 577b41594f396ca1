"""Django models in the flow (CHANGEFLOW_MODELS): saves and deletes sent as
pushes (in the Django processes), and ``changeflow sync`` copying model rows
into RethinkDB.
"""
