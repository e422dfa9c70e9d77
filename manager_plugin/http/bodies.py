"""Reading request bodies: bounded in size and pace, parsed into core types with
field-naming errors; upload bodies handed to the store as they arrive."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from aiohttp import StreamReader, web

from ..bodypace import BodyPace
from ..config import Config
from ..errors import BodyTimeout, ClientDisconnected, InvalidRequest, UnsupportedEncoding
from ..models import FileSpec
from ..paths import validate_checksum, validate_size
from ..store import Reader
from ..store.splice import drain, start_thread
from ..store.system import SPLICE_AVAILABLE
from .accesslog import BODY_BYTES
from .logtext import loggable

# Bodies at least this big are spliced from the socket (manager_plugin.store.splice). Such a
# request's connection is closed after the answer (aiohttp's parser still expects the
# body), which costs a reconnect: negligible next to moving this many bytes.
SPLICE_MIN_SIZE = 16 * 1024 * 1024

TRUE_VALUES = frozenset({"true", "True", "TRUE", "1"})


def refuse_encoded_body(request: web.Request) -> None:
    """Raise UnsupportedEncoding (415) unless the body is sent as is. The server never
    decompresses (the runner is made with auto_decompress=False): an upload is stored as
    the bytes sent, and inflating would let a small request become a huge blob or body."""
    for value in request.headers.getall("Content-Encoding", ()):
        for coding in value.split(","):
            if coding.strip().lower() not in ("", "identity"):
                raise UnsupportedEncoding(
                    f"Content-Encoding {loggable(coding.strip(), 40)!r} is not accepted: "
                    "request bodies are taken as sent; send them uncompressed"
                )


def body_pace(config: Config) -> BodyPace:
    """The rate floor of one request body, starting now."""
    return BodyPace(config.body_min_rate, config.body_read_timeout)


async def read_body(
    request: web.Request, timeout: float | None = None, pace: BodyPace | None = None
) -> bytes:
    """The whole (small) body: at most client_max_size bytes (413), no read may
    wait longer than `timeout` seconds and the body may not arrive slower than `pace`
    allows (408), so a stalled or trickling client cannot hold a connection forever."""
    refuse_encoded_body(request)
    limit = request.client_max_size
    declared = request.content_length
    if declared is not None and declared > limit:
        # Refuse before reading: otherwise a client declaring 50 GB and sending
        # slowly would hold the connection until the body limit is reached.
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared)
    body = bytearray()
    while True:
        wait = timeout if pace is None else pace.wait_limit(len(body), timeout)
        try:
            chunk = await asyncio.wait_for(request.content.readany(), wait)
        except TimeoutError:
            if pace is not None and pace.missed(len(body)):
                raise pace.too_slow(len(body)) from None
            raise BodyTimeout(f"body: no data for {timeout:g} s; request aborted") from None
        except ConnectionError:
            # The client is gone; this answer is never read, but it is not a server error.
            raise ClientDisconnected(len(body), declared) from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object; InvalidRequest (400) for anything else.

    Objects that are valid files ({"sha", "size", "path"} and nothing else) become
    FileSpecs as they are parsed, which `parse_file_list` takes as they are: a dict per
    file would triple the memory a big file list takes while it is being parsed. The
    hook (Python code) also lets other threads, the event loop among them, take turns
    during a long parse; the C parser alone would hold the GIL throughout.
    """
    try:
        data = json.loads(raw, object_hook=_file_spec_or_object)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: invalid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("body: invalid JSON: nested too deeply") from None
    if isinstance(data, FileSpec):  # the whole body is one file, not a request
        data = {"sha": data.sha, "size": data.size, "path": data.path}
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {type(data).__name__}")
    return data


def _file_spec_or_object(obj: dict[str, Any]) -> FileSpec | dict[str, Any]:
    if len(obj) != 3:
        return obj
    path = obj.get("path")
    if not isinstance(path, str):
        return obj
    try:
        return FileSpec(validate_checksum(obj.get("sha")), validate_size(obj.get("size")), path)
    except InvalidRequest:
        return obj  # parse_file_list names what is wrong with it, and where


def parse_file_list(data: dict[str, Any], key: str = "files") -> list[FileSpec]:
    """`data[key]` as FileSpecs; sha and size are validated, paths only type-checked."""
    items = data.get(key)
    if not isinstance(items, list):
        got = "nothing" if items is None else type(items).__name__
        raise InvalidRequest(f"{key}: expected a list of files, got {got}")
    specs: list[FileSpec] = []
    for index, item in enumerate(items):
        if isinstance(item, FileSpec):
            specs.append(item)
            continue
        field = f"{key}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{field}: expected an object with sha, size and path")
        sha = validate_checksum(item.get("sha"), f"{field}.sha")
        size = validate_size(item.get("size"), f"{field}.size")
        path = item.get("path")
        if not isinstance(path, str):
            raise InvalidRequest(f"{field}.path: expected string")
        specs.append(FileSpec(sha, size, path))
    return specs


def is_true(value: str) -> bool:
    """Whether a header value says yes ("True", as Python clients send it, or "1")."""
    return value.strip() in TRUE_VALUES


def header_is_true(request: web.Request, name: str) -> bool:
    return is_true(request.headers.get(name, ""))


