"""Gateway mode's settings, and the startup checks that keep it safe beside Flamenco Manager.

In gateway mode this server is the front door of an unmodified Flamenco Manager: it
serves Shaman itself and forwards everything else to the Manager (the "upstream").
Both processes read the same `flamenco-manager.yaml`, so the split is:

- Flamenco's keys keep their meaning for Flamenco: top-level `listen` is the Manager's
  own (internal) address, `shared_storage_path` is shared, `shaman.enabled` must be true
  (so `{jobs}` is `<storage>/jobs` and deleting a job removes its checkout), and
  `shaman.garbageCollect.period` must be 0: Flamenco's collector does not take this
  server's storage lock, so only ours may delete blobs. (Every Flamenco 3 release skips
  its collector when the period is 0, with a warning; a `maxAge` of ten years or more is
  accepted too, as such a collector never deletes a blob anybody could still need.)
- Our keys live under `shaman.gateway`: `upstream`, `listen`, `readTimeout`, and
  `garbageCollect.period`/`.maxAge` for our collector (maxAge defaults to Flamenco's key).

Flamenco rewrites its file from its own struct (setup wizard, web settings), dropping
keys it does not know, `shaman.gateway` included. So `--upstream` and `--listen` on the
command line (e.g. in the systemd unit) win over the file, and our collector falls back
to its defaults when its keys are gone.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from .config import DEFAULT_GC_PERIOD, DEFAULT_LISTEN, Config, parse_listen
from .config_yaml import get_duration, read_yaml
from .durations import format_duration
from .errors import ConfigError

log = logging.getLogger(__name__)

# A Flamenco collector whose maxAge is at least this never deletes anything in practice.
NEVER_DELETES_AGE = timedelta(days=3650)
DEFAULT_READ_TIMEOUT = timedelta(seconds=60)
CONNECT_TIMEOUT = 10.0
_GATEWAY = "shaman.gateway"
# Every key read under shaman.gateway (the config loader takes them as known).
KEYS = ("upstream", "listen", "readTimeout", "garbageCollect.period", "garbageCollect.maxAge")


@dataclass(frozen=True)
class GatewaySettings:
    """Where and how forwarded requests go."""

    upstream: str  # "http://host:port" plus an optional path prefix, no trailing slash
    read_timeout: float = DEFAULT_READ_TIMEOUT.total_seconds()  # idle, not total
    connect_timeout: float = CONNECT_TIMEOUT


@dataclass
class GatewayKeys:
    """What a flamenco-manager.yaml says that matters to gateway mode (None: not set)."""

    upstream: str | None = None
    listen: str | None = None
    read_timeout: timedelta | None = None
    gc_period: timedelta | None = None
    gc_max_age: timedelta | None = None
    # Flamenco's own keys, as the Manager will read them.
    flamenco_listen: str | None = None
    flamenco_gc_period: timedelta | None = None
    flamenco_gc_max_age: timedelta | None = None
    flamenco_shaman_enabled: bool | None = None
    path: Path | None = None
    lines: dict[str, int] | None = None

    def where(self, key: str) -> str:
        line = (self.lines or {}).get(key)
        return key + (f" (line {line})" if line else "")


def parse_upstream(url: str) -> str:
    """`url` normalised (no trailing slash); ValueError unless it is an http(s) base URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected the Manager's URL such as 'http://127.0.0.1:8081', got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the upstream URL must not have a query or fragment: {url!r}")
    try:
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise ValueError(f"bad port in upstream URL {url!r}") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def read_gateway_keys(path: Path) -> GatewayKeys:
    """The gateway-related keys of a flamenco-manager.yaml (read_config already validated it)."""
    src = read_yaml(path)
    keys = GatewayKeys(path=path, lines=src.lines)
    for name, attr in (("upstream", "upstream"), ("listen", "listen")):
        value = src.get(f"{_GATEWAY}.{name}")
        if value is not None and (not isinstance(value, str) or not value):
            raise src.error(f"{_GATEWAY}.{name}", f"expected a string, got {value!r}")
        setattr(keys, attr, value)
    never = timedelta(-1)  # marks "not set" without a second lookup
    for key, attr in (
        (f"{_GATEWAY}.readTimeout", "read_timeout"),
        (f"{_GATEWAY}.garbageCollect.period", "gc_period"),
        (f"{_GATEWAY}.garbageCollect.maxAge", "gc_max_age"),
        ("shaman.garbageCollect.period", "flamenco_gc_period"),
        ("shaman.garbageCollect.maxAge", "flamenco_gc_max_age"),
    ):
        value = get_duration(src, key, never)
        if value != never:
            if value < timedelta(0):
                raise src.error(key, "must not be negative")
            setattr(keys, attr, value)
    if keys.read_timeout is not None and keys.read_timeout <= timedelta(0):
        raise src.error(f"{_GATEWAY}.readTimeout", "must be positive")
    if keys.upstream is not None:
        try:
            keys.upstream = parse_upstream(keys.upstream)
        except ValueError as exc:
            raise src.error(f"{_GATEWAY}.upstream", str(exc)) from None
    if keys.listen is not None:
        try:
            parse_listen(keys.listen)
        except ValueError as exc:
            raise src.error(f"{_GATEWAY}.listen", str(exc)) from None
    listen = src.get("listen")
    keys.flamenco_listen = listen if isinstance(listen, str) else None
    enabled = src.get("shaman.enabled")
    keys.flamenco_shaman_enabled = enabled if isinstance(enabled, bool) else None
    return keys


