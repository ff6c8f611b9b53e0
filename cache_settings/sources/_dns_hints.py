"""What to do about a DNS answer that lists no nodes: the hints of :mod:`.dns`'s messages.

The slips they name are those of people who move a Thanos, Mimir or Go client's address to
``settings.py``: Go's resolver tries the search domains of ``/etc/resolv.conf``, so
``memcached.cache`` or ``memcached.cache.svc`` work there; here names are fully qualified.
An SRV name starts with ``_SERVICE._PROTO.`` (RFC 2782); Kubernetes publishes
``_PORTNAME._tcp.SERVICE.NAMESPACE.svc.cluster.local`` for each named port of a Service
("DNS for Services and Pods", SRV records).
"""

from __future__ import annotations

__all__ = ["no_records", "nxdomain"]

_K8S_NAME = "SERVICE.NAMESPACE.svc.cluster.local"


def nxdomain(name: str, server: str, *, srv_of: str | None) -> str:
    """Return the message for NXDOMAIN of *name* from *server* (``IP:PORT``).

    *srv_of* is the SRV name whose record gave *name* as a target, or None.
    """
    message = f"NXDOMAIN: {name} does not exist (nameserver {server})"
    if srv_of is not None:
        return (
            f"{message}, yet the SRV records of {srv_of} name it as a target: every target "
            "needs an A or AAAA record; fix the records (or the Service that publishes them)"
        )
    labels = name.split(".")
    written = ""
    if len(labels) < 3 or labels[-1] == "svc":
        # A short name that a resolver with search domains would have completed.
        whole = {1: ".NAMESPACE.svc.cluster.local", 2: ".svc.cluster.local"}
        written = (
            " as written, without search domains (write the whole name, such as "
            f"{name}{whole.get(len(labels), '.cluster.local')} for a Kubernetes Service), and"
        )
    return (
        f"{message}; names are looked up{written} in DNS only, never in /etc/hosts (list "
        "local nodes with memcached://HOST:PORT)"
    )


def no_records(name: str, rdtype: str, *, only_dot: bool = False) -> str:
    """Return the message for *name* having no records of *rdtype* (``SRV``, ``A or AAAA``).

    *only_dot*: the name has SRV records, all with the target ``.`` (RFC 2782: the service
    is decidedly not available at this domain).
    """
    if only_dot:
        return f"only the target '.' (service not available) SRV records for {name}"
    message = f"no {rdtype} records for {name}"
    srv_name = name.startswith("_")
    if rdtype == "SRV" and not srv_name:
        return (
            f"{message}; SRV names start with _SERVICE._PROTO., such as "
            f"_memcache._tcp.{_K8S_NAME} for a Service port named memcache; for the A "
            f"records of {name}, write dns+{name}:PORT"
        )
    if rdtype != "SRV" and srv_name:
        return f"{message}; {name} looks like an SRV name: write dnssrv+{name}"
    return message
