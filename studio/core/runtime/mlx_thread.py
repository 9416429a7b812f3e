"""MLX bookkeeping for threads other than the main one."""

import sys


def release_thread_streams() -> None:
    """Destroy the MLX streams this thread created; call it as the thread ends.

    MLX keeps per-thread streams that must be destroyed by the thread that made
    them; otherwise the process can abort at exit ("terminate called without an
    active exception", ml-explore/mlx#4327). Nothing to do if MLX never loaded.
    """
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "clear_streams"):
        mx.clear_streams()
