"""Gateway mode's configuration: one flamenco-manager.yaml for both processes, and the
setups that are refused at startup (exit 2, the key and the fix named)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from flamenco_standin import FlamencoStandin

from manager_plugin.config import Config, ConfigError, load_config
from manager_plugin.gateway_config import configure_gateway, read_gateway_keys

UPSTREAM = "http://127.0.0.1:8081"

# The layout the README documents: Flamenco inside, the gateway on the public port.
GOOD = """\
_meta:
  version: 3
manager_name: Flamenco
listen: 127.0.0.1:8081
shared_storage_path: {storage}
shaman:
  enabled: true
  garbageCollect:
    period: 0
    maxAge: 240h
  gateway:
    upstream: http://127.0.0.1:8081
    listen: ":8080"
    readTimeout: 2m
    garbageCollect:
      period: 6h
"""

# The same file after Flamenco's setup wizard or settings page saved it (as Flamenco
# 3.9-beta1 writes it after a PUT /api/v3/configuration/file): its own struct marshalled,
# so shaman.gateway is gone and durations are spelt Go's way.
REWRITTEN_BY_FLAMENCO = """\
# Configuration file for Flamenco.
# For an explanation of the fields, refer to the Settings tab in the Manager web interface.
#
# NOTE: this file will be overwritten by Flamenco Manager's web-based configuration system.
#
# This file was written on 2026-11-29 21:59:06 +00:00 by Flamenco 3.9-beta1

_meta:
  version: 3
manager_name: Flamenco
database: flamenco-manager.sqlite
database_check_period: 10m0s
listen: 127.0.0.1:8081
autodiscoverable: false
local_manager_storage_path: ./flamenco-manager-storage
shared_storage_path: {storage}
shaman:
  enabled: true
  garbageCollect:
    period: 0s
    maxAge: 240h0m0s
task_timeout: 10m0s
worker_timeout: 1m0s
blocklist_threshold: 3
task_fail_after_softfail_count: 3
mqtt:
  client:
    enabled: false
    broker: ""
    clientID: flamenco
    topic_prefix: flamenco
    username: ""
    password: ""
variables:
  blender:
    values:
    - audience: all
      platform: linux
      value: blender
  blenderArgs:
    values:
    - audience: all
      platform: all
      value: -b -y
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flamenco-manager.yaml"
    path.write_text(text.format(storage=tmp_path / "storage"), encoding="utf-8")
    return path


def gateway_config(path: Path, **arguments: str) -> Config:
    """What `serve --config path [--upstream ...] [--listen ...]` configures."""
    config = load_config(path)
    if arguments.get("listen"):
        config.listen = arguments["listen"]
    configure_gateway(config, read_gateway_keys(path), **arguments)
    return config


def test_the_documented_file_configures_the_gateway_from_its_own_keys(tmp_path):
    config = gateway_config(write(tmp_path, GOOD))
    assert config.gateway is not None
    assert config.gateway.upstream == UPSTREAM
    assert config.gateway.read_timeout == 120
    assert config.listen == ":8080"  # shaman.gateway.listen, not Flamenco's listen
    assert config.gc_period == timedelta(hours=6)  # ours; Flamenco's period 0 is its own
    assert config.gc_max_age == timedelta(hours=240)  # Flamenco's key, as no override
    assert config.storage_path == tmp_path / "storage"


def test_the_file_rewritten_by_flamenco_works_with_the_command_line(tmp_path):
    config = gateway_config(
        write(tmp_path, REWRITTEN_BY_FLAMENCO), upstream=UPSTREAM + "/", listen=":8080"
    )
    assert config.gateway is not None and config.gateway.upstream == UPSTREAM
    assert config.listen == ":8080"
    assert config.gc_period == timedelta(hours=24)  # our default once our keys are gone
    assert config.gc_max_age == timedelta(hours=240)


def test_the_rewritten_file_alone_is_standalone_mode(tmp_path):
    config = gateway_config(write(tmp_path, REWRITTEN_BY_FLAMENCO))
    assert config.gateway is None


def test_the_command_line_wins_over_the_file(tmp_path):
    config = gateway_config(
        write(tmp_path, GOOD), upstream="http://10.0.0.5:9000", listen="0.0.0.0:9090"
    )
    assert config.gateway is not None and config.gateway.upstream == "http://10.0.0.5:9000"
    assert config.listen == "0.0.0.0:9090"


def test_a_ten_year_max_age_makes_flamencos_collector_harmless(tmp_path):
    text = GOOD.replace("period: 0\n", "period: 24h\n").replace("maxAge: 240h", "maxAge: 87600h")
    config = gateway_config(write(tmp_path, text + "      maxAge: 744h\n"))
    assert config.gc_max_age == timedelta(hours=744)  # ours: shaman.gateway...maxAge


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (("    period: 0\n", ""), ["shaman.garbageCollect.period", "not set", "period: 0"]),
        (("    period: 0\n", "    period: 24h\n"), ["garbageCollect.period (line 9) is 24h"]),
        (("    period: 0\n", "    period: 1s\n"), ["storage lock", "period: 0"]),
        (("  enabled: true", "  enabled: false"), ["shaman.enabled (line 7)", "true"]),
        (("listen: 127.0.0.1:8081", "listen: :8080"), ["listen (line 4)", "127.0.0.1:8081"]),
        (('    listen: ":8080"\n', ""), ["--listen", "shaman.gateway.listen"]),
        (("upstream: http://127.0.0.1:8081", "upstream: ftp://x"), ["shaman.gateway.upstream"]),
        (("upstream: http://127.0.0.1:8081", "upstream: http://localhost:8080"), ["own address"]),
        (("readTimeout: 2m", "readTimeout: 0s"), ["shaman.gateway.readTimeout", "positive"]),
    ],
)
def test_setups_that_cannot_work_or_would_race_are_refused(tmp_path, change, words):
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as refused:
        gateway_config(write(tmp_path, GOOD.replace(old, new)))
    for word in words:
        assert word in str(refused.value)


