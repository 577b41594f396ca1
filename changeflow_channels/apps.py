from django.apps import AppConfig


class ChangeflowChannelsConfig(AppConfig):
    name = "changeflow_channels"
    verbose_name = "Changeflow Channels"

    def ready(self) -> None:
        # Importing them registers the system checks.
        from . import checks  # noqa: F401
        from .mirror import checks as mirror_checks  # noqa: F401
        from .mirror.signals import connect_models
        from .tables import checks as tables_checks  # noqa: F401

        connect_models()  # CHANGEFLOW_MODELS: model saves and deletes become pushes
