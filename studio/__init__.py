"""Config-I Studio: role-aware MLX quantization for huge Mixture-of-Experts models."""

__version__ = "0.1.0"
