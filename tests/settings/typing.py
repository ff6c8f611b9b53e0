"""Minimal settings for mypy's django-stubs plugin."""

SECRET_KEY = "typing-only"
INSTALLED_APPS: list[str] = []
