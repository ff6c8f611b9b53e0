"""A site whose settings import writes what it sees of the process to ``OBSERVE_FILE``.

The JSON object holds ``CACHE_SETTINGS_OFFLINE`` as the environment has it, logging's
global ``disable`` level, and whether this thread and a new one resolve offline and only
record entries, so that tests see what importing the settings under the CLI changes.
``OBSERVE_SOURCE`` is the one entry's source URL.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import cache_settings
from cache_settings.entries import is_collecting
from cache_settings.resolve import is_offline

SECRET_KEY = "observing-site-tests"
USE_TZ = True
INSTALLED_APPS = ["cache_settings"]
DATABASES: dict[str, dict[str, str]] = {}


def _look() -> dict[str, bool]:
    return {"offline": is_offline(), "collecting": is_collecting()}


_elsewhere: dict[str, bool] = {}
_other = threading.Thread(target=lambda: _elsewhere.update(_look()))
_other.start()
_other.join()
with open(os.environ["OBSERVE_FILE"], "w", encoding="utf-8") as _file:
    json.dump(
        {
            "environ": os.environ.get("CACHE_SETTINGS_OFFLINE"),
            "logging_disable": logging.root.manager.disable,
            "this_thread": _look(),
            "other_thread": _elsewhere,
        },
        _file,
    )

CACHES = {"default": cache_settings.memcached(os.environ["OBSERVE_SOURCE"])}
