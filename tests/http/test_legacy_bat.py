"""Blender Asset Tracer's own `bat pack shaman+http://...` against the real manager.

The real `bat` command runs as a subprocess against the manager on a loopback port, on
the shared real blend files and on a project generated here with real Blender (bpy).
What a farm worker would read is checked through the checkout's symlinks, byte for byte.
"""

from __future__ import annotations

import filecmp
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from helpers import stored_files
from test_legacy_http import LogWatch, StalledUpload, wait_until_uploading

LEGACY_LOGGER = "manager_plugin.http.legacy"
BAT_TIMEOUT = 120


# ---------------------------------------------------------------------------------------------
# Harness


def bat_executable() -> str:
    """The `bat` console script of this interpreter (not a pyenv shim or another Python's)."""
    beside = Path(sys.executable).with_name("bat")
    if beside.exists():
        return str(beside)
    found = shutil.which("bat")
    assert found, "the `bat` command (blender-asset-tracer) is not installed"
    return found


@dataclass
class BatRun:
    returncode: int
    output: str

    def assert_ok(self) -> None:
        assert self.returncode == 0, self.output


def bat_pack(
    project: Path,
    blend: Path,
    target: str,
    home: Path,
    *,
    token: str | None = None,
) -> BatRun:
    """Run `bat -v pack -p PROJECT BLEND TARGET` and return its exit code and output.

    HOME points at a test directory because BAT caches checksums in ~/.cache.
    """
    env = {k: v for k, v in os.environ.items() if k != "SHAMAN_JWT_TOKEN"}
    env["HOME"] = str(home)
    if token is not None:
        env["SHAMAN_JWT_TOKEN"] = token
    proc = subprocess.run(
        [bat_executable(), "-v", "pack", "-p", str(project), str(blend), target],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=BAT_TIMEOUT,
    )
    return BatRun(proc.returncode, proc.stdout + proc.stderr)


def shaman_target(url: str, checkout_id: str, base_path: str = "") -> str:
    """`shaman+http://HOST:PORT/BASE/#ID` for a manager URL like `http://HOST:PORT/`."""
    assert url.startswith("http://") and url.endswith("/")
    base = f"{base_path.strip('/')}/" if base_path.strip("/") else ""
    return f"shaman+{url}{base}#{checkout_id}"


def checkout_dirs(jobs: Path, checkout_id: str) -> list[Path]:
    return sorted(p for p in jobs.glob(f"{checkout_id}*") if p.is_dir())


def only_checkout(jobs: Path, checkout_id: str) -> Path:
    [found] = checkout_dirs(jobs, checkout_id)
    return found


def files_by_path(root: Path) -> dict[str, Path]:
    """Every file below `root` by its relative POSIX path, following symlinks."""
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def assert_checkout_matches(checkout: Path, expected: dict[str, Path]) -> None:
    """The checkout holds these paths, each reading exactly like its source file."""
    for rel, source in expected.items():
        farm_path = checkout / rel
        assert farm_path.is_file(), f"{rel} missing from checkout {checkout}"
        assert filecmp.cmp(farm_path, source, shallow=False), f"{rel} differs from {source}"


def stored_blobs(store: Path) -> set[Path]:
    """What the store holds, one entry per content: its path without the suffix, so a
    `.pending` a checkout made durable (renamed to `.blob`) is the same entry."""
    return {p.with_suffix("") for p in stored_files(store)}


def uploads_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Paths of the legacy file uploads the server logged (message starts 'upload')."""
    return [
        str(getattr(r, "shaman_path", ""))
        for r in caplog.records
        if r.name == LEGACY_LOGGER and r.getMessage().startswith("upload ")
    ]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Projects


@pytest.fixture
def shared_blends(tmp_path: Path, blendfiles: Path) -> Path:
    """A writable copy of the shared blend files (the originals are read-only)."""
    copy = tmp_path / "blendfiles"
    shutil.copytree(blendfiles, copy)
    return copy


@pytest.fixture
def bat_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


_GENERATE_BLEND = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import bpy

    blend, library, *images = sys.argv[1:]
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.preferences.filepaths.save_version = 0
    # Saved once first so that '//' relative paths have a base to be relative to.
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    for rel in images:
        image = bpy.data.images.new(Path(rel).stem, 4, 4)
        image.source = "FILE"
        image.filepath = rel
        image.use_fake_user = True
    with bpy.data.libraries.load(library, link=True, relative=True) as (src, dst):
        dst.objects = src.objects[:1]
    for ob in dst.objects:
        bpy.context.scene.collection.objects.link(ob)
    bpy.ops.wm.save_as_mainfile(filepath=blend, relative_remap=False)
    """
)


