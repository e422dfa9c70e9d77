"""flamenco-manager.yaml: Flamenco's keys and defaults, errors naming key and line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from manager_plugin.config import Config, ConfigError, load_config, parse_listen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flamenco-manager.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_full_flamenco_file_is_read(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            f"""\
            _meta:
              version: 3
            manager_name: Flamenco
            database: flamenco-manager.sqlite
            listen: 127.0.0.1:9090
            shared_storage_path: {tmp_path}/shared
            shaman:
              enabled: false
              garbageCollect:
                period: 1h30m
                maxAge: 48h0m0s
                extraCheckoutPaths: [{tmp_path}/extra]
            variables:
              blender:
                values: [{{platform: linux, value: blender}}]
            """,
        )
    )
    assert cfg.listen == "127.0.0.1:9090"
    assert cfg.storage_path == tmp_path / "shared"
    assert cfg.shaman_enabled is False
    assert cfg.gc_period == timedelta(hours=1, minutes=30)
    assert cfg.gc_max_age == timedelta(hours=48)
    assert cfg.gc_extra_checkout_paths == [tmp_path / "extra"]
    assert cfg.absolute_symlinks is False
    assert cfg.token is None


def test_flamenco_defaults_apply_to_missing_keys(tmp_path):
    cfg = load_config(write(tmp_path, f"shared_storage_path: {tmp_path}\n"))
    assert cfg.listen == ":8080"
    assert cfg.shaman_enabled is True
    assert cfg.gc_period == timedelta(hours=24)
    assert cfg.gc_max_age == timedelta(hours=744)
    assert cfg.gc_extra_checkout_paths == []
    assert cfg.body_read_timeout == 60


def test_our_own_options_are_read(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            f"""\
            shared_storage_path: {tmp_path}
            shaman:
              absoluteSymlinks: true
              token: s3cret
              bodyReadTimeout: 5s
            """,
        )
    )
    assert cfg.absolute_symlinks is True
    assert cfg.token == "s3cret"
    assert cfg.body_read_timeout == 5


def test_relative_storage_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, "shared_storage_path: shared\n"))
    assert cfg.storage_path == tmp_path / "shared"


def test_period_zero_disables_gc(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            f"""\
            shared_storage_path: {tmp_path}
            shaman:
              garbageCollect:
                period: 0
            """,
        )
    )
    assert cfg.gc_period == timedelta(0)


def test_bad_duration_names_key_and_line(tmp_path):
    path = write(
        tmp_path,
        f"""\
        shared_storage_path: {tmp_path}
        shaman:
          garbageCollect:
            period: 24 hours
        """,
    )
    with pytest.raises(ConfigError, match=r"shaman\.garbageCollect\.period \(line 4\)"):
        load_config(path)


def test_missing_storage_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="shared_storage_path"):
        load_config(write(tmp_path, "listen: ':8080'\n"))


def test_missing_storage_path_is_fine_when_the_command_line_gives_one(tmp_path):
    assert load_config(write(tmp_path, "listen: ':8080'\n"), require_storage=False)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("shaman:\n  enabled: yes please\n", r"shaman\.enabled \(line 2\)"),
        ("listen: 8080\n", r"listen \(line 1\)"),
        ("listen: 'localhost'\n", r"listen \(line 1\)"),
        ("shaman: [1, 2]\n", r"shaman \(line 1\)"),
        ("shaman:\n  garbageCollect:\n    maxAge: -1h\n", r"maxAge \(line 3\)"),
        ("shaman:\n  garbageCollect:\n    extraCheckoutPaths: /x\n", "extraCheckoutPaths"),
        ("shaman:\n  token: ''\n", r"shaman\.token"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, text, key):
    path = write(tmp_path, f"{text}shared_storage_path: {tmp_path}\n")
    with pytest.raises(ConfigError, match=key):
        load_config(path)


def test_invalid_yaml_reports_the_line(tmp_path):
    path = write(tmp_path, "listen: ':8080'\nshaman:\n  enabled: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_config_accepts_seconds_for_durations():
    cfg = Config(gc_period=0, gc_max_age=3600)
    assert cfg.gc_period == timedelta(0)
    assert cfg.gc_max_age == timedelta(hours=1)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [(":8080", (None, 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80))],
)
def test_listen_addresses_parse(listen, expected):
    assert parse_listen(listen) == expected


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager_plugin", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_config_stops_serve_with_exit_status_2_naming_the_key(tmp_path):
    path = write(
        tmp_path,
        f"""\
        shared_storage_path: {tmp_path}
        shaman:
          garbageCollect:
            maxAge: forever
        """,
    )
    result = run_cli("serve", "--config", str(path), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2
    assert "shaman.garbageCollect.maxAge (line 4)" in result.stderr


def test_missing_storage_path_stops_gc_with_exit_status_2(tmp_path):
    path = write(tmp_path, "listen: ':8080'\n")
    result = run_cli("gc", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "shared_storage_path" in result.stderr
