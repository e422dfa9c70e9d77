"""Configuration: the Shaman part of Flamenco's `flamenco-manager.yaml`.

Keys Flamenco's Manager owns but Shaman does not use are ignored, so an existing
Manager file works unchanged. Errors name the key and, when YAML knows it, the line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .durations import parse_duration
from .errors import ConfigError

if TYPE_CHECKING:
    from .gateway_config import GatewaySettings

__all__ = ["Config", "ConfigError", "load_config", "parse_listen"]

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
    # URL path under which the legacy (BAT) protocol is also served; "" = root only.
    legacy_base_path: str = ""
    # Gateway mode (manager_plugin.gateway_config): in front of this Flamenco Manager.
    gateway: GatewaySettings | None = None

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


class _Source:
    """Values and line numbers of one parsed YAML document."""

    def __init__(self, path: Path, data: Mapping[str, Any], lines: dict[str, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}: {key}" + (f" (line {line})" if line else "")

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {problem}")

    def get(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key + ".", out)


def _read_yaml(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{line}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    lines: dict[str, int] = {}
    if root is not None:
        _key_lines(root, "", lines)
    return _Source(path, data, lines)


def _duration(src: _Source, key: str, default: timedelta) -> timedelta:
    value = src.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise src.error(key, f"expected a duration like '24h0m0s', got {value!r}")
    if isinstance(value, int) and value == 0:
        return timedelta(0)
    if not isinstance(value, str):
        raise src.error(key, f"expected a duration like '24h0m0s', got {value!r}")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise src.error(key, str(exc)) from None


def _bool(src: _Source, key: str, default: bool) -> bool:
    value = src.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise src.error(key, f"expected true or false, got {value!r}")
    return value


def _mapping(src: _Source, key: str) -> None:
    value = src.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise src.error(key, f"expected a mapping, got {value!r:.80}")


def load_config(path: str | os.PathLike[str], *, require_storage: bool = True) -> Config:
    """Read a `flamenco-manager.yaml`; raise ConfigError naming the key and line.

    `require_storage=False` lets the command line supply `--storage` instead of
    `shared_storage_path`.
    """
    src = _read_yaml(Path(path))
    _mapping(src, "shaman")
    _mapping(src, "shaman.garbageCollect")

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

    max_age = _duration(src, "shaman.garbageCollect.maxAge", DEFAULT_GC_MAX_AGE)
    if max_age < timedelta(0):
        raise src.error("shaman.garbageCollect.maxAge", "must not be negative")

    extra = src.get("shaman.garbageCollect.extraCheckoutPaths") or []
    if not isinstance(extra, list) or not all(isinstance(p, str) and p for p in extra):
        raise src.error("shaman.garbageCollect.extraCheckoutPaths", "expected a list of paths")

    token = src.get("shaman.token")
    if token is not None and (not isinstance(token, str) or not token):
        raise src.error("shaman.token", "expected a non-empty string")

    timeout = _duration(src, "shaman.bodyReadTimeout", timedelta(seconds=60))
    if timeout <= timedelta(0):
        raise src.error("shaman.bodyReadTimeout", "must be positive")

    legacy_base_path = src.get("shaman.legacyBasePath")
    if legacy_base_path is None:
        legacy_base_path = ""
    if not isinstance(legacy_base_path, str) or any(c in legacy_base_path for c in "?#\\ "):
        raise src.error("shaman.legacyBasePath", "expected a URL path such as '/shaman'")

    return Config(
        listen=listen,
        storage_path=storage_path,
        shaman_enabled=_bool(src, "shaman.enabled", True),
        gc_period=_duration(src, "shaman.garbageCollect.period", DEFAULT_GC_PERIOD),
        gc_max_age=max_age,
        gc_extra_checkout_paths=[Path(p).expanduser() for p in extra],
        absolute_symlinks=_bool(src, "shaman.absoluteSymlinks", False),
        token=token,
        body_read_timeout=timeout.total_seconds(),
        legacy_base_path=legacy_base_path,
    )
