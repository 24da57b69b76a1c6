"""The statistical simulation: expected counts from the phantom and a detector response
calibrated once from the embedded Monte Carlo (:mod:`.entry`, :mod:`.response`)."""
