"""Settings of the demo project: also the reference for wiring a real project.

The launcher (demo/run.py) sets CHANGEFLOW_RETHINKDB and, when a Redis is
used, REDIS_URL; without REDIS_URL the in-memory channel layer is used (worker
and Daphne then share one process).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "changeflow-demo-not-secret")
DEBUG = True
# Bound to loopback by the launcher; the demo lets anyone read and write any stream.
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "changeflow_channels",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "demo.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
ASGI_APPLICATION = "demo.asgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
STATIC_URL = "/static/"
USE_TZ = True
TIME_ZONE = "UTC"  # Django's default is America/Chicago: log times would look odd

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "changeflow_channels.redis_layer.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CHANGEFLOW_RETHINKDB = os.environ.get("CHANGEFLOW_RETHINKDB", "rethinkdb://admin@127.0.0.1:28015")
CHANGEFLOW_PERMISSIONS = "changeflow_channels.permissions.AllowAllPolicy"
# demo.changeflow (this project's hook module) is found without being listed here.

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"short": {"format": "%(asctime)s %(name)s %(levelname)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "short"}},
    "loggers": {
        "changeflow_channels": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "daphne": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
