"""Scanner geometry against independent calculations."""

from __future__ import annotations

import numpy as np
import pytest

from sim.scanner.geometry import Scanner


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner()


def test_counts(scanner):
    assert scanner.n_crystals == 184 * 64 == 11776
    assert scanner.crystals_per_module == 8
    assert scanner.crystal_centres_mm().shape == (11776, 3)


@pytest.mark.parametrize("gap_mm", [0.0, 1.5])
def test_inner_radius_from_module_width(gap_mm):
    s = Scanner(module_gap_mm=gap_mm)
    # Corners gap_mm apart on face lines meeting at the interior angle pi - 2 pi / 23.
    side = 8 * 4.0 + 2 * (gap_mm / 2) / np.sin((np.pi - 2 * np.pi / 23) / 2)
    # Independent route: circumradius of the regular 23-gon, then Pythagoras for the apothem.
    circumradius = side / (2 * np.sin(np.pi / 23))
    apothem = np.sqrt(circumradius**2 - (side / 2) ** 2)
    assert s.inner_radius_mm == pytest.approx(apothem, rel=1e-12)
    if gap_mm == 0.0:
        assert s.inner_radius_mm == pytest.approx(116.4086, abs=1e-4)


@pytest.mark.parametrize("gap_mm", [0.0, 1.5])
def test_front_face_corners_of_neighbouring_modules(gap_mm):
    """Front-face corners of adjacent modules are exactly module_gap_mm apart."""
    s = Scanner(module_gap_mm=gap_mm)
    ids = np.arange(s.crystals_per_ring)
    front = s.crystal_position_mm(ids, depth_mm=0.0)
    tangent = s.crystal_frames(ids)[:, 1, :]
    last_right = front[7::8] + 2.0 * tangent[7::8]  # right edge of a module's last crystal cell
    first_left = front[0::8] - 2.0 * tangent[0::8]  # left edge of the next module's first cell
    gaps = np.linalg.norm(np.roll(first_left, -1, axis=0) - last_right, axis=1)
    np.testing.assert_allclose(gaps, gap_mm, atol=1e-9)


