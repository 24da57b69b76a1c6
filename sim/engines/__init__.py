"""Simulation engines behind one interface (:mod:`sim.engines.base`): the embedded engine,
opengate (GATE 10) and GATE 9, the Geant4 data check and the simulate stage."""
