"""Log lines for people and for batch logs: ``-v``/``--verbose`` and ``CHORAL_LOG``.

The library only emits records (``logging.getLogger(__name__)`` in each module); the
command line decides where they go. The level is, first match wins:

- ``-v`` (info) or ``-vv`` (debug) before the sub-command: ``choral -v run configs/demo.yaml``;
- the ``CHORAL_LOG`` environment variable: a level name (``debug``, ``info``, ``warning``,
  ``error``) for cron jobs that cannot change the command line;
- ``warning`` otherwise.

Records go to stderr, one plain line each (``choral: INFO choral.kernels.dtw: ...``), so
stdout keeps the stage summaries and a cron log stays greppable.
"""

from __future__ import annotations

import logging
import os

ENV_LEVEL = "CHORAL_LOG"
LEVELS: dict[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                          "error": logging.ERROR}
_FORMAT = "choral: %(levelname)s %(name)s: %(message)s"


class LogLevelError(ValueError):
    """``CHORAL_LOG`` names no level."""


def resolve_level(verbose: int, environment: str | None) -> int:
    """The level for ``verbose`` counted ``-v`` flags and the ``CHORAL_LOG`` value (flags win)."""
    if verbose >= 2:
        return logging.DEBUG
    if verbose == 1:
        return logging.INFO
    if environment is None or not environment.strip():
        return logging.WARNING
    try:
        return LEVELS[environment.strip().lower()]
    except KeyError:
        raise LogLevelError(f"{ENV_LEVEL}={environment!r} is not a level; use one of "
                            f"{', '.join(LEVELS)}") from None


def configure(verbose: int = 0) -> int:
    """Send choral's records at the chosen level to stderr; returns the level."""
    level = resolve_level(verbose, os.environ.get(ENV_LEVEL))
    logger = logging.getLogger("choral")
    for handler in list(logger.handlers):
        if getattr(handler, "_choral", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler()  # stderr, looked up when the record is written
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler._choral = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return level
