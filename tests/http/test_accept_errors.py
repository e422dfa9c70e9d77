"""`descriptors.quiet_accept_errors`: what asyncio reports about accept() failing.

The server-level behaviour (a descriptor limit hit for real) is in
`tests/reliability/test_reliability_hostile_clients.py`; these drive the handler with
asyncio's own retry, on a loop of their own, to pin the one case that depends on timing
there: retries still pending when the server closes its socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from manager_plugin.http.descriptors import quiet_accept_errors
from manager_plugin.http.throttledlog import ThrottledLog


def run_retry(sock: socket.socket, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Let asyncio run its accept() retry (`_start_serving`, as it schedules it after
    EMFILE) of `sock`; the lines of level ERROR or above that were logged."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop, ThrottledLog(logging.getLogger("test.overload")))
        loop.call_soon(loop._start_serving, asyncio.Protocol, sock, None, None, 100)  # type: ignore[attr-defined]
        await asyncio.sleep(0.05)
        if sock.fileno() != -1:
            loop._stop_serving(sock)  # type: ignore[attr-defined]

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_retry_pending_when_the_server_closed_its_socket_logs_nothing(caplog):
    sock = socket.socket()
    sock.close()  # shutdown came first: fileno() is -1 now
    assert run_retry(sock, caplog) == []


def test_other_callback_errors_still_reach_the_log(caplog):
    async def main() -> None:
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop, ThrottledLog(logging.getLogger("test.overload")))
        loop.call_soon(int, "not a number")
        await asyncio.sleep(0.05)

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Exception in callback" in errors[0].getMessage()


def test_a_retry_on_an_open_socket_serves_and_logs_nothing(caplog):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        assert run_retry(sock, caplog) == []
