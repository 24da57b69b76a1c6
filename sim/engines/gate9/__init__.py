"""Engine ``gate9``: the macro renderer (:mod:`sim.engines.gate9.macros`) and the engine that
runs ``Gate`` on the macros (:mod:`sim.engines.gate9.engine`, whose ``ENGINE`` this package
holds for :func:`sim.engines.base.engine_named`)."""

from sim.engines.gate9.engine import ENGINE

__all__ = ["ENGINE"]
