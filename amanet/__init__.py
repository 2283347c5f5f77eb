"""amanet: a deployable inference engine for AMANet and Detectron2 DensePose models."""
__version__ = "0.1.0"
