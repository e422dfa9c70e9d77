"""bpy script pieces shared by tests that generate projects in a Blender subprocess.

PROJECT_BASE, run with `python3 -c SCRIPT ROOT`, writes ROOT/project/textures/{wood,metal}.png,
the image sequence ROOT/project/seq/frame_000[1-4].png, ROOT/outside/logo.png and the
library ROOT/project/libs/props.blend (an object whose material uses metal.png). Each
test appends the scene it needs.
"""

PROJECT_BASE = r"""
import os
import sys

import bpy

root = sys.argv[-1]
proj = os.path.join(root, "project")
for sub in ("libs", "textures", "seq"):
    os.makedirs(os.path.join(proj, sub), exist_ok=True)
os.makedirs(os.path.join(root, "outside"), exist_ok=True)
bpy.ops.wm.read_factory_settings(use_empty=True)


def png(path, rgba):
    img = bpy.data.images.new(os.path.basename(path), 8, 8, alpha=True)
    img.pixels = list(rgba) * 64
    img.filepath_raw = path
    img.file_format = "PNG"
    img.save()
    bpy.data.images.remove(img)


png(os.path.join(proj, "textures", "wood.png"), (0.5, 0.3, 0.1, 1.0))
png(os.path.join(proj, "textures", "metal.png"), (0.6, 0.6, 0.7, 1.0))
for frame in range(1, 5):
    png(os.path.join(proj, "seq", f"frame_{frame:04d}.png"), (frame / 5, 0.0, 0.0, 1.0))
png(os.path.join(root, "outside", "logo.png"), (0.0, 0.0, 1.0, 1.0))

# A library with an object whose material uses a texture one directory up.
mesh = bpy.data.meshes.new("PropMesh")
prop = bpy.data.objects.new("Prop", mesh)
bpy.context.scene.collection.objects.link(prop)
mat = bpy.data.materials.new("Metal")
mat.use_nodes = True
node = mat.node_tree.nodes.new("ShaderNodeTexImage")
node.image = bpy.data.images.load(os.path.join(proj, "textures", "metal.png"))
mesh.materials.append(mat)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(proj, "libs", "props.blend"))
"""
