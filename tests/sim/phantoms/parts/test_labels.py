"""Parts from a labelled image (NIfTI, MetaImage): volumes against voxel counts, the frame the
affine gives, the filled label, wall defects, and bad images."""

from __future__ import annotations

import copy

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import ConfigError, validate_config
from sim.phantoms.families import draw_phantom
from sim.phantoms.metaimage import write_mhd
from sim.phantoms.parts.layout import PartSettings, load_part
from sim.phantoms.stage import draw_and_voxelise

SPACING_MM = np.array([0.8, 0.8, 1.5])  # (x, y, z) of the label image, unlike the phantom grid
BODY, CHANNEL = 1, 2


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """A 48 x 32 x 20 mm block (label 1) with a channel of radius 6 mm along x at
    y = +5 mm (label 2), indexed (i, j, k) = (x, y, z); and its affine (origin at the centre)."""
    shape = (80, 56, 24)
    affine = np.diag([*SPACING_MM, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) / 2 * SPACING_MM
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x, y, z = (np.stack([i, j, k], -1) @ affine[:3, :3].T + affine[:3, 3]).transpose(3, 0, 1, 2)
    labels = np.zeros(shape, np.int16)
    labels[(np.abs(x) < 24) & (np.abs(y) < 16) & (np.abs(z) < 10)] = BODY
    labels[(np.abs(x) < 20) & (np.hypot(y - 5.0, z) < 6.0)] = CHANNEL
    return labels, affine


def _nifti(tmp_path, labels=None, affine=None, name="part.nii.gz"):
    default_labels, default_affine = _labels()
    labels = default_labels if labels is None else labels
    affine = default_affine if affine is None else affine
    path = tmp_path / name
    nib.save(nib.Nifti1Image(labels, affine), path)
    return path


def _dataset(image, defects=None) -> dict:
    return {
        "family": "part",
        "grid": {"shape": [16, 64, 64], "voxel_size_mm": [2.0, 1.0, 1.0]},
        "partial_volume_subsamples": 4,
        "part": {"label_image": str(image), "centre": False,
                 "volumes": [{"name": "body", "label": BODY, "material": "aluminium"},
                             {"name": "channel", "label": CHANNEL, "material": "water"}],
                 "fill": ["channel"]},
        "defects": defects or {"count": [0, 0]},
    }


def _spec(default_config, dataset, phantom="part_0000"):
    from sim.phantoms.spec import phantom_spec

    cfg = copy.deepcopy(default_config)
    cfg["datasets"] = {"mine": {**cfg["datasets"]["tubes"], **dataset}}
    return phantom_spec(validate_config(cfg), "mine", phantom)


@pytest.mark.slow
def test_label_volumes_match_the_voxel_counts(default_config, tmp_path):
    spec = _spec(default_config, _dataset(_nifti(tmp_path)))
    _, vox = draw_and_voxelise(spec)
    labels, _ = _labels()
    voxel_mm3 = float(np.prod(SPACING_MM))
    assert vox.material_volume_mm3["aluminium"] == pytest.approx(
        np.count_nonzero(labels == BODY) * voxel_mm3, rel=0.01)
    assert vox.solution_volume_mm3 == pytest.approx(
        np.count_nonzero(labels == CHANNEL) * voxel_mm3, rel=0.01)


@pytest.mark.parametrize("writer", ["nifti", "metaimage", "nifti_mirrored"])
def test_the_image_frame_is_kept(tmp_path, writer):
    labels, affine = _labels()
    if writer == "metaimage":
        path, _ = write_mhd(tmp_path / "part.mhd", np.transpose(labels, (2, 1, 0)),
                            SPACING_MM[::-1], affine[:3, 3][::-1])
    elif writer == "nifti":
        path = _nifti(tmp_path)
    else:  # x mirrored in the index order, undone by a negative affine entry
        mirrored = affine.copy()
        mirrored[0, 0], mirrored[0, 3] = -mirrored[0, 0], -mirrored[0, 3]
        path = _nifti(tmp_path, labels[::-1].copy(), mirrored)
    settings = PartSettings.from_config({**_dataset(path)["part"], "unit_mm": 1.0,
                                         "rotation_deg": [0, 0, 0], "rotation_z_deg": [0, 0],
                                         "translation_mm": [0, 0, 0]})
    body, channel = load_part(settings)
    # Channel centre line at y = +5 mm (analytic), body corner region, outside.
    probe = np.array([[0.0, 5.0, 0.0], [-15.0, 5.0, 0.0], [0.0, -12.0, 7.0], [0.0, 0.0, 12.0],
                      [30.0, 0.0, 0.0]])
    np.testing.assert_array_equal(channel.solid.contains(probe), [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(body.solid.contains(probe), [0, 0, 1, 0, 0])
    assert channel.solid.mesh.is_watertight and channel.solid.mesh.volume > 0
    # The marching-cubes surface used for placement encloses about the label's volume.
    assert channel.solid.mesh.volume == pytest.approx(channel.solid.volume_mm3, rel=0.08)


@pytest.mark.slow
def test_wall_defects_of_a_labelled_part_open_the_channel_wall(default_config, tmp_path):
    path = _nifti(tmp_path)
    defects = {"count": [4, 4], "types": {"crack": 1.0, "hole": 1.0, "pit": 1.0,
                                          "inclusion": 0.0, "bubble": 0.0},
               "crack": {"length_mm": [4.0, 6.0], "width_mm": [1.0, 1.5]},
               "hole": {"diameter_mm": [2.0, 3.0]}, "pit": {"diameter_mm": [2.0, 3.0]}}
    model = draw_phantom(_spec(default_config, _dataset(path, defects), "part_0003"))
    labels, affine = _labels()
    inverse = np.linalg.inv(affine)

    def label_at(points):
        index = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        return labels[tuple(index.T)]

    points = np.array([d["surface_point_mm"] for d in model.defects])
    normals = np.array([d["normal"] for d in model.defects])
    np.testing.assert_array_equal(label_at(points - 0.5 * normals), CHANNEL)
    np.testing.assert_array_equal(label_at(points + 0.5 * normals), BODY)
    for d in model.defects:
        assert d["replaces"] == ["aluminium"] and d["material"] == "water"


def _refused(default_config, dataset) -> str:
    cfg = copy.deepcopy(default_config)
    cfg["datasets"] = {"mine": {**cfg["datasets"]["tubes"], **dataset}}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("make, expected", [
    (lambda labels: labels.astype(np.float32) + 0.5, "non-integer values"),
    (lambda labels: np.where(labels == 1, np.nan, labels).astype(np.float32), "NaN or infinity"),
    (lambda labels: labels[..., None], "has 4 dimensions"),
    (lambda labels: np.where(labels == 2, 1, labels).astype(np.int16), "no voxel of label 2"),
])
def test_bad_label_images_are_refused_naming_the_file(default_config, tmp_path, make,
                                                      expected):
    labels, affine = _labels()
    path = _nifti(tmp_path, make(labels), affine)
    message = _refused(default_config, _dataset(path))
    assert str(path) in message and expected in message


def test_unreadable_or_missing_label_images_are_refused(default_config, tmp_path):
    bad = tmp_path / "part.nii"
    bad.write_bytes(b"not a nifti file")
    assert "cannot be read" in _refused(default_config, _dataset(bad))
    assert "no such file" in _refused(default_config, _dataset(tmp_path / "absent.nii.gz"))
    assert "unsupported file type" in _refused(default_config, _dataset(tmp_path / "part.png"))


@pytest.mark.parametrize("change, expected", [
    (lambda p: p.pop("label_image"), "volumes given by label need the labelled image"),
    (lambda p: p["volumes"][0].update(mesh="body.stl"), "needs exactly one of mesh"),
    (lambda p: p["volumes"][0].pop("label"), "needs exactly one of mesh"),
])
def test_volume_sources_are_checked(default_config, tmp_path, change, expected):
    dataset = _dataset(_nifti(tmp_path))
    change(dataset["part"])
    message = _refused(default_config, dataset)
    assert "datasets.mine.part" in message and expected in message


def test_a_label_image_whose_affine_is_in_metres_is_refused_with_the_unit(default_config,
                                                                          tmp_path):
    labels, affine = _labels()
    affine[:3] /= 1000.0  # the same block, its voxel-to-position map in metres
    path = _nifti(tmp_path, labels, affine)
    message = _refused(default_config, _dataset(path))
    # 48 mm of block along x (60 voxels of 0.8 mm), read as 0.048 mm.
    assert message.startswith(f"config key datasets.mine.part.unit_mm: label image {path}: "
                              "the part measures 0.048 mm across"), message
    assert message.endswith("are the files in metres (part.unit_mm: 1000, 48 mm across)?")
