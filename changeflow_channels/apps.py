from django.apps import AppConfig


class ChangeflowChannelsConfig(AppConfig):
    name = "changeflow_channels"
    verbose_name = "Changeflow Channels"

    def ready(self) -> None:
        # Importing them registers the system checks.
        from . import checks, checks_models, checks_tables  # noqa: F401
        from .model_flow import connect_models

        connect_models()  # CHANGEFLOW_MODELS: model saves and deletes become pushes
