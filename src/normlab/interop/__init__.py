"""Models in and out of normlab: Keras, ONNX, safetensors."""
