"""Make the two example parts shipped with the repository (closed meshes, mm).

* ``pipe_elbow``: an aluminium 90-degree pipe elbow (outer radius 14 mm, wall 3 mm, bend
  radius 35 mm, 25 mm straight legs) in the scanner's transverse plane, closed by 3 mm end
  plugs; the bore is one volume (``pipe_elbow_bore.stl``) inside the body
  (``pipe_elbow_body.stl``).
* ``drilled_block``: an aluminium block 70 x 50 x 30 mm (``drilled_block_body.ply``) with two
  plugged drilled channels along x: ``drilled_block_channel_a.obj`` (radius 6 mm, the one the
  example fills) and ``drilled_block_channel_b.obj`` (radius 4 mm, left dry).

Run ``python examples/parts/make_parts.py [out_dir]`` to rebuild them (the default writes next
to this script); ``tests/sim/phantoms/parts/test_meshes.py`` checks that the shipped files are what
this script makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import trimesh

SECTIONS = 64


def elbow_centreline(leg_mm: float, bend_radius_mm: float, trim_mm: float = 0.0,
                     arc_steps: int = 48) -> np.ndarray:
    """Points (n, 3) of the elbow's centre line in the z = 0 plane: a leg along +y, a
    quarter arc, a leg along +x; ``trim_mm`` shortens both ends."""
    first = np.linspace(trim_mm, leg_mm, 6)
    leg_a = np.stack([np.zeros_like(first), first, np.zeros_like(first)], 1)
    theta = np.linspace(np.pi, np.pi / 2, arc_steps + 1)[1:-1]
    arc = np.stack([bend_radius_mm + bend_radius_mm * np.cos(theta),
                    leg_mm + bend_radius_mm * np.sin(theta), np.zeros_like(theta)], 1)
    second = np.linspace(0.0, leg_mm - trim_mm, 6)
    leg_b = np.stack([bend_radius_mm + second, np.full_like(second, leg_mm + bend_radius_mm),
                      np.zeros_like(second)], 1)
    return np.concatenate([leg_a, arc, leg_b])


def swept_solid(path: np.ndarray, radius_mm: float, sections: int = SECTIONS) -> trimesh.Trimesh:
    """Closed solid of a circle of ``radius_mm`` swept along a planar path (z = 0), with flat
    end caps; outward normals."""
    tangent = np.gradient(path, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    binormal = np.array([0.0, 0.0, 1.0])
    normal = np.cross(binormal, tangent)
    angle = 2 * np.pi * np.arange(sections) / sections
    ring = (path[:, None, :] + radius_mm * (np.cos(angle)[None, :, None] * normal[:, None, :]
                                            + np.sin(angle)[None, :, None] * binormal))
    n_path = len(path)
    vertices = np.concatenate([ring.reshape(-1, 3), path[[0, -1]]])
    i = np.arange(n_path - 1)[:, None] * sections
    j = np.arange(sections)[None, :]
    a, b = i + j, i + (j + 1) % sections
    c, d = a + sections, b + sections
    side = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3),
                           np.stack([b, c, d], -1).reshape(-1, 3)])
    start, end = len(vertices) - 2, len(vertices) - 1
    last = (n_path - 1) * sections
    cap0 = np.stack([np.full(sections, start), j[0], (j[0] + 1) % sections], -1)
    cap1 = np.stack([np.full(sections, end), last + (j[0] + 1) % sections, last + j[0]], -1)
    mesh = trimesh.Trimesh(vertices, np.concatenate([side, cap0, cap1]), process=True)
    if mesh.volume < 0:
        mesh.invert()
    return mesh


def pipe_elbow() -> dict[str, trimesh.Trimesh]:
    """Body and bore of the pipe elbow."""
    outer, wall, bend, leg, plug = 14.0, 3.0, 35.0, 25.0, 3.0
    return {
        "pipe_elbow_body.stl": swept_solid(elbow_centreline(leg, bend), outer),
        "pipe_elbow_bore.stl": swept_solid(elbow_centreline(leg, bend, trim_mm=plug),
                                           outer - wall),
    }


def drilled_block() -> dict[str, trimesh.Trimesh]:
    """Body and the two channels of the drilled block."""
    def channel(radius_mm: float, y_mm: float, z_mm: float) -> trimesh.Trimesh:
        turn = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
        turn[:3, 3] = [0.0, y_mm, z_mm]
        return trimesh.creation.cylinder(radius=radius_mm, height=56.0, sections=SECTIONS,
                                         transform=turn)

    return {
        "drilled_block_body.ply": trimesh.creation.box(extents=[70.0, 50.0, 30.0]),
        "drilled_block_channel_a.obj": channel(6.0, -10.0, 0.0),
        "drilled_block_channel_b.obj": channel(4.0, 12.0, 4.0),
    }


def write_parts(out_dir: str | Path) -> list[Path]:
    """Write every example mesh into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, mesh in {**pipe_elbow(), **drilled_block()}.items():
        path = out_dir / name
        mesh.export(path)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for p in write_parts(target):
        print(p)
