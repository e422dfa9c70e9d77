"""Scene values read from a .blend file without Blender, for evaluating job settings.

Blender Asset Tracer's blend-file reader gives the active scene's render settings
(`r.sfra`, `r.efra`, `r.frs_sec`, `r.frs_sec_base`, `r.im_format.imtype`/`flag`, `r.pic`);
`blend_context()` wraps them in the few `bpy`/`C` attributes that Flamenco's job types
use in their `eval` expressions (`C.scene.frame_start`, `C.scene.render.fps`,
`C.scene.render.image_settings.file_format`, `C.scene.render.file_extension`,
`bpy.data.filepath`, `bpy.path.abspath`, ...), so `shaman-submit` evaluates the same
expressions the add-on evaluates inside Blender.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ...bat_import import import_bat
from ..errors import SubmitError

# Blender's R_IMF_IMTYPE_* numbers and the RNA names `image_settings.file_format` gives them.
FILE_FORMATS = {
    0: "TARGA",
    1: "IRIS",
    4: "JPEG",
    14: "TARGA_RAW",
    15: "AVI_RAW",
    16: "AVI_JPEG",
    17: "PNG",
    20: "BMP",
    21: "HDR",
    22: "TIFF",
    23: "OPEN_EXR",
    24: "FFMPEG",
    26: "CINEON",
    27: "DPX",
    28: "OPEN_EXR_MULTILAYER",
    30: "JPEG2000",
    35: "WEBP",
}
# `scene.render.file_extension` per format, as Blender 4.5 reports it (video formats too).
FILE_EXTENSIONS = {
    "TARGA": ".tga",
    "TARGA_RAW": ".tga",
    "IRIS": ".rgb",
    "JPEG": ".jpg",
    "AVI_RAW": ".avi",
    "AVI_JPEG": ".avi",
    "PNG": ".png",
    "BMP": ".bmp",
    "HDR": ".hdr",
    "TIFF": ".tif",
    "OPEN_EXR": ".exr",
    "OPEN_EXR_MULTILAYER": ".exr",
    "FFMPEG": ".png",
    "CINEON": ".cin",
    "DPX": ".dpx",
    "JPEG2000": ".jp2",
    "WEBP": ".webp",
}
IMF_FLAG_PREVIEW_JPG = 1 << 1  # image_settings.use_preview


@dataclass(frozen=True)
class SceneValues:
    """What the active scene of a .blend says about rendering (None: not in the file)."""

    name: str
    frame_start: int | None
    frame_end: int | None
    fps: int | None
    fps_base: float | None
    file_format: str | None
    use_preview: bool | None
    output_path: str  # scene.render.filepath, e.g. "//render/shot_" or "/tmp/"

    @property
    def file_extension(self) -> str | None:
        return FILE_EXTENSIONS.get(self.file_format or "")


def read_scene(blendfile: Path) -> SceneValues:
    """The active scene's render settings (the first scene when none is marked active)."""
    bat = import_bat()
    try:
        bfile = bat.blendfile.BlendFile(Path(blendfile))
    except Exception as ex:
        raise SubmitError(f"cannot read {blendfile}: {ex}") from None
    try:
        scene = _active_scene(bfile)
        if scene is None:
            raise SubmitError(f"{blendfile} has no scene")
        imtype = _get(scene, b"r", b"im_format", b"imtype")
        flag = _get(scene, b"r", b"im_format", b"flag")
        pic = _get(scene, b"r", b"pic")
        name = scene.id_name[2:] if scene.id_name else b""
        return SceneValues(
            name=name.decode("utf-8", errors="replace"),
            frame_start=_get(scene, b"r", b"sfra"),
            frame_end=_get(scene, b"r", b"efra"),
            fps=_get(scene, b"r", b"frs_sec"),
            fps_base=_get(scene, b"r", b"frs_sec_base"),
            file_format=FILE_FORMATS.get(imtype) if isinstance(imtype, int) else None,
            use_preview=bool(flag & IMF_FLAG_PREVIEW_JPG) if isinstance(flag, int) else None,
            output_path=pic.decode("utf-8", errors="replace") if isinstance(pic, bytes) else "",
        )
    finally:
        bfile.close()


def _active_scene(bfile: Any) -> Any:
    for glob in bfile.find_blocks_from_code(b"GLOB"):
        scene = _get(glob, b"curscene", pointer=True)
        if scene is not None:
            return scene
    scenes = bfile.find_blocks_from_code(b"SC")
    return scenes[0] if scenes else None


def _get(block: Any, *path: bytes, pointer: bool = False) -> Any:
    try:
        if pointer:
            return block.get_pointer(path)
        value = block.get(path)
    except Exception:  # a field this Blender version's file does not have
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    return value


def blend_abspath(blendfile: Path, path: str) -> str:
    """Blender's bpy.path.abspath: `//x` is relative to the blend file's folder."""
    if path.startswith("//"):
        return os.path.join(os.path.dirname(os.path.abspath(blendfile)), path[2:])
    return path


def output_directory(blendfile: Path, output_path: str) -> str | None:
    """The folder a scene with this render output path renders into (the folder part of
    the path, `//` relative to the blend), absolute."""
    if not output_path:
        return None
    folder = os.path.dirname(blend_abspath(blendfile, output_path))
    return os.path.normpath(os.path.abspath(folder)) if folder else None


def blend_context(blendfile: Path, scene: SceneValues) -> tuple[Any, Any]:
    """(bpy, C) stand-ins with the attributes job-type expressions read."""
    blend = os.path.abspath(blendfile)
    bpy = SimpleNamespace(
        data=SimpleNamespace(filepath=blend),
        path=SimpleNamespace(abspath=lambda path: blend_abspath(Path(blend), str(path))),
    )
    render = SimpleNamespace(
        fps=scene.fps,
        fps_base=scene.fps_base,
        filepath=scene.output_path,
        file_extension=scene.file_extension,
        image_settings=SimpleNamespace(
            file_format=scene.file_format, use_preview=scene.use_preview
        ),
    )
    context = SimpleNamespace(
        scene=SimpleNamespace(
            name=scene.name,
            frame_start=scene.frame_start,
            frame_end=scene.frame_end,
            render=render,
        ),
        blend_data=bpy.data,
    )
    return bpy, context
