from django.urls import path

from changeflow_channels.metrics_http import metrics_view

urlpatterns: list = [path("metrics", metrics_view)]
