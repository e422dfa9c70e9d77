"""File descriptors: the limit raised at startup, the connection cap derived from it,
and running out of them reported without flooding the log.

The soft limit is often 1,024 while the hard limit is far higher; Go's runtime raises
the soft limit to the hard one at startup, and so does `serve`. An idle connection
holds one descriptor, a spliced upload in flight seven (socket, two dups, temp file,
its read-only twin, a pipe), so the default cap allows FDS_PER_CONNECTION per
connection after RESERVED_FDS for everything else (listening socket, storage lock,
GC and checkout walks, logs).

When accept() still fails for lack of descriptors or memory, asyncio reports it once
per pending connection, each with a traceback; `quiet_accept_errors` turns that into
one line per interval.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from asyncio import constants as asyncio_constants
from typing import Any

from .throttledlog import ThrottledLog

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FDS_PER_CONNECTION = 8
RESERVED_FDS = 64
MIN_CONNECTIONS = 8
MAX_AUTO_CONNECTIONS = 4096  # past this, memory rather than descriptors is the limit
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def fd_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None where there is none (Windows, unlimited)."""
    if resource is None:  # pragma: no cover
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit() -> int | None:
    """Raise the soft descriptor limit to the hard one (as Go does); the new soft limit."""
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. macOS caps it below an infinite hard
            log.info("could not raise the descriptor limit from %d to %s: %s", soft, hard, exc)
    return fd_limit()


def default_max_connections(limit: int | None) -> int:
    """The connection cap for a descriptor limit (see the module docstring)."""
    if limit is None:
        return MAX_AUTO_CONNECTIONS
    fit = (limit - RESERVED_FDS) // FDS_PER_CONNECTION
    return max(MIN_CONNECTIONS, min(MAX_AUTO_CONNECTIONS, fit))


ACCEPT_RETRY_DELAY = 0.05  # seconds before accepting again after running out


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, throttled: ThrottledLog) -> None:
    """Report accept() failing for lack of resources through `throttled`, without a
    traceback; everything else goes to the loop's handler as before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _EXHAUSTED:
            throttled.note(
                f"accept-{exc.errno}",
                f"cannot accept connections: {exc.strerror or exc} "
                "(new connections wait in the backlog until resources free up)",
            )
            return
        if _is_retry_after_close(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    # asyncio stops accepting for ACCEPT_RETRY_DELAY (1 s) after such a failure: a burst
    # of connections that briefly used up the descriptors then made the next legitimate
    # client wait a full second although the crowd was closed long before. Go retries
    # after 5 ms, doubling; a short fixed pause does the same job here (the module
    # constant is read at each failure; this process serves nothing else).
    asyncio_constants.ACCEPT_RETRY_DELAY = ACCEPT_RETRY_DELAY  # type: ignore[misc,assignment]


ACCEPT_BATCH = 100  # asyncio's default: accept() calls per wake-up of the listener


def listen_backlog() -> int:
    """The accept queue the kernel allows (as Go listens): a crowd of connections
    arriving at once must not overflow a short queue, where the kernel drops the next
    client's SYN and that client waits a full second to retry."""
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            return max(128, int(f.read().strip()))
    except (OSError, ValueError):
        return 1024


def deepen_accept_queue(fds: list[int], depth: int) -> None:
    """Give the listening sockets `fds` a kernel accept queue of `depth`.

    asyncio uses one number both for listen() and for how many accept() calls it makes
    per wake-up, and on every call that fails for lack of descriptors it schedules one
    more retry: with the kernel's depth (4,096) as that number, a server out of
    descriptors scheduled thousands of retries per wake-up, burned its CPU on them and
    logged tracebacks when they fired after shutdown. So asyncio gets ACCEPT_BATCH and
    the kernel queue is deepened here, through a duplicate of each descriptor (listen()
    on a listening socket only changes its queue)."""
    for fd in fds:
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.listen(depth)
        finally:
            dup.close()


def _is_retry_after_close(context: dict[str, Any]) -> bool:
    """Whether this is asyncio retrying accept() on a listening socket that is closed.

    After each accept() that fails for lack of resources, asyncio schedules another
    `_start_serving` of the socket, up to one per connection waiting in the backlog. If
    the server closes (shutdown) while such retries are pending, each of them fails on
    the closed socket (ValueError: invalid file descriptor -1) with a traceback, though
    nothing is left to serve. Read from asyncio's handle; anything else is reported.
    """
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    if getattr(callback, "__name__", "") != "_start_serving":
        return False
    args: tuple[Any, ...] = getattr(handle, "_args", None) or ()
    sock = args[1] if len(args) > 1 else None
    return (
        isinstance(context.get("exception"), ValueError | OSError)
        and isinstance(sock, socket.socket)
        and sock.fileno() == -1
    )
