"""What the user asks for and what it costs: the bit policy, grid cells, the per-tensor plan, exact sizes."""