def whole_chunks(
    content: StreamReader, pace: BodyPace | None = None, declared: int | None = None
) -> Reader:
    """`read(n)` over a request body that hands out the received chunks as they are.

    StreamReader.read(n) joins all buffered chunks into a new bytes object: a copy of
    every byte on the event loop. readchunk() gives one chunk without copying; only a
    chunk longer than n (at the declared size's end) is split. A body slower than
    `pace` raises BodyTimeout; a client gone before the end (of `declared` bytes),
    ClientDisconnected.
    """
    rest = b""
    taken = 0  # bytes handed out by readchunk so far

    async def next_chunk() -> tuple[bytes, bool]:
        nonlocal taken
        if pace is None or content.total_bytes > taken:
            # Buffered already (a small body arrives with its head): nothing to wait for.
            data, end = await content.readchunk()
            taken += len(data)
            return data, end
        try:
            async with asyncio.timeout(pace.wait_limit(content.total_bytes, None)):
                data, end = await content.readchunk()
        except TimeoutError:
            raise pace.too_slow(content.total_bytes) from None
        taken += len(data)
        return data, end

    async def read(n: int) -> bytes:
        nonlocal rest
        if not rest:
            content.set_read_chunk_size(n)  # let the socket fill up to 2n, as read(n) does
            while True:
                try:
                    data, end_of_http_chunk = await next_chunk()
                except ConnectionError:
                    raise ClientDisconnected(content.total_bytes, declared) from None
                # (b"", False) is the end of the body; a request without one has an
                # EmptyStreamReader that answers (b"", True) forever.
                if data or not end_of_http_chunk or content.at_eof():
                    break
            rest = data
        if len(rest) <= n:
            piece, rest = rest, b""
        else:
            piece, rest = rest[:n], rest[n:]
        return piece

    return read


class _TakenSocket:
    """The rest of a request body, read from its socket instead of through aiohttp."""

    def __init__(
        self, request: web.Request, sock_fd: int, size: int, pace: BodyPace | None
    ) -> None:
        self._request = request
        self._sock_fd = sock_fd
        self._size = size
        self.pace = pace
        self.taken = False
        self._dup = -1  # our own fd of the socket, for reading the rest of the body
        self._unread = 0

    def take(self) -> tuple[int, bytes]:
        request = self._request
        content = request.content
        transport = request.transport
        assert transport is not None
        protocol = request.protocol
        # All synchronous, so no data arrives in between. First what aiohttp has read
        # already: in the body's buffer, or held back in its (paused) parser. Resuming
        # the protocol hands the latter over; so does every read below the low-water mark.
        protocol.resume_reading()
        pieces: list[bytes] = []
        while True:
            piece = content.read_nowait()
            if not piece:
                break
            pieces.append(piece)
        # aiohttp's parser still counts the rest of the body as unread: no further request
        # may be parsed on this connection. close() makes the protocol drop any data and
        # end the connection after the answer; feed_eof() keeps it from lingering to read
        # the rest of the body (we do that). feed_eof resumes the transport: pause it last.
        protocol.close()
        content.feed_eof()
        transport.pause_reading()
        self.taken = True
        # Two fds of our own: the store's (closed by its worker when done), and ours for
        # after the answer; neither can end up reading another socket reusing the number.
        self._dup = os.dup(self._sock_fd)
        return os.dup(self._sock_fd), b"".join(pieces)

    def set_unread(self, unread: int) -> None:
        self._unread = unread
        self._request[BODY_BYTES] = self._size - unread

    async def answer(self, request: web.Request, response: web.Response) -> web.Response:
        """`response`, the last on this connection; sent right away when part of the
        body is still unread, which is then read and dropped (up to splice.LINGER s)
        like aiohttp does, so that the client still sending gets the answer, not a reset."""
        response.force_close()
        sock, self._dup = self._dup, -1
        if sock < 0:
            return response
        if self._unread <= 0:
            os.close(sock)
            return response
        unread = self._unread

        def drain_and_close() -> None:  # owns sock from here on, even if we are cancelled
            try:
                drain(sock, unread)
            finally:
                os.close(sock)

        draining = start_thread(drain_and_close)
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError:
            pass  # the client is gone (that may be why the body is short): nobody to answer
        finally:
            await asyncio.wrap_future(draining)
        return response

    def close(self) -> None:
        """Close the socket fd if nobody did (the request failed unexpectedly)."""
        sock, self._dup = self._dup, -1
        if sock >= 0:
            os.close(sock)


def splices(size: int) -> bool:
    """Whether an upload body of `size` bytes is spliced when it can be (see socket_source)."""
    return SPLICE_AVAILABLE and size >= SPLICE_MIN_SIZE


def socket_source(
    request: web.Request, size: int, pace: BodyPace | None = None
) -> _TakenSocket | None:
    """A SocketSource for an upload body of exactly `size` bytes, or None if the body
    must go through aiohttp (small, chunked, encoded, TLS, not Linux, ...)."""
    if not splices(size):
        return None
    if request.content_length != size or "Transfer-Encoding" in request.headers:
        return None
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    if not hasattr(transport, "pause_reading"):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fileno = sock.fileno()
    except (OSError, ValueError):
        return None
    if fileno < 0 or request.content.exception() is not None:
        return None
    return _TakenSocket(request, fileno, size, pace)
