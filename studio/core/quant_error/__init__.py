"""Quantization error: measuring it, surveying it, and the map the window and the budget read.

`round_trip`: the relative error of one tensor's quantize/dequantize round trip (MLX).
`survey`: that error on samples of a model's real weights, at every bit width, without converting.
`error_map`: the per-unit errors as data (`ErrorMap`) and the `quant_errors.json` a conversion writes.
"""
