#!/usr/bin/env python3
"""Builds the Blender add-on zip: `dist/flamenco_shaman-<version>.zip`.

The zip holds one top-level folder, `flamenco_shaman/`: the add-on package with its
`blender_manifest.toml` (extension install, Blender 4.2+) and `bl_info` (legacy
install), plus both Blender Asset Tracer wheels in `wheels/` (1.x for Blenders on
Python 3.11, 2.x for Python 3.13+), so the add-on works offline.

Usage: python tools/build_addon_zip.py [--wheel-dir DIR] [--out DIR]

Without --wheel-dir the wheels are fetched with pip into a temporary directory. The
output depends only on the source files and the wheels: entries are sorted and carry
fixed timestamps (1980-01-01, or SOURCE_DATE_EPOCH) and permissions, so the same
inputs give a byte-identical zip. Stdlib only.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO / "addon" / "flamenco_shaman"
PACKAGE_NAME = "flamenco_shaman"

# The one place the bundled BAT versions are pinned: (major, python version, requirement).
BAT_WHEELS = (
    (1, "3.11", "blender-asset-tracer==1.23"),
    (2, "3.13", "blender-asset-tracer==2.2.1"),
)

MANIFEST_REQUIRED = (
    "schema_version",
    "id",
    "version",
    "name",
    "tagline",
    "maintainer",
    "type",
    "blender_version_min",
    "license",
)
# Sources only: caches, compiled files and wheels dropped into the source tree by hand
# must not change the output.
EXCLUDED_DIRS = {"__pycache__", "wheels", ".pytest_cache", ".ruff_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".whl", ".zip", ".blend1"}
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o644


class BuildError(Exception):
    """The zip can't be built or is wrong; str() says why in one line."""


@dataclass(frozen=True)
class Versions:
    pyproject: str
    package: str
    bl_info: str
    manifest: str


def read_versions(package_dir: Path, pyproject: Path) -> Versions:
    """The version as written in each of the four places that must agree."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    init_source = (package_dir / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', init_source, re.MULTILINE)
    if not match:
        raise BuildError(f"no __version__ in {package_dir / '__init__.py'}")
    bl_info = _literal_assignment(init_source, "bl_info")
    if not isinstance(bl_info, dict) or "version" not in bl_info:
        raise BuildError(f"no bl_info with a version in {package_dir / '__init__.py'}")
    manifest = load_manifest((package_dir / "blender_manifest.toml").read_bytes())
    return Versions(
        pyproject=project["version"],
        package=match.group(1),
        bl_info=".".join(str(part) for part in bl_info["version"]),
        manifest=str(manifest.get("version")),
    )


def _literal_assignment(source: str, name: str) -> object:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(
                isinstance(t, ast.Name) and t.id == name for t in targets
            ):
                return ast.literal_eval(node.value)
    return None


def check_versions(versions: Versions) -> str:
    """The one version everything agrees on; BuildError naming the odd one out otherwise."""
    values = {
        "pyproject.toml": versions.pyproject,
        "__version__": versions.package,
        "bl_info": versions.bl_info,
        "blender_manifest.toml": versions.manifest,
    }
    if len(set(values.values())) != 1:
        listed = ", ".join(f"{where}={value}" for where, value in values.items())
        raise BuildError(f"versions disagree: {listed}")
    return versions.pyproject


def load_manifest(data: bytes) -> dict:
    """Parse and check blender_manifest.toml the way Blender's installer needs it."""
    try:
        manifest = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as ex:
        raise BuildError(f"blender_manifest.toml is not valid TOML: {ex}") from ex
    missing = [key for key in MANIFEST_REQUIRED if key not in manifest]
    if missing:
        raise BuildError(f"blender_manifest.toml lacks {', '.join(missing)}")
    if manifest["id"] != PACKAGE_NAME or manifest["type"] != "add-on":
        raise BuildError(f"blender_manifest.toml must say id={PACKAGE_NAME!r}, type='add-on'")
    if any("blender_asset_tracer" in str(w) for w in manifest.get("wheels", ())):
        # Blender would install listed wheels into a site-packages shared by every
        # extension; bat_import.py loads the bundled ones privately instead.
        raise BuildError("blender_manifest.toml must not list the BAT wheels under `wheels`")
    return manifest


def fetch_wheels(dest: Path) -> None:
    """Download the pinned BAT wheels with pip (needs network access to PyPI)."""
    for _major, python_version, requirement in BAT_WHEELS:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python_version,
            "--dest",
            str(dest),
            requirement,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise BuildError(f"pip could not download {requirement}: {' '.join(tail)}")


def select_wheels(wheel_dir: Path) -> list[Path]:
    """The pinned BAT wheel for each major version, found in `wheel_dir`."""
    chosen = []
    for _major, _python, requirement in BAT_WHEELS:
        version = requirement.split("==", 1)[1]
        wheel = wheel_dir / f"blender_asset_tracer-{version}-py3-none-any.whl"
        if not wheel.is_file():
            raise BuildError(f"{wheel.name} not found in {wheel_dir} (needed for {requirement})")
        chosen.append(wheel)
    return chosen


