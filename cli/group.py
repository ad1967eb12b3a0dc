"""``choral group``: group cuts whose n-best hypotheses overlap."""

from __future__ import annotations

from pathlib import Path

import typer

from ..pipeline.group import GroupingConfig, group_manifest
from ..pipeline.text import TextNormalizer
from .common import (
    DEFAULT_DIGITS,
    DIGITS_HELP,
    Digits,
    console,
    print_skipped,
    progress_bar,
    stage_errors,
    summary_table,
)

_DEFAULT = GroupingConfig()


def group(
    decoded: Path = typer.Argument(..., help="Decoded manifest (cuts with custom.nbest), e.g. RUN/decoded.jsonl.gz."),
    output: Path = typer.Argument(..., help="Where to write the grouped manifest, e.g. RUN/grouped.jsonl.gz."),
    top_k: int = typer.Option(_DEFAULT.top_k, min=1, help="How many of each cut's best hypotheses form its word set."),
    jaccard: float = typer.Option(_DEFAULT.jaccard_threshold, min=0.0, max=1.0,
                                  help="Cuts join a group when their word-set Jaccard similarity is at least this."),
    num_perm: int = typer.Option(_DEFAULT.num_perm, min=1,
                                 help="MinHash permutations (more: fewer missed pairs, slower)."),
    bands: int = typer.Option(_DEFAULT.bands, min=1, help="LSH bands; num-perm must be a multiple of it."),
    max_group_size: int = typer.Option(_DEFAULT.max_group_size, min=2,
                                       help="Larger groups are split into chunks of at most this many cuts "
                                            "(the graph stage is quadratic in group size)."),
    acoustic_neighbours: int = typer.Option(
        _DEFAULT.acoustic_neighbours, min=0,
        help="Group the cuts word overlap leaves alone (words the teacher never heard) by sound: link each to its "
             "mutual k nearest singletons by pooled-embedding cosine (0: off). Their groups are named a<N>."),
    digits: Digits = typer.Option(DEFAULT_DIGITS, help=DIGITS_HELP),
    seed: int = typer.Option(_DEFAULT.seed, min=0, help="Seed of the MinHash permutations."),
    force: bool = typer.Option(False, "--force", help="Redo the stage even if the output is up to date."),
) -> None:
    """Group utterances whose n-best hypotheses overlap (MinHash LSH over word sets; linear in the number of cuts).

    Adds custom.group (g<N>; a<N> for a group formed by sound; s<N> for a singleton) and custom.group_size
    to every cut.
    Only cuts of the same group are compared by `choral graph`.
    """
    with stage_errors("group", options={"jaccard_threshold": "--jaccard"}):
        config = GroupingConfig(top_k=top_k, jaccard_threshold=jaccard, num_perm=num_perm, bands=bands,
                                max_group_size=max_group_size, seed=seed, acoustic_neighbours=acoustic_neighbours)
        normalizer = TextNormalizer(digits=digits.value)
        with progress_bar() as progress:
            summary = group_manifest(decoded, output, config, normalizer, force=force, progress=progress)
    if summary.skipped:
        print_skipped("group", output)
        return
    grouped = summary.n_cuts - summary.n_singletons
    console.print(summary_table(f"choral group -> {output}", [
        ("cuts", f"{summary.n_cuts:,}"),
        ("groups (2+ cuts)", f"{summary.n_groups - summary.n_singletons:,}"),
        ("cuts in groups", f"{grouped:,} ({100 * grouped / max(summary.n_cuts, 1):.1f}%)"),
        ("singletons", f"{summary.n_singletons:,}"),
        ("groups formed by sound", f"{summary.n_by_sound:,}"),
        ("largest group", f"{summary.largest:,}"),
        ("components split", f"{summary.n_split:,} (max size {max_group_size})"),
        ("time", f"{summary.seconds:.1f} s"),
    ]))
