"""Calibrated quantization and an output-space bit budget, streamed one decoder layer at a time.

corpus (calibration text) -> calibrate (the streamed pass: layers, probes)
-> stats (per-unit activation statistics, per-cell sensitivity; cached)
-> quantizer (calibrated scales and biases, stock MLX tensors)
(the sensitivities become a bit budget in studio.core.budget, the solver the weight-error fit uses too)
"""
