"""List-mode data and interchange: the list-mode file, GATE ROOT import, PETSIRD export and
the engine cross-check."""
