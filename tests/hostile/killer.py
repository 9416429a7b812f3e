"""Run `configi-studio ARGS...` and SIGKILL itself at one chosen point of the finishing phase.

    python killer.py rename1|rename2|finishing ARGS...

rename1: right after --force moved the old output aside (before the new one moves in);
rename2: right after the new output moved in (before the old one is removed);
finishing: while the files beside the weights are being written (before config.json).
"""

import os
import signal
import sys

import studio.core.convert.finish as finish
from studio.main import main

point, argv = sys.argv[1], sys.argv[2:]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class _Os:
    """The os module, except that the n-th os.replace of the move dies right after it."""

    def __init__(self, kill_after: int):
        self.kill_after, self.calls = kill_after, 0

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, a, b):
        os.replace(a, b)
        if str(b).endswith((".old", "out")):
            self.calls += 1
            if self.calls == self.kill_after:
                die()


if point in ("rename1", "rename2"):
    finish.os = _Os(1 if point == "rename1" else 2)
elif point == "finishing":
    finish.model_card = lambda *args, **kwargs: die()
sys.exit(main(argv))
