"""Export: the three trained models as separate ONNX files, parity checks, and the generated Triton configs."""
