"""Obs-folded headers from Flamenco add-ons 3.6-3.8.5, and RFC 2047 original file names.

Those add-ons encode the path with Python's email.header (maxlinelen 76, linesep "\\n")
and hand the folded value to urllib3, so the wire carries `...?=\\n =?utf-8?q?...?=\\r\\n`.
"""

from __future__ import annotations

import email.header
import hashlib
import logging
import os
import socket
from pathlib import Path

import pytest
import urllib3
from conftest import RunningManager
from gateway_helpers import RunningGateway
from helpers import ACCESS_LOGGER, access_messages, blob_path, pending_path

from manager_plugin.http.filenames import UndecodableFilename, decode_original_filename
from manager_plugin.http.headerfold import UnfoldingParser, head_end, unfold_head

LONG_PATH = "textures/environment/forest/very-long-directory-name/ránið bark_diffuse_4k.png"


def addon_header(path: str) -> str:
    """X-Shaman-Original-Filename as add-ons 3.6-3.8.5 compute it."""
    header = email.header.Header()
    header.append(path, charset="utf-8")
    return header.encode()


def raw_upload(url: str, body: bytes, filename_value: str, extra: bytes = b"") -> bytes:
    """POST the body over a raw socket, the header block exactly as urllib3 writes it."""
    host, port = url.split("/")[2].split(":")
    sha = hashlib.sha256(body).hexdigest()
    head = (
        f"POST /api/v3/shaman/files/{sha}/{len(body)} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "User-Agent: OpenAPI-Generator/3.8.5/python\r\n"
        "Content-Type: application/octet-stream\r\n"
        "X-Shaman-Can-Defer-Upload: False\r\n"
        f"X-Shaman-Original-Filename: {filename_value}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body + extra)
        return read_answers(sock, 2 if extra else 1)


def read_answers(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith((b"\r\n\r\n", b"}")):
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data


def test_the_addon_header_really_is_folded_with_a_bare_lf():
    value = addon_header(LONG_PATH)
    assert "\n " in value and "\r" not in value


@pytest.fixture(params=["standalone", "gateway"])
def server_url(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(base URL, file-store dir) of our server, standalone and as the gateway."""
    if request.param == "standalone":
        manager: RunningManager = request.getfixturevalue("manager")
        return manager.url, str(manager.store)
    gateway: RunningGateway = request.getfixturevalue("gateway")
    return gateway.url, str(gateway.storage / "file-store")


def test_a_folded_filename_header_uploads_fine(server_url, caplog):
    url, store = server_url
    body = os.urandom(4000) + b"\n \n\tbody bytes that look like a fold stay as they are\r\n\r\n"
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    answer = raw_upload(url, body, addon_header(LONG_PATH))
    assert answer.startswith(b"HTTP/1.1 204 "), answer
    # A small upload: stored verified as .pending until a checkout links it.
    assert pending_path(Path(store), body).read_bytes() == body
    assert not blob_path(Path(store), body).exists()
    assert any(f"file={LONG_PATH}" in line for line in access_messages(caplog))


def test_a_folded_header_after_a_body_on_the_same_connection(server_url):
    url, _ = server_url
    first = os.urandom(1000)
    second = os.urandom(1000)
    sha = hashlib.sha256(second).hexdigest()
    follow_up = (
        f"POST /api/v3/shaman/files/{sha}/{len(second)} HTTP/1.1\r\nHost: x\r\n"
        f"X-Shaman-Original-Filename: {addon_header(LONG_PATH + '2')}\r\n"
        f"Content-Length: {len(second)}\r\n\r\n"
    ).encode() + second
    answers = raw_upload(url, first, addon_header(LONG_PATH), extra=follow_up)
    assert answers.count(b"HTTP/1.1 204 ") == 2, answers


def test_the_addons_own_http_stack_sends_the_folded_header_and_it_uploads(server_url):
    """urllib3 (under Flamenco's generated client) passes the folded value as it is."""
    url, _ = server_url
    body = os.urandom(2000)
    sha = hashlib.sha256(body).hexdigest()
    answer = urllib3.PoolManager().request(
        "POST",
        f"{url}api/v3/shaman/files/{sha}/{len(body)}",
        body=body,
        headers={
            "Content-Type": "application/octet-stream",
            "X-Shaman-Original-Filename": addon_header(LONG_PATH),
        },
    )
    assert answer.status == 204


def test_an_unknown_charset_is_400_as_in_go(manager: RunningManager):
    answer = raw_upload(manager.url, b"abc", "=?koi8-r?q?abc?=")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"X-Shaman-Original-Filename" in answer


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("=?utf-8?q?linked=5Fcube=2Eblend?=", "linked_cube.blend"),
        ("plain/name.blend", "plain/name.blend"),
        ("=?utf-8?q?a?=\n =?utf-8?q?b?=", "ab"),  # whitespace between words goes
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        ("x =?utf-8?q?a?= y", "x a y"),
        ("=?UTF-8?B?csOhbmnDsA==?=", "ránið"),
        ("=?iso-8859-1?q?r=E1n?=", "rán"),
        ("=?utf-8?b?!!!?=", "=?utf-8?b?!!!?="),  # malformed: kept as written, like Go
        ("=?utf-8?q?bad=ZZ?=", "=?utf-8?q?bad=ZZ?="),
        ("=?utf-8?q?bad=2?=", "=?utf-8?q?bad=2?="),  # an escape cut short
        ("=?utf-8?q?tab\there?=", "tab\there"),
        ("=?utf-8?q?a=2fb_c=3d?=", "a/b c="),  # lowercase hex, `_` is a space
        ("=?utf-8?q?=C3=A1 x?=", "\u00e1 x"),
        ("=?utf-8?q?bell\x07?=", "=?utf-8?q?bell\x07?="),  # a control character
    ],
)
def test_rfc2047_names_decode_like_gos_word_decoder(raw, decoded):
    assert decode_original_filename(raw) == decoded


def test_rfc2047_unknown_charset_is_an_error():
    with pytest.raises(UndecodableFilename):
        decode_original_filename("=?x-unknown?q?abc?=")


@pytest.mark.parametrize(
    ("head", "joined"),
    [
        (b"GET / HTTP/1.1\r\nA: 1\n 2\r\n\r\n", b"GET / HTTP/1.1\r\nA: 1 2\r\n\r\n"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n\t2\r\n\r\n", b"GET / HTTP/1.1\r\nA: 1 2\r\n\r\n"),
        (b"GET / HTTP/1.1\nA: 1  \n   2\nB: 3\n\n", b"GET / HTTP/1.1\r\nA: 1 2\r\nB: 3\r\n\r\n"),
        (b"GET / HTTP/1.1\r\nA: 1\r\n\r\n", b"GET / HTTP/1.1\r\nA: 1\r\n\r\n"),
    ],
)
def test_folded_lines_are_joined_with_one_space(head, joined):
    assert head_end(head) == len(head)
    assert unfold_head(head) == joined


def test_the_head_ends_at_the_first_blank_line():
    data = b"POST / HTTP/1.1\r\nA: 1\r\n\r\nbody\n \n\nmore"
    assert data[: head_end(data)] == b"POST / HTTP/1.1\r\nA: 1\r\n\r\n"
    assert head_end(b"POST / HTTP/1.1\r\nA: 1\r\n") == -1


class RecordingParser:
    """Stands in for aiohttp's parser: records what it is fed, emits no messages."""

    def __init__(self) -> None:
        self.fed: list[bytes] = []

    def feed_data(self, data: bytes) -> tuple[list, bool, bytes]:
        self.fed.append(bytes(data))
        return [], False, b""


def test_a_head_split_across_reads_is_joined_and_the_body_passes_untouched():
    inner = RecordingParser()
    parser = UnfoldingParser(inner)
    body = b"ab\n cd\n\tef"
    for piece in (
        b"POST / HTTP/1.1\r\nX-A: 1",
        b"\n 2\r\nContent-Length: 10\r",
        b"\n\r\nab\n ",
        b"cd\n\tef",
    ):
        parser.feed_data(piece)
    assert b"".join(inner.fed) == (
        b"POST / HTTP/1.1\r\nX-A: 1 2\r\nContent-Length: 10\r\n\r\n" + body
    )


def test_the_protocols_reparse_poke_reaches_the_parser_while_a_head_is_held():
    inner = RecordingParser()
    parser = UnfoldingParser(inner)
    parser.feed_data(b"GET / HTTP/1.1\r\nX-A: 1")
    assert inner.fed == []  # held until the head is whole
    parser.feed_data(b"")
    assert inner.fed == [b""]


def test_a_chunked_body_passes_untouched():
    inner = RecordingParser()
    parser = UnfoldingParser(inner)
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\na\n b\r\n0\r\n\r\n"
    parser.feed_data(data)
    assert b"".join(inner.fed) == data


def test_a_plain_head_and_its_whole_body_go_to_the_parser_in_one_piece():
    inner = RecordingParser()
    parser = UnfoldingParser(inner)
    first = b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nab\n cd"
    parser.feed_data(first)
    assert inner.fed == [first]  # no copy of the head held, no second call for the body
    # The body was counted: a folded head right behind it is still unfolded.
    parser.feed_data(b"GET / HTTP/1.1\r\nX-A: 1\n 2\r\n\r\n")
    assert inner.fed[1:] == [b"GET / HTTP/1.1\r\nX-A: 1 2\r\n\r\n"]


def test_a_plain_head_with_part_of_its_body_counts_the_rest_through():
    inner = RecordingParser()
    parser = UnfoldingParser(inner)
    parser.feed_data(b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab")
    parser.feed_data(b"\n\n \r\n\r\n")  # the body's last 7 bytes: they hold a head end
    parser.feed_data(b"GET / HTTP/1.1\nX-A: 1\n\n")
    assert b"".join(inner.fed) == (
        b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nab\n\n \r\n\r\n"
        b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"
    )


@pytest.mark.parametrize(
    "data",
    [
        # a folded head behind a plain one in the same read
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\nX-A: 1\n 2\r\n\r\n",
        # a bare LF line end before the CRLF blank line
        b"GET / HTTP/1.1\nX-A: 1\r\n\r\n",
        # a continuation line in the head
        b"GET / HTTP/1.1\r\nX-A: 1\r\n 2\r\n\r\n",
    ],
)
def test_anything_but_one_plain_message_takes_the_unfolding_way(data):
    fast, slow = RecordingParser(), RecordingParser()
    UnfoldingParser(fast).feed_data(data)
    piecewise = UnfoldingParser(slow)  # one byte per read: never the one-piece way
    for i in range(len(data)):
        piecewise.feed_data(data[i : i + 1])
    assert b"".join(fast.fed) == b"".join(slow.fed)
    assert b"\n " not in b"".join(fast.fed)
