"""``choral synth``: a synthetic decoded manifest to try the rescoring stages on."""

from __future__ import annotations

from pathlib import Path

import typer

from ..pipeline.synthetic import SyntheticConfig, generate
from .common import console, stage_errors, summary_table


def synth(
    out_dir: Path = typer.Argument(..., help="Folder for decoded.jsonl.gz, embeddings.h5 and references.jsonl.gz."),
    cuts: int = typer.Option(2000, min=1, help="Approximate number of cuts (prompts x accents x speakers)."),
    speakers_per_accent: int = typer.Option(2, min=1, help="Readers of every prompt in each accent."),
    annotated_fraction: float = typer.Option(0.1, min=0.0, max=1.0, help="Fraction of cuts that carry references."),
    embedding_dim: int = typer.Option(64, min=2, help="Length of the pooled embedding vectors."),
    frames: bool = typer.Option(False, "--frames",
                                help="Also store encoder-frame sequences (for --metric dtw-frames)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same files."),
) -> None:
    """Generate a synthetic *decoded* manifest: prompts read in several accents, n-best lists in which accented
    cuts often rank a wrong text first, embeddings that are noisy copies of a per-prompt prototype.

    For trying and benchmarking group/graph/propagate without a teacher; references.jsonl.gz holds the truth.
    """
    with stage_errors("synth"):
        base = SyntheticConfig()
        per_prompt = len(base.accents) * speakers_per_accent
        config = SyntheticConfig(n_prompts=max(1, round(cuts / per_prompt)), speakers_per_accent=speakers_per_accent,
                                 annotated_fraction=annotated_fraction, embedding_dim=embedding_dim,
                                 frames=frames, seed=seed)
        with console.status("generating synthetic cuts"):
            corpus = generate(out_dir, config)
    console.print(summary_table(f"choral synth -> {out_dir}", [
        ("cuts", f"{corpus.n_cuts:,}"),
        ("prompts", f"{config.n_prompts:,}"),
        ("accents", ", ".join(config.accents)),
        ("decoded manifest", str(corpus.decoded)),
        ("references", str(corpus.references)),
    ]))
