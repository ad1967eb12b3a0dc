"""``choral tune``'s outputs: ``params.yaml`` (what ``choral propagate --params`` reads) and its JSON report.

The one writer of both, whether the parameters were tuned or, with too few annotated
cuts, taken untuned from the base config.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..manifest import atomic_output, write_json
from ..propagate import PropagateConfig


def report_path(params_file: str | Path) -> Path:
    """The JSON report beside a params.yaml (``params.json``)."""
    return Path(params_file).with_suffix(".json")


def write_params(config: PropagateConfig, output: str | Path, header: str, report: Mapping[str, Any]) -> Path:
    """Write ``config`` under ``propagate:`` to ``output`` after the comment lines ``header``, then ``report``
    beside it (:func:`report_path`); returns the report's path."""
    with atomic_output(output) as tmp:
        tmp.write_text(header + yaml.safe_dump({"propagate": asdict(config)}, sort_keys=False), encoding="utf-8")
    report_file = report_path(output)
    write_json(dict(report), report_file)
    return report_file
