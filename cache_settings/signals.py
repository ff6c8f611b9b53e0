"""Signals sent by the refreshing backends' watchers.

``nodes_changed`` is sent, from the watcher's thread, each time a source's node list
changes. Its sender is :class:`cache_settings.watch.Watcher`; the keyword arguments are
``source`` (redacted URL), ``nodes`` (the new sorted tuple of :class:`~cache_settings.Node`),
``added`` and ``removed`` (tuples of nodes), ``generation`` (the watcher's change counter)
and ``version`` (the source's config version or Consul index, or None)::

    from cache_settings.signals import nodes_changed

    @receiver(nodes_changed)
    def on_nodes_changed(sender, source, added, removed, **kwargs):
        ...
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["nodes_changed"]

nodes_changed = Signal()
