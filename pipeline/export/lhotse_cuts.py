"""Export format ``lhotse``: icefall's ``<prefix>_cuts_<split>.jsonl.gz``, one supervision per cut.

The supervision spans the cut and carries the label as text, with teacher_text,
confidence and source in its custom; pipeline-internal cut fields are dropped.
With ``--with-fbank``, 80-dim Kaldi-compatible fbank goes into
``<prefix>_feats_<split>.lca`` (lilcom), as icefall's compute_fbank scripts do.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable

from lhotse import Fbank, FbankConfig, LilcomChunkyWriter, SupervisionSegment
from lhotse.cut import Cut
from lhotse.features.base import FeatureExtractor
from lhotse.features.io import FeaturesWriter
from lhotse.utils import fastcopy

from ..errors import InputError
from ..manifest import CutWriter, atomic_output
from .cuts import first_supervision_value
from .pseudo_labels import Label
from .registry import ExportPaths, register_export_format

# Pipeline-internal cut fields: meaningless to a student recipe, and embeddings/frames
# point into files that are not part of the export.
PIPELINE_FIELDS: frozenset[str] = frozenset({"choral", "nbest", "embedding", "frames", "group", "group_size"})
FBANK_BINS = 80


def training_cut(cut: Cut, label: Label) -> Cut:
    """The cut with exactly one supervision spanning it: the label as text, provenance in its custom."""
    supervision = SupervisionSegment(
        id=cut.id,
        recording_id=cut.recording_id if (cut.has_recording or cut.has_features) else cut.id,
        start=0.0,
        duration=cut.duration,
        channel=cut.channel,
        text=label.text,
        speaker=first_supervision_value(cut, "speaker"),
        language=first_supervision_value(cut, "language"),
        gender=first_supervision_value(cut, "gender"),
        custom=label.provenance(),
    )
    custom = {k: v for k, v in (cut.custom or {}).items() if k not in PIPELINE_FIELDS}
    return fastcopy(cut, supervisions=[supervision], custom=custom or None)


def _with_fbank(cut: Cut, extractor: FeatureExtractor, storage: FeaturesWriter, archive: Path, source: Path) -> Cut:
    """Compute and store the cut's fbank; point its features at the archive's final name."""
    if not cut.has_recording:
        raise InputError(source, "cut has no recording to compute fbank from", cut_id=cut.id)
    try:
        cut = cut.compute_and_store_features(extractor, storage)
    except Exception as error:  # audio backends raise many kinds
        raise InputError(source, f"cannot compute fbank ({error})", cut_id=cut.id) from None
    return fastcopy(cut, features=fastcopy(cut.features, storage_path=str(archive)))


def _fbank_step(stack: ExitStack, archive: Path, source: Path) -> Callable[[Cut], Cut]:
    """Open the lilcom archive (under a temporary name until ``stack`` closes cleanly); return the per-cut step."""
    storage = stack.enter_context(LilcomChunkyWriter(stack.enter_context(atomic_output(archive))))
    extractor = Fbank(FbankConfig(num_mel_bins=FBANK_BINS))
    return lambda cut: _with_fbank(cut, extractor, storage, archive, source)


@register_export_format("lhotse", output="{prefix}_cuts_{split}.jsonl.gz", features="{prefix}_feats_{split}.lca",
                        description="icefall/k2 recipes; one supervision per cut with teacher_text, confidence "
                                    "and source in its custom")
def write_lhotse(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
    """Write the training cuts (and the fbank archive); both are renamed into place only on success."""
    with ExitStack() as stack:
        # entered first, renamed last: the cuts never point at an archive that is not in place yet
        writer = stack.enter_context(CutWriter(paths.primary))
        featurize = _fbank_step(stack, paths.features, source) if paths.features is not None else None
        for cut, label in items:
            out = training_cut(cut, label)
            writer.write(featurize(out) if featurize is not None else out)
    return 0
