"""The Django app: add ``"cache_settings"`` to ``INSTALLED_APPS`` for checks and ``cache_nodes``."""

from __future__ import annotations

from django.apps import AppConfig


class CacheSettingsConfig(AppConfig):
    """Registers the system checks of :mod:`cache_settings.checks`."""

    name = "cache_settings"
    verbose_name = "Cache settings"

    def ready(self) -> None:
        """Import the checks, which registers them with Django's check framework."""
        from . import checks  # noqa: F401