def flamenco_collector_problem(keys: GatewayKeys) -> str | None:
    """Why Flamenco's own collector could delete blobs on our storage, or None if it can't."""
    period = keys.flamenco_gc_period
    max_age = keys.flamenco_gc_max_age
    if period == timedelta(0):
        return None
    if max_age is not None and max_age >= NEVER_DELETES_AGE:
        return None
    said = (
        "is not set (Flamenco's default: 24h)"
        if period is None
        else f"is {format_duration(period)}"
    )
    return (
        f"{keys.where('shaman.garbageCollect.period')} {said}: Flamenco Manager reads this key "
        "too, and its garbage collector would delete blobs on this storage without taking "
        "our storage lock, racing our checkouts. Set shaman.garbageCollect.period: 0 "
        "(Flamenco's collector off; ours runs every shaman.gateway.garbageCollect.period, "
        "default 24h) and restart Flamenco Manager"
    )


def _is_loopback_or_any(host: str | None) -> bool:
    if host is None or host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def configure_gateway(
    config: Config,
    keys: GatewayKeys | None,
    *,
    upstream: str | None = None,
    listen: str | None = None,
) -> None:
    """Switch `config` to gateway mode when an upstream is given (argument or file).

    `keys` is None when no config file was read: then Flamenco's collector cannot be
    checked, which is logged as a warning. Raises ConfigError for a setup that cannot
    work or that would let two collectors race.
    """
    keys_or_none = keys or GatewayKeys()
    if upstream is not None:
        try:
            upstream = parse_upstream(upstream)
        except ValueError as exc:
            raise ConfigError(f"--upstream: {exc}") from None
    else:
        upstream = keys_or_none.upstream
    if upstream is None:
        return
    our_listen = listen or keys_or_none.listen
    if our_listen is None:
        raise ConfigError(
            "gateway mode needs its own address: pass --listen HOST:PORT or set "
            "shaman.gateway.listen (the top-level listen is Flamenco Manager's own)"
        )
    _, our_port = parse_listen(our_listen)
    if keys is not None:
        flamenco_listen = keys.flamenco_listen or DEFAULT_LISTEN
        try:
            _, flamenco_port = parse_listen(flamenco_listen)
        except ValueError:
            flamenco_port = -1  # load_config reports a bad listen itself
        if our_port != 0 and our_port == flamenco_port:
            raise ConfigError(
                f"{keys.where('listen')}: Flamenco Manager listens on {flamenco_listen!r}, and "
                f"so would the gateway ({our_listen!r}); move Flamenco Manager to an internal "
                "address such as listen: 127.0.0.1:8081 and point --upstream at it"
            )
        if keys.flamenco_shaman_enabled is False:
            raise ConfigError(
                f"{keys.where('shaman.enabled')}: gateway mode needs Flamenco Manager's own "
                "Shaman on (shaman.enabled: true), so that {jobs} is <storage>/jobs and "
                "deleting a job removes its checkout"
            )
        problem = flamenco_collector_problem(keys)
        if problem is not None:
            raise ConfigError(problem)
    else:
        log.warning(
            "gateway mode without --config: cannot check that Flamenco Manager's "
            "shaman.garbageCollect.period is 0; if it is not, its collector races ours"
        )
    parts = urlsplit(upstream)
    if our_port != 0 and parts.port == our_port and _is_loopback_or_any(parts.hostname):
        raise ConfigError(
            f"--upstream {upstream} is this gateway's own address ({our_listen}); "
            "point it at Flamenco Manager"
        )
    if not config.shaman_enabled:
        raise ConfigError("gateway mode serves Shaman itself: shaman.enabled must be true")
    if config.token is not None:
        log.warning(
            "gateway mode with shaman.token set: Flamenco's own add-on sends no token, so "
            "its uploads will be refused (401); only our add-on and shaman-submit can submit"
        )
    read_timeout = keys_or_none.read_timeout or DEFAULT_READ_TIMEOUT
    config.gateway = GatewaySettings(upstream=upstream, read_timeout=read_timeout.total_seconds())
    config.listen = our_listen
    config.gc_period = (
        keys_or_none.gc_period if keys_or_none.gc_period is not None else (DEFAULT_GC_PERIOD)
    )
    if keys_or_none.gc_max_age is not None:
        config.gc_max_age = keys_or_none.gc_max_age
