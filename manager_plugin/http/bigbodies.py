"""Big request bodies without stalling the server: parsed, validated and answered in
a worker thread, a few at a time.

One 64 MiB requirements request is 700k files: parsing, validating and answering it
on the event loop stalled every other client for seconds, and several at once took
the memory of several. Bodies of at least LARGE_BODY bytes are therefore handled in
a worker thread, at most SLOTS at once per server, and a big answer is sent in
pieces as it is encoded instead of being built whole.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from json.encoder import encode_basestring_ascii
from typing import TypeVar

from aiohttp import web

from ..models import FileSpec, FileStatus

T = TypeVar("T")

LARGE_BODY = 256 * 1024  # bytes; smaller bodies take milliseconds on the event loop
SLOTS = 2  # big bodies handled at once; the others wait their turn (two cores)
ANSWER_PIECE = 1024 * 1024  # bytes of a streamed answer encoded per thread hop

BODY_SLOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("shaman_body_slots", asyncio.Semaphore)


def add_body_slots(app: web.Application) -> None:
    app[BODY_SLOTS] = asyncio.Semaphore(SLOTS)


def is_large(body: bytes) -> bool:
    return len(body) >= LARGE_BODY


@contextlib.asynccontextmanager
async def body_slot(request: web.Request) -> AsyncIterator[None]:
    """Hold one of the server's slots for big-body work."""
    async with request.config_dict[BODY_SLOTS]:
        yield


async def in_slot(request: web.Request, work: Callable[[], T]) -> T:
    """`work()` in a worker thread, holding a slot."""
    async with body_slot(request):
        return await asyncio.to_thread(work)


def requirements_pieces(answer: list[tuple[FileSpec, FileStatus]]) -> Iterator[bytes]:
    """The JSON answer of a requirements request, ANSWER_PIECE bytes at a time.

    Empties `answer` as it goes, so that the memory of what was sent is free for the
    next big request while a slow client is still reading the rest.
    """
    parts: list[str] = ['{"files":[']
    size = 0
    for index in range(len(answer)):
        spec, status = answer[index]
        answer[index] = None  # type: ignore[call-overload]
        part = (
            f'{"," if index else ""}{{"sha":"{spec.sha}","size":{spec.size},'
            f'"path":{encode_basestring_ascii(spec.path)},"status":"{status}"}}'
        )
        parts.append(part)
        size += len(part)
        if size >= ANSWER_PIECE:
            yield "".join(parts).encode("ascii")
            parts, size = [], 0
    parts.append("]}")
    yield "".join(parts).encode("ascii")


async def stream_json(
    request: web.Request, pieces: Iterator[bytes], write_timeout: float
) -> web.StreamResponse:
    """Send `pieces` (encoded in a worker thread, one at a time) as a JSON answer.

    A client that does not read its answer would hold its memory forever: when one
    piece cannot be sent within `write_timeout` seconds, the connection is closed.
    """
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    done = object()
    while True:
        piece = await asyncio.to_thread(next, pieces, done)
        if piece is done:
            break
        assert isinstance(piece, bytes)
        try:
            async with asyncio.timeout(write_timeout):
                await response.write(piece)
        except TimeoutError:
            if request.transport is not None:
                request.transport.close()
            return response
    await response.write_eof()
    return response
