"""A child spawned while the supervisor's liveness probe runs forks cleanly (anom24). The probe kept its stop flag
in `self._stop`, which shadows `threading.Thread._stop`, the method CPython calls on every other thread in a forked
child (`threading._after_fork`): each (re)start of a child under `tokenmeter up` printed "Exception ignored in:
<function _after_fork> ... TypeError: 'Event' object is not callable" on up's console, next to the restart line."""

from __future__ import annotations

import subprocess
import sys

from app.child_liveness import LivenessProbe
from app.process import child_preexec


def test_a_child_forked_beside_the_probe_prints_no_traceback():
    probe = LivenessProbe(lambda: [], every_s=0.05)
    probe.start()
    try:
        child = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=child_preexec, stderr=subprocess.PIPE,
                               timeout=60, check=True)
    finally:
        probe.stop()
        probe.join(5)
    assert b"Exception ignored" not in child.stderr and b"TypeError" not in child.stderr, child.stderr.decode()
    assert not probe.is_alive()
