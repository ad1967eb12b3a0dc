"""Log lines for people and for batch logs: ``-v``/``--verbose`` and ``CHORAL_LOG``.

The library only emits records (``logging.getLogger(__name__)`` in each module); the
command line decides where they go. The level is, first match wins:

- ``-v`` (info) or ``-vv`` (debug) before the sub-command: ``choral -v run configs/demo.yaml``;
- the ``CHORAL_LOG`` environment variable: a level name (``debug``, ``info``, ``warning``,
  ``error``) for cron jobs that cannot change the command line;
- ``warning`` otherwise.

Records go to stderr, one plain line each (``choral: INFO choral.kernels.dtw: ...``), so
stdout keeps the stage summaries and a cron log stays greppable.

``--log-json`` (or ``CHORAL_LOG_FORMAT=json``) writes each record as one JSON object per line
instead, for log shippers: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
``message``, the fields a record carries (``stage``, ``path``, ``cut_id``, given with ``extra=``)
and ``error`` (a traceback, when one is attached). The commands' one-line errors become such
records too (logger ``choral.cli``), so stderr holds nothing but JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

ENV_LEVEL = "CHORAL_LOG"
ENV_FORMAT = "CHORAL_LOG_FORMAT"
FORMATS = ("plain", "json")
LEVELS: dict[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                          "error": logging.ERROR}
_FORMAT = "choral: %(levelname)s %(name)s: %(message)s"


class LogLevelError(ValueError):
    """``CHORAL_LOG`` names no level (or ``CHORAL_LOG_FORMAT`` no format)."""


# attributes every LogRecord has: anything else was given with ``extra=`` and goes into the JSON object
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def json_record(level: str, logger: str, message: str, created: float | None = None,
                fields: dict[str, object] | None = None) -> str:
    """One log line as a JSON object: time, level, logger, message, then ``fields`` (not JSON types: as text)."""
    moment = datetime.fromtimestamp(created, timezone.utc) if created is not None else datetime.now(timezone.utc)
    entry: dict[str, object] = {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                                "level": level, "logger": logger, "message": message}
    for key, value in (fields or {}).items():
        entry.setdefault(key, value if isinstance(value, (str, int, float, bool, type(None))) else str(value))
    return json.dumps(entry, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Formats a record as :func:`json_record` (level in lower case, as ``CHORAL_LOG`` spells it)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return json_record(record.levelname.lower(), record.name, record.getMessage(), record.created, fields)


def resolve_format(log_json: bool, environment: str | None) -> str:
    """``json`` with ``--log-json``, else the ``CHORAL_LOG_FORMAT`` value, else ``plain``."""
    if log_json:
        return "json"
    if environment is None or not environment.strip():
        return "plain"
    if environment.strip().lower() not in FORMATS:
        raise LogLevelError(f"{ENV_FORMAT}={environment!r} is not a log format; use one of {', '.join(FORMATS)}")
    return environment.strip().lower()


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


def configure(verbose: int = 0, log_json: bool = False) -> int:
    """Send choral's records at the chosen level to stderr, as plain lines or JSON; returns the level."""
    level = resolve_level(verbose, os.environ.get(ENV_LEVEL))
    as_json = resolve_format(log_json, os.environ.get(ENV_FORMAT)) == "json"
    logger = logging.getLogger("choral")
    for handler in list(logger.handlers):
        if getattr(handler, "_choral", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler()  # stderr, looked up when the record is written
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(_FORMAT))
    handler._choral = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return level
