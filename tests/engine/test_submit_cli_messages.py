"""shaman-submit's answers to the mistakes people make on the command line: each one a
precise line on stderr and an exit status, checked against the real manager."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flamenco_shaman import __version__

SHAMAN_SUBMIT = shutil.which("shaman-submit")


def shaman_submit(*args, env=None, job=False):
    """Run shaman-submit; with `job=False` (our own server has no jobs API) as --no-job."""
    assert SHAMAN_SUBMIT, "shaman-submit is not installed (pip install -e .)"
    return subprocess.run(
        [SHAMAN_SUBMIT, *map(str, args), *([] if job else ["--no-job"])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def error_line(run, status=1):
    """The single line on stderr of a run that failed with `status`."""
    assert run.returncode == status, (run.returncode, run.stderr)
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


@pytest.fixture
def project(tmp_path, blendfiles) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(blendfiles / "image_sequencer.blend", root)
    shutil.copytree(blendfiles / "imgseq", root / "imgseq")
    shutil.copy(blendfiles / "basic_file.blend", root)
    return root


def checkout_of(manager, run) -> Path:
    farm_path = run.stdout.splitlines()[-1]
    return manager.jobs / farm_path.removeprefix("{jobs}/").rsplit("/", 1)[0]


def test_exclude_before_the_blend_leaves_the_blend_and_reports_the_count(manager, project):
    run = shaman_submit(
        "--exclude", "*.png", project / "image_sequencer.blend", "--manager", manager.url
    )
    assert run.returncode == 0, run.stderr
    assert "Excluded 5 files matching --exclude" in run.stdout.splitlines()
    checkout = checkout_of(manager, run)
    assert sorted(p.name for p in checkout.rglob("*") if not p.is_dir()) == [
        "image_sequencer.blend"
    ]
    again = shaman_submit(  # maybe replayed from the trace cache: the same count
        "--exclude", "*.png", project / "image_sequencer.blend", "--manager", manager.url
    )
    assert "Excluded 5 files matching --exclude" in again.stdout.splitlines()


def test_exclude_repeated_takes_one_pattern_per_flag(manager, project):
    run = shaman_submit(
        "--exclude", "*.mkv", "--exclude", "*.png",
        project / "image_sequencer.blend", "--manager", manager.url,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # The five frames, and the video that is missing anyway (so not listed as missing).
    assert run.stdout.splitlines()[0] == "Excluded 6 files matching --exclude"
    assert "Missing assets" not in run.stdout


def test_an_empty_manager_url_is_named(project):
    run = shaman_submit(project / "basic_file.blend", "--manager", "")
    assert error_line(run) == (
        "shaman-submit: error: --manager is empty; give the manager's URL, e.g. http://farm:8080/"
    )


def test_a_manager_url_without_a_host_is_named(project):
    run = shaman_submit(project / "basic_file.blend", "--manager", "http://")
    assert error_line(run) == "shaman-submit: error: the manager URL has no host name: 'http://'"


def test_https_to_a_plain_http_manager_says_so_without_openssl_jargon(manager, project):
    url = manager.url.replace("http://", "https://")
    line = error_line(shaman_submit(project / "basic_file.blend", "--manager", url))
    assert line == (
        f"shaman-submit: error: cannot reach the manager at {url}: the TLS handshake failed; "
        "if the manager serves plain HTTP, use an http:// URL"
    )


def test_a_directory_given_as_the_blend_is_named(manager, project):
    for job in (False, True):  # said before the Manager is asked for its job types
        line = error_line(shaman_submit(project, "--manager", manager.url, job=job))
        assert line == (
            f"shaman-submit: error: {project} is a directory; give the path of a .blend file"
        )


def test_a_missing_project_directory_is_named(manager, project, tmp_path):
    gone = tmp_path / "nonexistent"
    blend = project / "basic_file.blend"
    for job in (False, True):
        run = shaman_submit(blend, "--manager", manager.url, "--project", gone, job=job)
        assert error_line(run) == f"shaman-submit: error: project directory not found: {gone}"


class _OtherJsonApi(BaseHTTPRequestHandler):
    """Some other service: JSON with a "version" to every GET, HTML errors to POSTs."""

    def do_GET(self) -> None:
        body = json.dumps({"version": "2.1", "status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherJsonApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_a_json_server_that_is_not_flamenco_is_named_without_markup(other_server, project):
    line = error_line(shaman_submit(project / "basic_file.blend", "--manager", other_server))
    assert line == (
        f"shaman-submit: error: {other_server} is not a Flamenco manager "
        f"(its {other_server}api/v3/version answer lacks Flamenco's version and name)"
    )


class _LookalikeWithoutShaman(_OtherJsonApi):
    """Answers Flamenco's version and configuration, but any POST with an HTML 501 page."""

    def do_GET(self) -> None:
        body = json.dumps({"version": "3.6", "name": "lookalike", "shamanEnabled": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_an_html_error_page_is_reported_by_its_status_not_its_markup(project):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LookalikeWithoutShaman)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        line = error_line(shaman_submit(project / "basic_file.blend", "--manager", url))
    finally:
        server.shutdown()
        server.server_close()
    assert line == (
        "shaman-submit: error: the manager answered 501 when negotiating which files to "
        "upload: Unsupported method ('POST')"
    )


def test_version_prints_the_version():
    run = shaman_submit("--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"shaman-submit {__version__}"


def test_token_from_the_environment(manager_factory, project):
    manager = manager_factory(token="s3cret")
    run = shaman_submit(
        project / "basic_file.blend", "--manager", manager.url,
        env={"FLAMENCO_SHAMAN_TOKEN": "s3cret"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    refused = shaman_submit(project / "basic_file.blend", "--manager", manager.url)
    assert "refused access (401); check the token" in error_line(refused)


def test_token_from_a_file(manager_factory, project, tmp_path):
    manager = manager_factory(token="s3cret")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    run = shaman_submit(
        project / "basic_file.blend", "--manager", manager.url, "--token-file", token_file
    )
    assert run.returncode == 0, run.stderr
    assert "s3cret" not in run.stdout + run.stderr


def test_a_missing_token_file_is_named(manager, project, tmp_path):
    gone = tmp_path / "no-token"
    run = shaman_submit(
        project / "basic_file.blend", "--manager", manager.url, "--token-file", gone
    )
    line = error_line(run)
    assert line == (
        f"shaman-submit: error: cannot read the token file {gone}: No such file or directory"
    )
