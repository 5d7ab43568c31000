"""Output-length predictors behind one small interface (see `base`)."""

from lengthwise.predict.base import LengthRequest, Prediction, PredictionCost, Predictor
from lengthwise.predict.baselines import ConstantPredictor, OraclePredictor, PromptLengthPredictor, prompt_hash
from lengthwise.predict.calibration import CalibratedPredictor, Calibrator
from lengthwise.predict.registry import make_predictor
from lengthwise.predict.self_predict import SelfPredictor

__all__ = [
    "CalibratedPredictor",
    "Calibrator",
    "ConstantPredictor",
    "LengthRequest",
    "OraclePredictor",
    "Prediction",
    "PredictionCost",
    "Predictor",
    "PromptLengthPredictor",
    "SelfPredictor",
    "make_predictor",
    "prompt_hash",
]