def package_files(package_dir: Path) -> list[tuple[str, Path]]:
    """(path inside the package, file on disk) for every source file, sorted."""
    files = []
    for path in package_dir.rglob("*"):
        relative = path.relative_to(package_dir)
        if path.is_dir() or set(relative.parts[:-1]) & EXCLUDED_DIRS:
            continue
        if relative.parts[0] in EXCLUDED_DIRS or path.suffix in EXCLUDED_SUFFIXES:
            continue
        files.append((relative.as_posix(), path))
    return sorted(files)


def zip_timestamp() -> tuple[int, int, int, int, int, int]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return ZIP_EPOCH
    stamp = time.gmtime(max(int(epoch), 315532800))  # zip can't store dates before 1980
    return stamp[:6]


def write_zip(out: Path, entries: list[tuple[str, Path]]) -> None:
    """Write entries (sorted by name) with fixed metadata; atomically replaces `out`."""
    date_time = zip_timestamp()
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, source in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = (0o100000 | FILE_MODE) << 16
                info.create_system = 3  # Unix, so the mode above is honoured everywhere
                archive.writestr(info, source.read_bytes(), compresslevel=9)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def validate_zip(zip_path: Path, version: str) -> None:
    """Check the built zip itself: layout, manifest, version, wheels, importability."""
    prefix = f"{PACKAGE_NAME}/"
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        outside = [n for n in names if not n.startswith(prefix)]
        if outside:
            raise BuildError(f"entries outside {prefix}: {outside[:3]}")
        if any("__pycache__" in n or n.endswith(".pyc") for n in names):
            raise BuildError("zip contains Python caches")
        for required in ("__init__.py", "blender_manifest.toml", "bat_import.py"):
            if prefix + required not in names:
                raise BuildError(f"zip lacks {prefix}{required}")
        manifest = load_manifest(archive.read(prefix + "blender_manifest.toml"))
        if manifest["version"] != version:
            raise BuildError(f"manifest in zip says {manifest['version']}, expected {version}")
        for major, _python, _req in BAT_WHEELS:
            pattern = re.compile(rf"^{prefix}wheels/blender_asset_tracer-{major}\.[^/]*\.whl$")
            if not any(pattern.match(n) for n in names):
                raise BuildError(f"zip lacks a BAT {major}.x wheel in {prefix}wheels/")
        with tempfile.TemporaryDirectory(prefix="flamenco_shaman-check-") as tmp:
            archive.extractall(tmp)
            _check_imports(Path(tmp), version)


# Run in a fresh interpreter: imports the package from the extracted zip (not the source
# tree), checks its version, that the protocol rules the engine shares with the manager
# come with it (and nothing of the manager), and that it loads BAT from its own wheels.
_IMPORT_CHECK = """
import sys
root, version = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
import flamenco_shaman, flamenco_shaman.engine, flamenco_shaman.engine.checkout_path
import flamenco_shaman.protocol
assert flamenco_shaman.protocol.__file__.startswith(root), flamenco_shaman.protocol.__file__
assert 'manager_plugin' not in sys.modules, 'the add-on imports the manager'
from flamenco_shaman import bat_import
assert flamenco_shaman.__file__.startswith(root), flamenco_shaman.__file__
assert flamenco_shaman.__version__ == version, flamenco_shaman.__version__
bat = bat_import.import_bat()
assert bat.__file__.startswith(root), bat.__file__
assert 'blender_asset_tracer' not in sys.modules or sys.modules['blender_asset_tracer'] is not bat
"""


def _check_imports(root: Path, version: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, str(root.resolve()), version],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise BuildError(f"the built package does not import: {lines[-1] if lines else '?'}")


def build(out_dir: Path, wheel_dir: Path | None, package_dir: Path = PACKAGE_DIR) -> Path:
    """Build, validate and return the zip; raises BuildError with a one-line reason."""
    version = check_versions(read_versions(package_dir, REPO / "pyproject.toml"))
    with tempfile.TemporaryDirectory(prefix="flamenco_shaman-wheels-") as fetched:
        if wheel_dir is None:
            wheel_dir = Path(fetched)
            fetch_wheels(wheel_dir)
        wheels = select_wheels(wheel_dir)
        prefix = f"{PACKAGE_NAME}/"
        entries = [(prefix + name, path) for name, path in package_files(package_dir)]
        entries += [(f"{prefix}wheels/{wheel.name}", wheel) for wheel in wheels]
        out_dir.mkdir(parents=True, exist_ok=True)
        zip_path = out_dir / f"{PACKAGE_NAME}-{version}.zip"
        write_zip(zip_path, entries)
    try:
        validate_zip(zip_path, version)
    except BuildError:
        zip_path.unlink(missing_ok=True)
        raise
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wheel-dir",
        type=Path,
        help="take the BAT wheels from this directory instead of downloading them (offline)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output directory")
    args = parser.parse_args(argv)
    try:
        zip_path = build(args.out, args.wheel_dir)
    except BuildError as ex:
        print(f"build_addon_zip: error: {ex}", file=sys.stderr)
        return 1
    print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
