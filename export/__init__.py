"""Training and ONNX export of the recurrent forecasters (needs the `train` extra: torch)."""
