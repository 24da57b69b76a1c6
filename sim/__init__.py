"""Simulation stage: scanner geometry, phantoms, engines and list-mode I/O."""
