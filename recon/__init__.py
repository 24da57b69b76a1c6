"""Reconstruction stage: LOR geometry, projectors, MLEM/OSEM, image I/O."""
