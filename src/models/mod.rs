//! ONNX Runtime sessions for the black-box models, per-family adapters and output heads.
