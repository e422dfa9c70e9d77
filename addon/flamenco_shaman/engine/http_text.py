"""Text on the wire, both ways: the original-filename header as Flamenco's add-on
encodes it, and one-line reasons read from a manager's answers and transport errors."""

from __future__ import annotations

import requests
from urllib3.exceptions import NewConnectionError

# Characters an RFC 2047 "Q" encoded word may carry as they are (its strictest context).
_Q_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def encode_original_filename(name: str) -> str:
    """X-Shaman-Original-Filename as Flamenco 3.9's add-on sends it: one RFC 2047 encoded
    word, e.g. `=?utf-8?q?linked=5Fcube=2Eblend?=`, never folded (Go decodes it and
    answers 400 to anything undecodable; a folded header breaks aiohttp servers)."""
    out = []
    for byte in name.encode("utf-8", errors="surrogatepass"):
        if byte in _Q_PLAIN:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("_")
        else:
            out.append(f"={byte:02X}")
    return f"=?utf-8?q?{''.join(out)}?="


def response_message(response: requests.Response) -> str:
    """The manager's one-line explanation: the JSON "message", else the first line of text."""
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except ValueError:
        pass
    text = (response.text or "").strip()
    if "html" in response.headers.get("Content-Type", "") or text.startswith("<"):
        text = ""  # a line of markup says nothing; the status's reason does
    lines = text.splitlines()
    return lines[0][:200] if lines else str(response.reason or "")


def never_sent(ex: requests.RequestException) -> bool:
    """True when no connection could be made, so the manager cannot have seen the request."""
    reason = getattr(ex.args[0], "reason", None) if ex.args else None
    return isinstance(reason, NewConnectionError)


def tls_failure(url: str, ex: requests.exceptions.SSLError) -> str:
    """One line for a failed TLS handshake, without OpenSSL's source locations."""
    if "CERTIFICATE_VERIFY_FAILED" in str(ex):
        return f"cannot reach the manager at {url}: its TLS certificate is not trusted"
    return (
        f"cannot reach the manager at {url}: the TLS handshake failed; "
        "if the manager serves plain HTTP, use an http:// URL"
    )


def short_reason(ex: Exception) -> str:
    """The innermost reason of a requests error, which is the readable one."""
    text = str(ex)
    for marker in ("Failed to establish a new connection: ", "] "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text.rstrip("')\"").strip() or type(ex).__name__
