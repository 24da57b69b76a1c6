"""The phantom stage: draw, voxelise and write one phantom (HDF5, MetaImage, PNG preview)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.fileio import provenance_attrs
from sim.phantoms.families import PhantomModel, draw_phantom, phantom_rng_for_voxelising
from sim.phantoms.file import write_phantom
from sim.phantoms.preview import write_preview
from sim.phantoms.voxelise import VoxelisedPhantom, voxelise

log = logging.getLogger(__name__)


def preview_path(h5_path: str | Path) -> Path:
    """Where the PNG preview of a phantom file goes (beside it)."""
    return Path(h5_path).with_suffix(".png")


def draw_and_voxelise(spec: dict[str, Any]) -> tuple[PhantomModel, VoxelisedPhantom]:
    """The solid model of phantom ``spec`` and its voxels (no file written)."""
    model = draw_phantom(spec)
    return model, voxelise(model.layers, model.grid, spec["partial_volume_subsamples"],
                           phantom_rng_for_voxelising(spec))


def build_phantom(spec: dict[str, Any], out_h5: str | Path, overwrite: bool = False) -> list[Path]:
    """Run the phantom stage for one phantom ``spec`` (see :func:`sim.phantoms.spec.phantom_spec`).

    Writes ``out_h5``, its MetaImage copies and its PNG preview; returns the paths written.
    """
    out_h5 = Path(out_h5)
    if out_h5.suffix != ".h5":
        raise ValueError(f"output {out_h5} must end in .h5")
    for path in (out_h5, preview_path(out_h5)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    start = time.perf_counter()
    model, vox = draw_and_voxelise(spec)
    log.info("%s: %s phantom with %d defect(s)", spec["phantom"], spec["family"],
             len(model.defects))
    for defect in model.defects:
        defect["voxelised_volume_mm3"] = vox.label_volume_mm3.get(defect["label"], 0.0)
    log.info("voxelised %s voxels (%d cut by a surface) in %.1f s", model.grid.shape,
             vox.boundary_voxels, time.perf_counter() - start)
    attrs = provenance_attrs(
        spec,
        params={"family": spec["family"], "grid": spec["grid"],
                "partial_volume_subsamples": spec["partial_volume_subsamples"]},
        seed=spec["seed"],
    )
    attrs.update(dataset=spec["dataset"], phantom_name=spec["phantom"], index=spec["index"],
                 family=spec["family"])
    written = write_phantom(out_h5, vox, model, attrs, overwrite)
    title = f"{spec['dataset']}/{spec['phantom']} ({spec['family']}, {len(model.defects)} defects)"
    written.append(write_preview(preview_path(out_h5), vox.mu511_per_mm, vox.activity, vox.labels,
                                 model.grid.voxel_size_mm, model.grid.origin_mm, title, overwrite))
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written
