"""``choral export-teacher``: write a teacher checkpoint as ONNX models in the icefall / sherpa-onnx layout."""

from __future__ import annotations

from pathlib import Path

import typer

from ..pipeline.errors import ChoralError
from ..pipeline.teacher.model import load_checkpoint, parameter_count
from ..pipeline.teacher.onnx_export import MODEL_FILES, TOKENS_FILE, export_onnx
from ..pipeline.teacher.registry import backend_of, resolve_teacher, teacher_help
from ..pipeline.teacher.torch_backend import CheckpointBackend
from .common import console, stage_errors, summary_table


def export_teacher(
    checkpoint: str = typer.Argument(..., help=teacher_help(backends=[CheckpointBackend.name])),
    out_dir: Path = typer.Argument(..., help="Folder for encoder.onnx, decoder.onnx, joiner.onnx and tokens.txt."),
) -> None:
    """Export a teacher to ONNX (encoder/decoder/joiner + tokens.txt), usable with `choral decode --teacher OUT_DIR`."""
    with stage_errors("export-teacher"):
        path = resolve_teacher(checkpoint)
        backend = backend_of(path)
        if not isinstance(backend, CheckpointBackend):
            raise ChoralError(f"{path}: already {backend.kind}; export needs a checkpoint file")
        model, tokens = load_checkpoint(path)
        with console.status("exporting to ONNX"):
            out = export_onnx(model, tokens, out_dir)
    sizes = [(name, f"{(out / name).stat().st_size / 1e6:.2f} MB") for name in MODEL_FILES]
    console.print(summary_table(f"choral export-teacher -> {out}", [
        ("checkpoint", str(path)),
        ("parameters", f"{parameter_count(model):,}"),
        ("vocabulary", f"{len(tokens)} tokens ({TOKENS_FILE})"),
        ("decoder", f"lstm, {model.config.predictor_layers} layer(s) x {model.config.predictor_hidden}"),
        *sizes,
    ]))
