"""Configuration: the Shaman part of Flamenco's `flamenco-manager.yaml`.

Keys Flamenco's Manager owns but Shaman does not use are ignored, so an existing
Manager file works unchanged. Errors name the key and, when YAML knows it, the line.
Unknown keys under `shaman:`, and top-level keys that look like a typo of a known one,
are logged as warnings: a misspelt key would otherwise silently mean its default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from .config_yaml import check_mapping, get_bool, get_duration, read_yaml, warn_unknown_keys
from .errors import ConfigError
from .portable import MODES as PORTABLE_NAME_MODES
from .tuning import KEYS as TUNING_KEYS
from .tuning import Tuning

if TYPE_CHECKING:
    from .gateway_config import GatewaySettings

__all__ = ["Config", "ConfigError", "load_config", "parse_listen"]

log = logging.getLogger(__name__)

# Top-level keys: Flamenco Manager 3's own (internal/manager/config/config.go), which
# include `shaman`, plus any other this file reads. Accepted silently; an unknown
# top-level key is warned about only when it is close to one of these (a typo).
TOP_LEVEL_KEYS = (
    "_meta",
    "manager_name",
    "database",
    "database_check_period",
    "listen",
    "autodiscoverable",
    "local_manager_storage_path",
    "shared_storage_path",
    "shaman",
    "task_timeout",
    "worker_timeout",
    "blocklist_threshold",
    "task_fail_after_softfail_count",
    "mqtt",
    "variables",
)

DEFAULT_LISTEN = ":8080"
DEFAULT_STORAGE = Path("flamenco-storage")
DEFAULT_GC_PERIOD = timedelta(hours=24)
DEFAULT_GC_MAX_AGE = timedelta(hours=744)


@dataclass
class Config:
    """Everything the Shaman server reads from its configuration."""

    listen: str = DEFAULT_LISTEN
    storage_path: Path = field(default_factory=lambda: DEFAULT_STORAGE.absolute())
    shaman_enabled: bool = True
    gc_period: timedelta = DEFAULT_GC_PERIOD
    gc_max_age: timedelta = DEFAULT_GC_MAX_AGE
    gc_extra_checkout_paths: list[Path] = field(default_factory=list)
    absolute_symlinks: bool = False
    token: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    body_read_timeout: float = 60.0
    # After body_read_timeout, a body must have averaged this many bytes/s (0 = no floor).
    body_min_rate: float = 1024.0
    # Seconds a client gets to send a request's headers (from connecting or its first byte).
    header_timeout: float = 30.0
    # Connections served at once; 0 = derived from the descriptor limit at startup.
    max_connections: int = 0
    # URL path under which the legacy (BAT) protocol is also served; "" = root only.
    legacy_base_path: str = ""
    # Names Windows/macOS workers cannot hold (see manager_plugin.portable): warn|refuse|off.
    portable_names: str = "warn"
    # Gateway mode (manager_plugin.gateway_config): in front of this Flamenco Manager.
    gateway: GatewaySettings | None = None
    # `shaman.tuning`: the Linux fast paths (manager_plugin.tuning), each on by default.
    tuning: Tuning = field(default_factory=Tuning)

    def __post_init__(self) -> None:
        # Accept plain numbers (seconds) and str paths from embedding code and tests.
        if not isinstance(self.gc_period, timedelta):
            self.gc_period = timedelta(seconds=float(self.gc_period))
        if not isinstance(self.gc_max_age, timedelta):
            self.gc_max_age = timedelta(seconds=float(self.gc_max_age))
        self.storage_path = Path(self.storage_path).absolute()
        self.gc_extra_checkout_paths = [Path(p).absolute() for p in self.gc_extra_checkout_paths]

    @property
    def jobs_path(self) -> Path:
        return self.storage_path / "jobs"

    @property
    def file_store_path(self) -> Path:
        return self.storage_path / "file-store"


def parse_listen(listen: str) -> tuple[str | None, int]:
    """Split Flamenco's `listen` (`":8080"`, `"127.0.0.1:0"`, `"[::1]:8080"`) into host, port.

    An empty host means all interfaces and is returned as None.
    """
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"expected HOST:PORT such as ':8080' or '127.0.0.1:8080', got {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host or None), int(port_text)


def load_config(path: str | os.PathLike[str], *, require_storage: bool = True) -> Config:
    """Read a `flamenco-manager.yaml`; raise ConfigError naming the key and line.

    `require_storage=False` lets the command line supply `--storage` instead of
    `shared_storage_path`.
    """
    src = read_yaml(Path(path))
    check_mapping(src, "shaman")
    check_mapping(src, "shaman.garbageCollect")
    check_mapping(src, "shaman.tuning")

    listen = src.get("listen")
    if listen is None:
        listen = DEFAULT_LISTEN
    if not isinstance(listen, str):
        raise src.error("listen", f"expected HOST:PORT as a string, got {listen!r}")
    try:
        parse_listen(listen)
    except ValueError as exc:
        raise src.error("listen", str(exc)) from None

    storage = src.get("shared_storage_path")
    if storage is None or storage == "":
        if require_storage:
            raise src.error("shared_storage_path", "missing; set it to the shared storage dir")
        storage_path = DEFAULT_STORAGE
    elif not isinstance(storage, str):
        raise src.error("shared_storage_path", f"expected a path, got {storage!r}")
    else:
        storage_path = Path(storage).expanduser()

    max_age = get_duration(src, "shaman.garbageCollect.maxAge", DEFAULT_GC_MAX_AGE)
    if max_age < timedelta(0):
        raise src.error("shaman.garbageCollect.maxAge", "must not be negative")

    extra = src.get("shaman.garbageCollect.extraCheckoutPaths") or []
    if not isinstance(extra, list) or not all(isinstance(p, str) and p for p in extra):
        raise src.error("shaman.garbageCollect.extraCheckoutPaths", "expected a list of paths")

    token = src.get("shaman.token")
    if token is not None and not isinstance(token, str):
        raise src.error("shaman.token", f'must be a string; quote it, e.g. token: "{token}"')
    if token == "":
        raise src.error("shaman.token", "must not be empty (leave it out for no token)")

    timeout = get_duration(src, "shaman.bodyReadTimeout", timedelta(seconds=60))
    if timeout <= timedelta(0):
        raise src.error("shaman.bodyReadTimeout", "must be positive")

    min_rate = src.get("shaman.bodyMinRate")
    if min_rate is None:
        min_rate = 1024
    if isinstance(min_rate, bool) or not isinstance(min_rate, int) or min_rate < 0:
        raise src.error("shaman.bodyMinRate", "expected bytes per second as an integer >= 0")

    header_timeout = get_duration(src, "shaman.headerTimeout", timedelta(seconds=30))
    if header_timeout <= timedelta(0):
        raise src.error("shaman.headerTimeout", "must be positive")

    max_connections = src.get("shaman.maxConnections")
    if max_connections is None:
        max_connections = 0
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 0
    ):
        raise src.error("shaman.maxConnections", "expected an integer >= 0 (0 = automatic)")

    portable_names = src.get("shaman.portableNames")
    if portable_names is None:
        portable_names = "warn"
    if portable_names is False:
        portable_names = "off"  # YAML 1.1 reads a bare `off` as false
    if portable_names not in PORTABLE_NAME_MODES:
        raise src.error(
            "shaman.portableNames",
            f"expected one of {', '.join(PORTABLE_NAME_MODES)}, got {portable_names!r:.80}",
        )

    legacy_base_path = src.get("shaman.legacyBasePath")
    if legacy_base_path is None:
        legacy_base_path = ""
    if not isinstance(legacy_base_path, str) or any(c in legacy_base_path for c in "?#\\ "):
        raise src.error("shaman.legacyBasePath", "expected a URL path such as '/shaman'")

    config = Config(
        listen=listen,
        storage_path=storage_path,
        shaman_enabled=get_bool(src, "shaman.enabled", True),
        gc_period=get_duration(src, "shaman.garbageCollect.period", DEFAULT_GC_PERIOD),
        gc_max_age=max_age,
        gc_extra_checkout_paths=[Path(p).expanduser() for p in extra],
        absolute_symlinks=get_bool(src, "shaman.absoluteSymlinks", False),
        token=token,
        body_read_timeout=timeout.total_seconds(),
        body_min_rate=float(min_rate),
        header_timeout=header_timeout.total_seconds(),
        max_connections=max_connections,
        legacy_base_path=legacy_base_path,
        portable_names=portable_names,
        tuning=Tuning(
            **{
                attr: get_bool(src, f"shaman.tuning.{key}", True)
                for key, attr in TUNING_KEYS.items()
            }
        ),
    )
    from .gateway_config import KEYS as GATEWAY_KEYS  # it imports this module

    src.read.update(f"shaman.gateway.{key}" for key in GATEWAY_KEYS)  # read there
    warn_unknown_keys(src, TOP_LEVEL_KEYS)
    return config