def test_without_a_config_file_the_collector_check_is_a_warning(tmp_path, caplog):
    config = Config(storage_path=tmp_path)
    configure_gateway(config, None, upstream=UPSTREAM, listen="127.0.0.1:8080")
    assert config.gateway is not None
    assert "shaman.garbageCollect.period" in caplog.text


def test_a_token_in_gateway_mode_is_warned_about(tmp_path, caplog):
    config = gateway_config(
        write(tmp_path, GOOD.replace("  enabled: true\n", "  enabled: true\n  token: s3cret\n"))
    )
    assert config.gateway is not None
    assert "Flamenco's own add-on sends no token" in caplog.text


# --- the command ---------------------------------------------------------------------------


def serve(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ}
    return subprocess.Popen(
        [sys.executable, "-m", "manager_plugin", "serve", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_refuses_a_racing_collector_with_exit_2_and_one_line(tmp_path):
    path = write(tmp_path, GOOD.replace("    period: 0\n", "    period: 24h\n"))
    proc = serve("--config", str(path), cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert stderr.startswith("shaman-manager: config error: ")
    assert "shaman.garbageCollect.period: 0" in stderr


def test_serve_upstream_fronts_the_manager_with_the_rewritten_file(
    tmp_path, flamenco: FlamencoStandin
):
    path = write(tmp_path, REWRITTEN_BY_FLAMENCO)
    path.write_text(path.read_text().replace(str(tmp_path / "storage"), str(flamenco.storage)))
    proc = serve(
        "--config", str(path), "--upstream", flamenco.url, "--listen", "127.0.0.1:0", cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.rstrip().endswith(f"upstream={flamenco.url.rstrip('/')}"), line
        url = line.split()[3]
        assert requests.get(url + "api/v3/version").json()["name"] == flamenco.state.name
        sha = "0" * 64
        assert requests.get(url + f"api/v3/shaman/files/{sha}/1").json() == {"status": "unknown"}
        assert flamenco.shaman_requests() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


# --- what the running Manager says about its storage ------------------------------------------


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> str:
    for _ in range(200):
        if text in caplog.text:
            break
        time.sleep(0.05)
    return caplog.text


def test_an_upstream_with_its_shaman_off_is_logged_as_an_error(gateway_factory, caplog):
    caplog.set_level(logging.INFO, logger="manager_plugin.http.upstream_check")
    gateway_factory(shaman_enabled=False)
    logged = wait_for_log(caplog, "Shaman is off")
    assert "Shaman is off" in logged and "shaman.enabled: true" in logged


def test_an_upstream_with_another_storage_is_logged_as_an_error(gateway_factory, caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="manager_plugin.http.upstream_check")
    gateway = gateway_factory(storage=tmp_path / "elsewhere")
    logged = wait_for_log(caplog, "jobs directory is")
    assert f"jobs directory is '{gateway.flamenco.jobs}'" in logged
    assert str(tmp_path / "elsewhere" / "jobs") in logged


def test_an_agreeing_upstream_is_logged_as_such(gateway_factory, caplog):
    caplog.set_level(logging.INFO, logger="manager_plugin.http.upstream_check")
    gateway = gateway_factory()
    logged = wait_for_log(caplog, "where our checkouts are")
    assert f"renders from {gateway.storage / 'jobs'}" in logged
    assert "ERROR" not in [record.levelname for record in caplog.records]


def test_the_gc_command_keeps_blobs_for_the_gateways_max_age(tmp_path):
    """A blob unused for 300 h: past Flamenco's maxAge (240 h, unused by Flamenco as its
    collector is off), within the gateway's (1000 h), so a manual sweep keeps it."""
    path = write(tmp_path, GOOD + "      maxAge: 1000h\n")
    blob = tmp_path / "storage/file-store/stored/ab" / ("c" * 62) / "3.blob"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"abc")
    old = time.time() - 300 * 3600
    os.utime(blob, (old, old))
    gc = [sys.executable, "-m", "manager_plugin", "gc", "--config", str(path), "--dry-run"]
    kept = subprocess.run(gc, capture_output=True, text=True, timeout=60)
    assert kept.returncode == 0, kept.stderr
    assert "would delete 0 blobs" in kept.stdout
    path.write_text(path.read_text().replace("      maxAge: 1000h\n", ""))
    swept = subprocess.run(gc, capture_output=True, text=True, timeout=60)
    assert "would delete 1 blobs" in swept.stdout
