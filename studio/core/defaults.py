"""Quantization settings declared once: the default group size and the bit widths MLX offers.

Every part that offers or assumes one of these (the policy parser, the survey,
the budget, the brushes, the settings) imports it from here.
"""

from __future__ import annotations

# mlx-lm's default group size, and the one Config-I uses.
DEFAULT_GROUP_SIZE = 64

# The affine bit widths MLX quantizes to, low to high.
AFFINE_BITS = (2, 3, 4, 5, 6, 8)

# Each mode's valid bit widths and group sizes (MLX's own limits).
MODES = {
    "affine": {"bits": AFFINE_BITS, "group_sizes": (32, DEFAULT_GROUP_SIZE, 128)},
    "mxfp4": {"bits": (4,), "group_sizes": (32,)},
    "nvfp4": {"bits": (4,), "group_sizes": (16,)},
    "mxfp8": {"bits": (8,), "group_sizes": (32,)},
}


def default_group_size(mode: str) -> int:
    """The group size a mode gets when none is given: 64 for affine (and modes MLX does not
    know), the only one it allows otherwise."""
    return MODES[mode]["group_sizes"][0] if mode in MODES and mode != "affine" else DEFAULT_GROUP_SIZE