@dataclass(frozen=True)
class Project:
    root: Path
    blend: Path
    # Every file `bat pack` must put in the checkout, by its path in the checkout.
    files: dict[str, Path]


@pytest.fixture(scope="module")
def generated_project(tmp_path_factory: pytest.TempPathFactory, blendfiles: Path) -> Project:
    """A project made with real Blender: a scene in a directory with a space and a
    non-ASCII name, linking a library and using textures with awkward names, two of
    them with the same bytes, one empty and one of a few MiB.

    Non-ASCII names stay within Latin-1: BAT 1.x sends each upload's path in an HTTP
    header through `requests`, which cannot encode other characters (a client limit;
    the server side of such paths is tested in test_legacy_http)."""
    root = tmp_path_factory.mktemp("generated") / "My Project ñ"
    textures = {
        "textures/wood grain.png": os.urandom(3 * 1024 * 1024 + 17),
        "textures/ñandú.png": b"\x89PNG not really an image, BAT does not care",
        "textures/copy of ñandú.png": b"\x89PNG not really an image, BAT does not care",
        "textures/empty.png": b"",
    }
    for rel, data in textures.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    library = root / "libs" / "basic_file.blend"
    library.parent.mkdir(parents=True)
    shutil.copyfile(blendfiles / "basic_file.blend", library)
    blend = root / "scenes" / "shot 01" / "scène.blend"
    blend.parent.mkdir(parents=True)
    images = [f"//../../{rel}" for rel in textures]
    subprocess.run(
        [sys.executable, "-c", _GENERATE_BLEND, str(blend), str(library), *images],
        check=True,
        capture_output=True,
        timeout=120,
    )
    files = {rel: root / rel for rel in textures}
    files["libs/basic_file.blend"] = library
    files["scenes/shot 01/scène.blend"] = blend
    return Project(root, blend, files)


# ---------------------------------------------------------------------------------------------
# Tests


def test_bat_pack_of_linked_cube_checks_out_both_blend_files_byte_identical(
    manager, shared_blends, bat_home
):
    run = bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "legacy-job"),
        bat_home,
    )
    run.assert_ok()
    checkout = only_checkout(manager.jobs, "legacy-job")
    assert_checkout_matches(
        checkout,
        {name: shared_blends / name for name in ("linked_cube.blend", "basic_file.blend")},
    )
    # BAT adds its own pack-info.txt naming the blend file to open.
    assert "linked_cube.blend" in (checkout / "pack-info.txt").read_text()


def test_checkout_files_are_symlinks_into_the_file_store(manager, shared_blends, bat_home):
    bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "links"),
        bat_home,
    ).assert_ok()
    blend = only_checkout(manager.jobs, "links") / "linked_cube.blend"
    assert blend.is_symlink()
    assert blend.resolve().is_relative_to(manager.store.resolve())


@pytest.mark.blender
def test_bat_pack_of_generated_project_checks_out_every_file_byte_identical(
    manager, generated_project, bat_home
):
    bat_pack(
        generated_project.root,
        generated_project.blend,
        shaman_target(manager.url, "generated/shot 01/ñ-job"),
        bat_home,
    ).assert_ok()
    checkout = only_checkout(manager.jobs / "generated" / "shot 01", "ñ-job")
    assert_checkout_matches(checkout, generated_project.files)
    expected = set(generated_project.files) | {"pack-info.txt"}
    assert set(files_by_path(checkout)) == expected


@pytest.mark.blender
def test_same_content_under_two_paths_is_uploaded_once(
    manager, generated_project, bat_home, caplog
):
    caplog.set_level(logging.INFO, logger=LEGACY_LOGGER)
    bat_pack(
        generated_project.root,
        generated_project.blend,
        shaman_target(manager.url, "dedupe"),
        bat_home,
    ).assert_ok()
    uploaded = uploads_logged(caplog)
    twins = {"textures/ñandú.png", "textures/copy of ñandú.png"}
    assert len(twins & set(uploaded)) == 1, uploaded
    assert len(uploaded) == len(generated_project.files)  # 6 files + pack-info, less a twin
    assert len(stored_blobs(manager.store)) == len(uploaded)


