"""Background of 3D list-mode reconstruction: the number of LORs the randoms are spread over
against an enumeration, and the chord of segments through the image box."""

from __future__ import annotations

import numpy as np

from recon.geometry import scanner_doi_mm
from recon.grid import ImageGrid, box_chord_mm
from recon.recon3d import lor_count
from recon.sinogram import SinogramGeometry
from sim.scanner.geometry import Scanner

SCANNER = Scanner(crystals_per_ring=48, modules_per_ring=12, rings=10,
                  crystals_per_module_axial=5, crystal_pitch_mm=4.0, axial_pitch_mm=4.0)
GEOMETRY = SinogramGeometry(SCANNER, scanner_doi_mm(SCANNER), min_sector_difference=1)


def test_lor_count_matches_an_enumeration_of_the_sensitivity_lors():
    valid = GEOMETRY.valid()
    unordered = int(valid.sum())
    for d_max in (0, 2, SCANNER.rings - 1):
        expected = 0
        for r1 in range(SCANNER.rings):
            for r2 in range(r1, min(SCANNER.rings, r1 + d_max + 1)):
                expected += unordered if r1 == r2 else 2 * unordered
        assert lor_count(GEOMETRY, d_max) == expected


def test_box_chord_of_segments_through_and_beside_a_box():
    grid = ImageGrid((4, 6, 8), (2.0, 2.0, 2.0), (-3.0, -5.0, -7.0))  # box x, y, z: 16, 12, 8
    p1 = np.array([[-50.0, 0.0, 0.0], [-50.0, 30.0, 0.0], [0.0, 0.0, 0.0], [-50.0, -50.0, 0.0]])
    p2 = np.array([[50.0, 0.0, 0.0], [50.0, 30.0, 0.0], [50.0, 0.0, 0.0], [50.0, 50.0, 0.0]])
    np.testing.assert_allclose(box_chord_mm(p1, p2, grid),
                               [16.0, 0.0, 8.0, 12.0 * np.sqrt(2.0)])
