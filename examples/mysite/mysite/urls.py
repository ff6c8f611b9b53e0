"""One page: a hit counter kept in each cache alias."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, JsonResponse
from django.urls import path


def hits(request: HttpRequest) -> JsonResponse:
    """Count this request in every cache alias and show where each alias's nodes are."""
    report = {}
    for alias in settings.CACHES:
        cache = caches[alias]
        cache.add("hits", 0)
        report[alias] = {
            "location": settings.CACHES[alias].get("LOCATION"),
            "hits": cache.incr("hits"),
        }
    return JsonResponse(report)


urlpatterns = [path("", hits)]
