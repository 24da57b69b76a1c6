"""The embedded Monte Carlo engine: positron source, photon physics, vectorised transport,
digitizer and coincidence sorter."""