@pytest.mark.blender
def test_second_bat_pack_of_the_same_project_uploads_nothing(
    manager, generated_project, bat_home, caplog
):
    def pack(checkout_id: str) -> BatRun:
        return bat_pack(
            generated_project.root,
            generated_project.blend,
            shaman_target(manager.url, checkout_id),
            bat_home,
        )

    pack("first").assert_ok()
    blobs_after_first = stored_blobs(manager.store)
    caplog.set_level(logging.INFO, logger=LEGACY_LOGGER)
    caplog.clear()
    second = pack("second")
    second.assert_ok()
    assert uploads_logged(caplog) == []
    assert "Going to upload" not in second.output
    assert stored_blobs(manager.store) == blobs_after_first
    assert_checkout_matches(only_checkout(manager.jobs, "second"), generated_project.files)


@pytest.mark.blender
def test_bat_pack_while_another_client_uploads_the_same_files_still_checks_out(
    manager, generated_project, bat_home
):
    # Two files are mid-upload by someone else: BAT defers one of them (and never
    # retries it), so the checkout has to wait for the other client to finish.
    shared = ["textures/wood grain.png", "libs/basic_file.blend"]
    stalled = [
        StalledUpload(manager.url, generated_project.files[rel].read_bytes()) for rel in shared
    ]
    wait_until_uploading(manager.store)
    runs: list[BatRun] = []
    # The wait is the service's policy (`checkout_when_uploaded`), so it logs there.
    with LogWatch("still being uploaded", "manager_plugin.service") as watch:
        packing = threading.Thread(
            target=lambda: runs.append(
                bat_pack(
                    generated_project.root,
                    generated_project.blend,
                    shaman_target(manager.url, "concurrent"),
                    bat_home,
                )
            )
        )
        packing.start()
        while packing.is_alive() and not watch.seen.wait(0.1):
            pass
        assert watch.seen.is_set(), runs[0].output if runs else "bat pack hung"
        for upload in stalled:
            upload.finish()
        packing.join(BAT_TIMEOUT)
    runs[0].assert_ok()
    assert_checkout_matches(only_checkout(manager.jobs, "concurrent"), generated_project.files)


def test_same_checkout_id_twice_gets_a_second_directory(manager, shared_blends, bat_home):
    for _ in range(2):
        bat_pack(
            shared_blends,
            shared_blends / "linked_cube.blend",
            shaman_target(manager.url, "again"),
            bat_home,
        ).assert_ok()
    first, second = checkout_dirs(manager.jobs, "again")
    assert first.name == "again"
    assert second.name.startswith("again-")
    assert filecmp.cmp(first / "linked_cube.blend", second / "linked_cube.blend", shallow=False)


