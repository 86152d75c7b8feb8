"""OpenMP waiting policy for torch's CPU threads (set before torch is imported).

GNU OpenMP (torch's CPU thread pool on Linux) lets an idle thread spin about 300 000 times at
every barrier before it sleeps. On a machine where another process keeps one core busy, the
spinning thread takes the core that the working thread needs, at every one of the thousands
of small parallel regions of a reconstruction. Measured on the 2-core development machine,
2 torch threads, one single-threaded process beside it (bundled sample, shipped weights):
final 256^3 in 77 s with the default spin, 9.5 s with 2000 spins, 7.6 s with none; on the idle
machine 2000 spins and the default both gave 3.9-4.4 s. A user's own OpenMP settings win.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SPIN_COUNT = "2000"
_USER_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def limit_openmp_spinning(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a spin count or wait policy. Returns
    whether it was set. Only effective before torch (libgomp) is loaded."""
    if any(key in environ for key in _USER_KEYS):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
