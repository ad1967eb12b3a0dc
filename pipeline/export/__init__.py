"""``choral export``: turn a rescored manifest into the student's training manifests.

The modules, each importing only those above it::

    pseudo_labels  Label: the cut's reference or rescored pseudo-label (custom.choral); the confidence filters
    registry       ExportFormat, ExportPaths, Writer; register_export_format / get_export_format
    cuts           what writers read from a cut: supervision metadata, its one audio file, segment or not
    lhotse_cuts    format "lhotse": <prefix>_cuts_<split>.jsonl.gz (+ fbank in <prefix>_feats_<split>.lca)
    nemo           format "nemo": <prefix>_<split>.json, JSON lines
    kaldi          format "kaldi": the data dir <prefix>_<split>/
    stage          ExportConfig, export_manifest, ExportSummary: filter, write, tally, sidecar

A new format is one module (or, outside the package, one function) decorated with
``register_export_format``; ``ExportConfig``, the run config and ``choral export``
take every registered name. The built-in formats register when imported below,
in the order help and errors list them.
"""

from __future__ import annotations

from .pseudo_labels import SOURCES, Label, drop_reason, pseudo_label
from .registry import (
    ExportFormat,
    ExportPaths,
    Writer,
    export_format_names,
    export_formats,
    get_export_format,
    register_export_format,
    unregister_export_format,
)
from .stage import ExportConfig, ExportSummary, SourceTally, export_manifest, export_paths

# The built-in formats register themselves; the import order is the order help and errors list them.
from . import lhotse_cuts, nemo, kaldi  # noqa: F401  # isort: skip

__all__ = [
    "SOURCES",
    "ExportConfig",
    "ExportFormat",
    "ExportPaths",
    "ExportSummary",
    "Label",
    "SourceTally",
    "Writer",
    "drop_reason",
    "export_format_names",
    "export_formats",
    "export_manifest",
    "export_paths",
    "get_export_format",
    "pseudo_label",
    "register_export_format",
    "unregister_export_format",
]
