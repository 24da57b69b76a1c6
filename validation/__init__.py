"""Validation of a simulation engine against the reference Monte Carlo: list-mode rates and
distributions (:mod:`.listmode`), reconstructed images over noise realisations
(:mod:`.images`), and the tables and figures (:mod:`.report`). Command line:
``python -m validation`` (:mod:`.cli`)."""
