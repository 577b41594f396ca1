from django.apps import AppConfig


class ChangeflowChannelsConfig(AppConfig):
    name = "changeflow_channels"
    verbose_name = "Changeflow Channels"

    def ready(self) -> None:
        from django.core.checks import Tags, register

        from .checks import check_settings
        from .mirror.signals import connect_models

        register(check_settings, Tags.compatibility)  # every CHANGEFLOW_* setting
        connect_models()  # CHANGEFLOW_MODELS: model saves and deletes become pushes
