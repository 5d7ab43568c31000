"""Output-length predictors behind one small interface (see `base`)."""

from lengthwise.predict.base import LengthRequest, Prediction, PredictionCost, Predictor

__all__ = ["LengthRequest", "Prediction", "PredictionCost", "Predictor"]
