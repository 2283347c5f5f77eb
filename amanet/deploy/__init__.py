"""Export: TorchScript, ONNX and TensorRT artifacts of the deployable graph."""
