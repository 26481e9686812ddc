"""Who holds a claim, and whether that process is gone.

A claim (a run being worked on, see :meth:`ApprovalStore.claim`) records its owner as
``host|pid|start``: ``host`` is the hostname and the pid namespace (two containers sharing a hostname
differ), ``start`` the process start time in clock ticks from ``/proc/<pid>/stat`` (a reused pid is not
mistaken for the holder). A claim whose owner ran on *this* host and is no longer alive is free at once:
a worker killed with ``kill -9`` and restarted does not leave its runs waiting for the claim's time
bound. An owner on another host (or a restarted container: a new pid namespace) can't be checked from
here; its claim stays until it goes stale by time, as before.
"""

from __future__ import annotations

import os
import socket
from functools import cache


def _stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` after "pid (comm) ": [state, ppid, ...] (field 3 onwards); [] when unreadable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""  # starttime, field 22


@cache
def _host() -> str:
    """This host, and this pid namespace: two containers with one hostname still see different pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}{namespace}"


def process_owner() -> str:
    """This process, as a claim's owner (computed each time: a forked child is another owner)."""
    return owner_of(os.getpid())


def owner_of(pid: int) -> str:
    """Process ``pid`` of this host (and pid namespace), as a claim's owner."""
    return f"{_host()}|{pid}|{_start_ticks(pid)}"


def owner_gone(owner: str | None) -> bool:
    """True when ``owner`` is a process of this host that no longer runs (or whose pid now runs another)."""
    if not owner:
        return False
    host, _, rest = owner.partition("|")
    pid_text, _, start = rest.partition("|")
    if host != _host() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    fields = _stat(pid)
    if start and len(fields) > 19 and fields[19] != start:
        return True  # the pid was reused by a newer process
    return bool(fields) and fields[0] == "Z"  # a killed child its parent has not reaped yet holds nothing
