"""The engine is importable anywhere: without bpy, and without loading BAT until it traces."""

import subprocess
import sys


def test_engine_imports_without_bpy_or_bat():
    code = (
        "import sys\n"
        "from flamenco_shaman.engine import (SubmitOptions, Submission, Progress, SubmitResult,"
        " SubmitError, SubmitCancelled, ManagerClient)\n"
        "import flamenco_shaman.cli\n"
        "assert 'bpy' not in sys.modules\n"
        "assert 'blender_asset_tracer' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_api_has_the_agreed_fields():
    from dataclasses import fields

    from flamenco_shaman.engine import Progress, SubmitOptions, SubmitResult

    assert [f.name for f in fields(Progress)] == [
        "phase",
        "files_done",
        "files_total",
        "bytes_done",
        "bytes_total",
        "current_file",
    ]
    assert {f.name for f in fields(SubmitResult)} >= {
        "checkout_path",
        "farm_blend_path",
        "missing_files",
        "files_total",
        "bytes_total",
        "files_uploaded",
        "bytes_uploaded",
    }
    opts = SubmitOptions("scene.blend", "http://farm:8080/")
    assert (opts.project_root, opts.checkout_path, opts.relative_only) == (None, None, False)
    assert (tuple(opts.exclude), opts.hash_workers, opts.uploads, opts.token) == ((), None, 4, None)
