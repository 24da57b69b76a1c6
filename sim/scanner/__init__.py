"""Scanner geometry: crystal positions, modules and rings (:mod:`sim.scanner.geometry`)."""
