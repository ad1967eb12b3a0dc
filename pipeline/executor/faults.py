"""A pause point for the fault tests: a worker waits at a chosen place so that a test can kill it there.

``CHORAL_FAULT_PAUSE=STAGE:DIR`` (forwarded to Ray's workers): the first worker to reach the pause point
of ``STAGE`` (``decode``, ``propagate``) writes its process id to ``DIR/STAGE.pid`` and waits up to
``CHORAL_FAULT_PAUSE_SECONDS`` (default 60) seconds; every later arrival (the retry of the killed task
included) passes straight through. Unset, the pause point costs one environment look-up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

VARIABLE = "CHORAL_FAULT_PAUSE"


def pause_point(stage: str) -> None:
    """Wait here if ``CHORAL_FAULT_PAUSE`` names ``stage`` and no worker has waited here before."""
    setting = os.environ.get(VARIABLE, "")
    name, _, folder = setting.partition(":")
    if name != stage or not folder:
        return
    marker = Path(folder) / f"{stage}.pid"
    try:
        descriptor = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(float(os.environ.get(VARIABLE + "_SECONDS", "60")))
