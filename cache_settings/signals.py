"""Signals sent by the refreshing backends' watchers.

``nodes_changed`` is sent, from the watcher's thread, each time a source's node list
changes. Its sender is :class:`cache_settings.watch.Watcher`; the keyword arguments are
``source`` (redacted URL), ``nodes`` (the new sorted tuple of :class:`~cache_settings.Node`),
``added`` and ``removed`` (tuples of nodes), ``generation`` (the watcher's change counter),
``version`` (the source's config version or Consul index, or None) and ``answered_by`` (the
redacted URL of the source whose answer is now in use: ``source`` itself, or the member of a
chain). A chain's watcher also sends it when it moves to another member, to a later one
while the first is down or back to an earlier one that answers again, even when the nodes
are the same: ``added`` and ``removed`` are then empty and ``generation`` does not move::

    from cache_settings.signals import nodes_changed

    @receiver(nodes_changed)
    def on_nodes_changed(sender, source, added, removed, answered_by, **kwargs):
        ...
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["nodes_changed"]

nodes_changed = Signal()
