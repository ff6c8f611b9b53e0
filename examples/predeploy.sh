#!/bin/sh
# Pre-deploy recipe for examples/mysite (run from anywhere): resolve every cache alias live
# at build time, ship the snapshot with the release, and start processes from it.
#
#   MYSITE_CONSUL_URL='consul:///memcached?tag=prod' examples/predeploy.sh
set -eu
cd "$(dirname "$0")/mysite"
# The interpreter that has cache_settings: $PYTHON, else the activated virtualenv's, else
# this checkout's .venv (./run setup makes it), else python3.
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -x ../../.venv/bin/python ]; then
        PYTHON="$(cd ../../.venv/bin && pwd)/python"
    fi
fi
CACHE_SETTINGS="${CACHE_SETTINGS:-$PYTHON -m cache_settings}"   # or: cache-settings

# 1. Build time. Every memcached() entry of the settings is resolved live (a snapshot answer
#    does not count), checked against min_nodes and written to cache-nodes.json. Exit 1 when
#    a source failed: stop the release here rather than ship an old node list.
$CACHE_SETTINGS resolve --settings mysite.settings
$CACHE_SETTINGS show --settings mysite.settings

# 2. Later build steps that import the settings (collectstatic, check) contact no source.
CACHE_SETTINGS_OFFLINE=1 "$PYTHON" manage.py check

# 3. Run time: processes read the shipped snapshot and start even when the registry is down.
#    Drop CACHE_SETTINGS_OFFLINE to ask the sources at start-up and use the snapshot only
#    as a fallback. For example:
#      CACHE_SETTINGS_OFFLINE=1 gunicorn mysite.wsgi
CACHE_SETTINGS_OFFLINE=1 "$PYTHON" manage.py cache_nodes show

# 4. Monitoring (cron): exit 1 when the live node list no longer matches the release's.
#      cache-settings check --settings mysite.settings
