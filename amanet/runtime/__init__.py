"""Runtime: the Predictor and its result types."""
from .predictor import Predictor
from .result import Prediction

__all__ = ["Predictor", "Prediction"]
