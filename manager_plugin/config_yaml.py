"""Reading `flamenco-manager.yaml`: values by dotted key with the line they came from,
typed getters whose errors name the key and line, and warnings for keys nobody read."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from .durations import parse_duration
from .errors import ConfigError

# The warnings are about the configuration, whichever module reads which key.
log = logging.getLogger("manager_plugin.config")


class Source:
    """Values and line numbers of one parsed YAML document."""

    def __init__(self, path: Path, data: Mapping[str, Any], lines: dict[str, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines
        self.read: set[str] = set()  # every key asked for, dotted: what this file knows

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}: {key}" + (f" (line {line})" if line else "")

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {problem}")

    def get(self, key: str) -> Any:
        self.read.add(key)
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


def read_yaml(path: Path) -> Source:
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
        raise ConfigError(_yaml_error(path, text, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    lines: dict[str, int] = {}
    if root is not None:
        _key_lines(root, "", lines)
    return Source(path, data, lines)


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """The parser's complaint, then the line it blames and the one before: YAML often
    notices a mistake (a missing colon, a bad indent) only on the line after it."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"{path}: invalid YAML: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line != mark.line:
        problem += f" ({context} at line {context_mark.line + 1})"
    lines = text.splitlines()
    shown = [
        f"  {n + 1:>4} | {lines[n]}" for n in (mark.line - 1, mark.line) if 0 <= n < len(lines)
    ]
    return "\n".join([f"{path}: invalid YAML at line {mark.line + 1}: {problem}", *shown])


def warn_unknown_keys(src: Source, top_level_keys: tuple[str, ...]) -> None:
    """Log each key under `shaman:` this file did not read, and each top-level key that
    looks like a typo of a known one (other top-level keys belong to Flamenco).

    Called after every value was read: the keys read are the known ones, so a key this
    file learns to read can never be reported as unknown.
    """
    for key in src.data:
        if not isinstance(key, str) or key in top_level_keys:
            continue
        close = difflib.get_close_matches(key, top_level_keys, n=1, cutoff=0.75)
        if close:
            log.warning("%s: unknown key, ignored; did you mean %s?", src.where(key), close[0])
    known = {k.removeprefix("shaman.") for k in src.read if k.startswith("shaman.")}
    _warn_unknown_under(src, known, "", src.data.get("shaman"))


def _warn_unknown_under(src: Source, known: set[str], prefix: str, mapping: Any) -> None:
    """Warn about keys of `mapping`, found at `shaman.<prefix>`, that were not read."""
    if not isinstance(mapping, Mapping):
        return
    parents = {k.rpartition(".")[0] for k in known}
    known_here = [
        k.removeprefix(prefix)
        for k in known | parents
        if k.startswith(prefix) and k != prefix and "." not in k[len(prefix) :]
    ]
    for key in mapping:
        dotted = f"{prefix}{key}"
        if dotted in parents:
            _warn_unknown_under(src, known, dotted + ".", mapping[key])
            continue
        if dotted in known:
            continue
        close = difflib.get_close_matches(str(key), known_here, n=1, cutoff=0.6)
        hint = f"; did you mean shaman.{prefix}{close[0]}?" if close else ""
        log.warning("%s: unknown key, ignored%s", src.where(f"shaman.{dotted}"), hint)


def get_duration(src: Source, key: str, default: timedelta) -> timedelta:
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


def get_bool(src: Source, key: str, default: bool) -> bool:
    value = src.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise src.error(key, f"expected true or false, got {value!r}")
    return value


def check_mapping(src: Source, key: str) -> None:
    value = src.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise src.error(key, f"expected a mapping, got {value!r:.80}")