def upload_with_v3_api(url: str, root: Path, token: str | None = None) -> None:
    """Upload every file of a project through the Flamenco 3 JSON API, as plain HTTP."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path in files_by_path(root).values():
        with path.open("rb") as body:
            resp = requests.post(
                f"{url}api/v3/shaman/files/{sha256_of(path)}/{path.stat().st_size}",
                data=body,
                headers={**headers, "Content-Type": "application/octet-stream"},
                timeout=60,
            )
        assert resp.status_code in (204, 208), resp.text


@pytest.mark.blender
def test_files_uploaded_through_the_v3_api_are_not_uploaded_again_by_bat_pack(
    manager, generated_project, bat_home, caplog
):
    upload_with_v3_api(manager.url, generated_project.root)
    blobs_before = stored_blobs(manager.store)
    # Small v3 uploads wait as .pending; bat-pack's checkout must make them durable.
    assert any(p.suffix == ".pending" for p in stored_files(manager.store))
    caplog.set_level(logging.INFO, logger=LEGACY_LOGGER)
    bat_pack(
        generated_project.root,
        generated_project.blend,
        shaman_target(manager.url, "after-v3"),
        bat_home,
    ).assert_ok()
    # Only BAT's own pack-info.txt is new to the server.
    assert uploads_logged(caplog) == ["pack-info.txt"]
    assert len(stored_blobs(manager.store) - blobs_before) == 1
    checkout = only_checkout(manager.jobs, "after-v3")
    assert_checkout_matches(checkout, generated_project.files)
    linked = {(checkout / rel).resolve() for rel in generated_project.files}
    assert all(p.suffix == ".blob" for p in linked)
    assert not {p.with_suffix(".pending") for p in linked} & set(stored_files(manager.store))


def shaman_submit(project: Project, url: str, checkout_path: str, home: Path) -> None:
    """Upload through this project's own Flamenco 3 client, `shaman-submit --no-job` (our
    server alone has no jobs API)."""
    script = Path(sys.executable).with_name("shaman-submit")
    command = (
        [str(script)] if script.exists() else [shutil.which("shaman-submit") or "shaman-submit"]
    )
    proc = subprocess.run(
        [*command, "--manager", url, "--project", str(project.root)]
        + ["--checkout-path", checkout_path, "--no-job", str(project.blend)],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=BAT_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.blender
def test_project_submitted_with_shaman_submit_shares_blobs_with_bat_pack(
    manager, generated_project, bat_home, caplog
):
    shaman_submit(generated_project, manager.url, "submitted", bat_home)
    assert_checkout_matches(only_checkout(manager.jobs, "submitted"), generated_project.files)
    blobs_before = stored_blobs(manager.store)
    caplog.set_level(logging.INFO, logger=LEGACY_LOGGER)
    bat_pack(
        generated_project.root,
        generated_project.blend,
        shaman_target(manager.url, "packed"),
        bat_home,
    ).assert_ok()
    assert uploads_logged(caplog) == ["pack-info.txt"]
    assert len(stored_blobs(manager.store) - blobs_before) == 1
    packed = only_checkout(manager.jobs, "packed")
    for rel in generated_project.files:
        assert (packed / rel).resolve() == (manager.jobs / "submitted" / rel).resolve()


@pytest.mark.blender
def test_files_uploaded_by_bat_pack_are_stored_for_v3_clients(manager, generated_project, bat_home):
    bat_pack(
        generated_project.root,
        generated_project.blend,
        shaman_target(manager.url, "for-v3"),
        bat_home,
    ).assert_ok()
    for path in generated_project.files.values():
        resp = requests.get(
            f"{manager.url}api/v3/shaman/files/{sha256_of(path)}/{path.stat().st_size}",
            timeout=10,
        )
        assert resp.json() == {"status": "stored"}, path


def test_bat_pack_works_under_the_configured_base_path(manager_factory, shared_blends, bat_home):
    manager = manager_factory(legacy_base_path="/studio/shaman/")
    bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "based", base_path="studio/shaman"),
        bat_home,
    ).assert_ok()
    assert_checkout_matches(
        only_checkout(manager.jobs, "based"),
        {"linked_cube.blend": shared_blends / "linked_cube.blend"},
    )


def test_bat_pack_with_the_shared_token_in_shaman_jwt_token_succeeds(
    manager_factory, shared_blends, bat_home
):
    manager = manager_factory(token="s3cret-farm-token")
    bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "with-token"),
        bat_home,
        token="s3cret-farm-token",
    ).assert_ok()
    assert only_checkout(manager.jobs, "with-token")


def test_bat_pack_without_token_on_a_token_protected_server_says_to_set_shaman_jwt_token(
    manager_factory, shared_blends, bat_home
):
    manager = manager_factory(token="s3cret-farm-token")
    run = bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "no-token"),
        bat_home,
    )
    assert run.returncode != 0
    assert "403" in run.output and "SHAMAN_JWT_TOKEN" in run.output
    assert "s3cret-farm-token" not in run.output
    assert checkout_dirs(manager.jobs, "no-token") == []


def test_bat_pack_with_a_wrong_token_is_refused_with_401(manager_factory, shared_blends, bat_home):
    manager = manager_factory(token="s3cret-farm-token")
    run = bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "wrong-token"),
        bat_home,
        token="guess",
    )
    assert run.returncode != 0
    assert "code 401" in run.output and "SHAMAN_JWT_TOKEN" in run.output
    assert stored_blobs(manager.store) == set()


def test_bat_pack_to_a_manager_with_shaman_disabled_fails_with_503(
    manager_factory, shared_blends, bat_home
):
    manager = manager_factory(shaman_enabled=False)
    run = bat_pack(
        shared_blends,
        shared_blends / "linked_cube.blend",
        shaman_target(manager.url, "disabled"),
        bat_home,
    )
    assert run.returncode != 0
    assert "503" in run.output and "disabled" in run.output
