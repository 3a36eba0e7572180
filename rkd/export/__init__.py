"""Deployable files of a trained system: TorchScript transmitter and receiver, and their ONNX twins."""
