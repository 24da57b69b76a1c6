"""Engine ``statistical``: expected counts from the phantom, a detector response calibrated
once from the embedded Monte Carlo (:mod:`.entry`, :mod:`.response`), trues drawn line by
line (:mod:`.projection`, :mod:`.trues`, :mod:`.events`) and scatter and randoms from a short
Monte Carlo sample of the phantom (:mod:`.background`); :mod:`.engine` writes the file."""

from sim.engines.statistical.engine import ENGINE

__all__ = ["ENGINE"]
