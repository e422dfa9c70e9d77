"""Run by Blender's Python (bpy): save a .blend whose image datablocks use the listed files.

Usage: python make_blend.py LIST_FILE BLEND_PATH
LIST_FILE holds one path per line, relative to the blend's directory. Each becomes an image
datablock with a relative (`//`) path, the way an artist's textures are referenced, so BAT
traces and packs exactly these files.
"""

import sys
from pathlib import Path

import bpy


def main() -> None:
    list_file, blend_path = Path(sys.argv[1]), Path(sys.argv[2])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    for n, rel in enumerate(list_file.read_text().splitlines()):
        image = bpy.data.images.new(f"img{n:06d}", 1, 1)
        image.source = "FILE"
        image.filepath = "//" + rel
        image.use_fake_user = True  # unused datablocks are dropped on save otherwise
    bpy.ops.wm.save_as_mainfile(filepath=str(blend_path))


main()
