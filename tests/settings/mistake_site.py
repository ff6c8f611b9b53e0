"""A site with one ``memcached()`` entry written from environment variables, mistakes included.

``MISTAKE_SOURCE`` is the source URL, ``MISTAKE_ARGUMENTS`` a JSON object of keyword
arguments for ``memcached()`` (default ``{}``), and ``MISTAKE_APPS`` a comma-separated
``INSTALLED_APPS`` (default ``cache_settings``), so that tests try what a user writes.
``MISTAKE_ENTRY``, a JSON object, is an entry written by hand instead of ``memcached()``.
"""

from __future__ import annotations

import json
import os

import cache_settings

SECRET_KEY = "mistake-site-tests"
USE_TZ = True
INSTALLED_APPS = [app for app in os.environ.get("MISTAKE_APPS", "cache_settings").split(",") if app]
DATABASES: dict[str, dict[str, str]] = {}

CACHES = {
    "default": json.loads(os.environ["MISTAKE_ENTRY"])
    if "MISTAKE_ENTRY" in os.environ
    else cache_settings.memcached(
        os.environ["MISTAKE_SOURCE"], **json.loads(os.environ.get("MISTAKE_ARGUMENTS", "{}"))
    ),
}
