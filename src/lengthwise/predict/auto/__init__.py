"""Do no harm: measure each candidate predictor's rank quality and schedule by the best, or by arrival."""
