"""Export format ``lhotse``: icefall's ``<prefix>_cuts_<split>.jsonl.gz``, one supervision per cut.

The supervision spans the cut and carries the label as text, with teacher_text,
confidence and source in its custom; pipeline-internal cut fields are dropped.
With ``--with-fbank``, 80-dim Kaldi-compatible fbank goes into
``<prefix>_feats_<split>.lca`` (lilcom), as icefall's compute_fbank scripts do.

The writer is registered ``raw``: it gets each cut as its manifest line's JSON object and
writes the line back with the supervision and custom replaced (:func:`training_dict`), the
same JSON :func:`training_cut` gives through lhotse (``to_dict`` of a cut read from a line
choral wrote is that line), without building lhotse objects; only ``--with-fbank``, which
reads the audio, builds the cut.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable, Mapping

from lhotse import Fbank, FbankConfig, LilcomChunkyWriter, SupervisionSegment
from lhotse.cut import Cut
from lhotse.features.base import FeatureExtractor
from lhotse.features.io import FeaturesWriter
from lhotse.serialization import deserialize_item
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


def _first_value(supervisions: list, name: str) -> object | None:
    """:func:`.cuts.first_supervision_value` on supervision dicts."""
    return next((s[name] for s in supervisions if isinstance(s, Mapping) and s.get(name) is not None), None)


def training_dict(data: dict, label: Label) -> dict:
    """:func:`training_cut` on a cut's JSON object (a MonoCut or MultiCut line): the same object
    ``training_cut(cut, label).to_dict()`` is, built without lhotse. ``data`` is changed in place."""
    recording, features = data.get("recording"), data.get("features")
    if isinstance(recording, Mapping):
        recording_id = recording.get("id")
    elif isinstance(features, Mapping):
        recording_id = features.get("recording_id")
    else:
        recording_id = data["id"]
    supervisions = data.get("supervisions") or []
    supervision = {"id": data["id"], "recording_id": recording_id, "start": 0.0, "duration": data["duration"],
                   "channel": data.get("channel"), "text": label.text,
                   **{name: _first_value(supervisions, name) for name in ("language", "speaker", "gender")},
                   "custom": label.provenance()}
    data["supervisions"] = [{k: v for k, v in supervision.items() if v is not None}]
    custom = {k: v for k, v in (data.get("custom") or {}).items() if k not in PIPELINE_FIELDS}
    if custom:
        data["custom"] = custom
    else:
        data.pop("custom", None)
    return data


def _with_fbank(cut: Cut, extractor: FeatureExtractor, storage: FeaturesWriter, archive: Path, source: Path) -> Cut:
    """Compute and store the cut's fbank; point its features at the archive's final name."""
    if not cut.has_recording:
        raise InputError(source, "cut has no recording to compute fbank from", cut_id=cut.id)
    try:
        cut = cut.compute_and_store_features(extractor, storage)
    except Exception as error:  # audio backends raise many kinds
        raise InputError(source, f"cannot compute fbank ({error})", cut_id=cut.id) from None
    return fastcopy(cut, features=fastcopy(cut.features, storage_path=str(archive)))


def _fbank_step(stack: ExitStack, archive: Path, source: Path) -> Callable[[dict], dict]:
    """Open the lilcom archive (under a temporary name until ``stack`` closes cleanly); return the per-cut step
    (a training cut's JSON object in, the same with its features out)."""
    storage = stack.enter_context(LilcomChunkyWriter(stack.enter_context(atomic_output(archive))))
    extractor = Fbank(FbankConfig(num_mel_bins=FBANK_BINS))

    def featurize(data: dict) -> dict:
        cut = deserialize_item(data)
        return _with_fbank(cut, extractor, storage, archive, source).to_dict()

    return featurize


@register_export_format("lhotse", output="{prefix}_cuts_{split}.jsonl.gz", features="{prefix}_feats_{split}.lca",
                        description="icefall/k2 recipes; one supervision per cut with teacher_text, confidence "
                                    "and source in its custom", raw=True)
def write_lhotse(items: Iterable[tuple[dict, Label]], paths: ExportPaths, source: Path) -> int:
    """Write the training cuts (and the fbank archive); both are renamed into place only on success."""
    with ExitStack() as stack:
        # entered first, renamed last: the cuts never point at an archive that is not in place yet
        writer = stack.enter_context(CutWriter(paths.primary))
        featurize = _fbank_step(stack, paths.features, source) if paths.features is not None else None
        for data, label in items:
            out = training_dict(data, label)
            writer.write_dict(featurize(out) if featurize is not None else out)
    return 0