def test_crystal_spacing(scanner):
    front = scanner.crystal_position_mm(np.arange(184), depth_mm=0.0)
    same_module = np.array([i for i in range(183) if i // 8 == (i + 1) // 8])
    d = np.linalg.norm(front[same_module + 1] - front[same_module], axis=1)
    np.testing.assert_allclose(d, 4.0, atol=1e-9)
    np.testing.assert_allclose(np.diff(scanner.ring_z_mm), 4.0, atol=1e-12)
    # Front faces lie at the inner radius along their module normal.
    normal = scanner.crystal_frames(np.arange(184))[:, 0, :]
    np.testing.assert_allclose(np.sum(front * normal, axis=1), scanner.inner_radius_mm, atol=1e-9)


def test_ordering_convention(scanner):
    c = scanner.crystal_centres_mm()
    # Crystal 0's centre is on +x.
    assert c[0, 0] > 100 and abs(c[0, 1]) < 1e-9
    # Counter-clockwise seen from +z: the polar angle grows with the transaxial index.
    phi = np.unwrap(np.arctan2(c[:184, 1], c[:184, 0]))
    assert np.all(np.diff(phi) > 0)
    assert phi[-1] - phi[0] == pytest.approx(2 * np.pi * 183 / 184, abs=0.02)
    # Ring 0 at the lowest z, symmetric about the centre, id = ring * 184 + index.
    z = c[::184, 2]
    assert np.all(np.diff(z) > 0)
    assert z[0] == pytest.approx(-126.0) and z[-1] == pytest.approx(126.0)
    ring, index = scanner.ring_and_index(np.array([0, 183, 184, 11775]))
    np.testing.assert_array_equal(ring, [0, 0, 1, 63])
    np.testing.assert_array_equal(index, [0, 183, 0, 183])
    np.testing.assert_array_equal(scanner.crystal_id(ring, index), [0, 183, 184, 11775])


def test_id_position_round_trip(scanner):
    ids = np.arange(scanner.n_crystals)
    np.testing.assert_array_equal(scanner.crystal_id_at(scanner.crystal_centres_mm()), ids)
    rng = np.random.default_rng(1)
    # Random points anywhere inside random crystals map back to their crystal.
    pick = rng.integers(0, scanner.n_crystals, 20000)
    local = (rng.random((pick.size, 3)) - 0.5) * 0.999 * scanner.crystal_size_mm
    frames = scanner.crystal_frames(pick)
    pts = scanner.crystal_centres_mm(pick) + np.einsum("nk,nkj->nj", local, frames)
    np.testing.assert_array_equal(scanner.crystal_id_at(pts), pick)


def test_points_outside_crystals(scanner):
    r = scanner.inner_radius_mm
    pts = np.array([
        [0.0, 0.0, 0.0],  # centre
        [r - 0.1, 0.0, 0.0],  # just in front of crystal 0
    ])
    np.testing.assert_array_equal(scanner.crystal_id_at(pts), -1)
    # Just in front of and just behind crystal 0, along its module normal.
    normal = scanner.crystal_frames(np.array([0]))[0, 0]
    c0 = scanner.crystal_centres_mm(np.array([0]))[0]
    pts = np.array([
        c0 - 10.05 * normal,
        c0 + 10.05 * normal,
        [r + 10, 0.0, 130.0],  # beyond the last ring
    ])
    np.testing.assert_array_equal(scanner.crystal_id_at(pts), -1)
    # With a module gap, the middle of the gap between modules 0 and 1 holds no crystal.
    s = Scanner(module_gap_mm=2.0)
    phi_gap = s.first_module_angle_rad + np.pi / 23
    p = (s.inner_radius_mm + 0.2) / np.cos(np.pi / 23) * np.array([np.cos(phi_gap),
                                                                     np.sin(phi_gap), 0.0])
    assert s.crystal_id_at(p[None])[0] == -1


def test_axial_module_gap():
    s = Scanner(axial_module_gap_mm=2.0)
    dz = np.diff(s.ring_z_mm)
    assert np.sum(np.isclose(dz, 6.0)) == 7 and np.sum(np.isclose(dz, 4.0)) == 56
    assert s.axial_length_mm == pytest.approx(64 * 4 + 7 * 2)
    np.testing.assert_array_equal(s.crystal_id_at(s.crystal_centres_mm()), np.arange(11776))


@pytest.mark.parametrize("kwargs, text", [
    ({"crystals_per_ring": 185}, "multiple of modules_per_ring"),
    ({"rings": 60}, "multiple of crystals_per_module_axial"),
    ({"crystal_width_mm": 4.5}, "exceeds crystal_pitch_mm"),
])
def test_inconsistent_geometry(kwargs, text):
    with pytest.raises(ValueError, match=text):
        Scanner(**kwargs)


def test_gate_ids_follow_the_cylindrical_pet_hierarchy():
    """rsector = transaxial index // 8, module = ring // 8, crystal = j + 8 k (GATE's cubic
    array order: y fastest, then z), written out here; and the inverse."""
    scanner = Scanner()
    ids = np.arange(scanner.n_crystals)
    ring, index = ids // 184, ids % 184
    rsector, module, crystal = scanner.gate_ids(ids)
    np.testing.assert_array_equal(rsector, index // 8)
    np.testing.assert_array_equal(module, ring // 8)
    np.testing.assert_array_equal(crystal, index % 8 + 8 * (ring % 8))
    np.testing.assert_array_equal(scanner.crystal_id_from_gate(rsector, module, crystal), ids)
    with pytest.raises(ValueError, match="module id out of range"):
        scanner.crystal_id_from_gate([0], [8], [0])
