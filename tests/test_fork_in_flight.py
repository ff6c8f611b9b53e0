"""A fork while a watcher's question is in flight: the child keeps none of its connections.

Run in a fresh interpreter (a forked pytest child would run the rest of the session).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

from tests.servers.consul import ConsulAgent

# The parent's watcher has a blocking query open on the agent when the process forks; the
# child counts its descriptors connected to the agent's port, then the parent does.
_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from cache_settings import parse_source
    from cache_settings.policy import Policy
    from cache_settings.watchers import get_watcher

    url, port = sys.argv[1], int(sys.argv[2])

    def to_agent():
        inodes = set()
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            for line in open(table).read().splitlines()[1:]:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                continue
            count += link[len("socket:["):-1] in inodes and link.startswith("socket:[")
        return count

    watcher = get_watcher(parse_source(url), Policy(refresh=30))
    watcher.start()
    deadline = time.monotonic() + 5
    while to_agent() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the blocking query is waiting on the agent
    pid = os.fork()
    if pid == 0:
        print(to_agent(), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
    print(to_agent(), flush=True)
    """
)


def test_fork__a_child_keeps_no_connection_of_a_question_in_flight(
    consul_agent: ConsulAgent,
) -> None:
    """The child held the parent's blocking-query connection open for its whole life: one
    descriptor per watcher per fork, and a connection the parent's close no longer ends."""
    service = f"mc-{uuid.uuid4().hex[:8]}"
    consul_agent.add(service, "10.0.0.1", 11211)
    port = consul_agent.address.rpartition(":")[2]
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _SCRIPT,
         f"consul://{consul_agent.address}/{service}", port],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    in_child, in_parent = (int(line) for line in done.stdout.split())

    assert in_parent == 1  # the question is still in flight there
    assert in_child == 0
