"""Loading and running a converted model: generation and how it computes on each backend."""
