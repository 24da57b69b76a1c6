"""Phantoms: solid shapes, materials, partial-volume voxelisation, the phantom families (tube,
QA, the user's parts), the phantom file with its GATE copies, the preview and the stage."""
