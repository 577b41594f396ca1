"""Models with the field types whose serialisation matters: decimal, datetime, UUID, foreign key."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Order(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField(default=timezone.now)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    secret = models.CharField(max_length=50, blank=True, default="")
    tags = models.ManyToManyField("Tag", blank=True)


class Tag(models.Model):
    code = models.CharField(max_length=20, primary_key=True)
