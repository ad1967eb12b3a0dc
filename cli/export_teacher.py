"""``choral export-teacher``: write a teacher checkpoint as ONNX models that sherpa-onnx and choral run.

A stateless-decoder checkpoint (:mod:`~choral.pipeline.teacher.stateless`) is written
exactly in the layout icefall's ``export-onnx.py`` produces (plus ``bpe.model``); a
character checkpoint with an LSTM predictor in choral's own ONNX layout.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ..pipeline.errors import ChoralError
from ..pipeline.teacher.bpe import BPE_FILE
from ..pipeline.teacher.icefall_export import export_icefall
from ..pipeline.teacher.model import load_checkpoint, parameter_count
from ..pipeline.teacher.onnx_export import MODEL_FILES, TOKENS_FILE, export_onnx
from ..pipeline.teacher.registry import backend_of, resolve_teacher, teacher_help
from ..pipeline.teacher.stateless import load_stateless
from ..pipeline.teacher.stateless_backend import StatelessCheckpointBackend
from ..pipeline.teacher.torch_backend import CheckpointBackend
from .common import console, stage_errors, summary_table


def export_teacher(
    checkpoint: str = typer.Argument(..., help=teacher_help(backends=[CheckpointBackend.name,
                                                                        StatelessCheckpointBackend.name])),
    out_dir: Path = typer.Argument(..., help="Folder for encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt "
                                             "(and bpe.model for a word-piece teacher)."),
) -> None:
    """Export a teacher to ONNX (encoder/decoder/joiner + tokens.txt), usable with `choral decode --teacher OUT_DIR`
    and with sherpa-onnx (a stateless-decoder teacher: icefall's layout)."""
    with stage_errors("export-teacher"):
        path = resolve_teacher(checkpoint)
        backend = backend_of(path)
        if not isinstance(backend, (CheckpointBackend, StatelessCheckpointBackend)):
            raise ChoralError(f"{path}: already {backend.kind}; export needs a checkpoint file")
        if isinstance(backend, StatelessCheckpointBackend):
            stateless, pieces = load_stateless(path)
            with console.status("exporting to ONNX (icefall layout)"):
                out = export_icefall(stateless, pieces, out_dir)
            c = stateless.config
            rows = [("parameters", f"{parameter_count(stateless):,}"),
                    ("vocabulary", f"{len(pieces)} sentencepiece pieces ({TOKENS_FILE}, {BPE_FILE})"),
                    ("decoder", f"stateless, context {c.context_size} (icefall layout)")]
        else:
            model, tokens = load_checkpoint(path)
            with console.status("exporting to ONNX"):
                out = export_onnx(model, tokens, out_dir)
            rows = [("parameters", f"{parameter_count(model):,}"),
                    ("vocabulary", f"{len(tokens)} tokens ({TOKENS_FILE})"),
                    ("decoder", f"lstm, {model.config.predictor_layers} layer(s) x {model.config.predictor_hidden}")]
    sizes = [(name, f"{(out / name).stat().st_size / 1e6:.2f} MB") for name in MODEL_FILES]
    console.print(summary_table(f"choral export-teacher -> {out}", [("checkpoint", str(path)), *rows, *sizes]))
