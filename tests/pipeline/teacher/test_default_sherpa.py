"""`choral export-teacher default DIR`, decoded by sherpa-onnx (a client no one here wrote): same 1-best as choral.

A subset of ``benchmarks/sherpa_agreement.py`` (which runs all 200 demo cuts): the first demo cuts of
every accent, greedy search and modified beam search (beam 4 = sherpa-onnx's ``max_active_paths``), one
thread on each side, dither 0. The beam comparison reads choral's final beam with sherpa-onnx's pick
(the same search); ``choral decode``'s own 1-best rescores the n-best exactly and is compared in the
benchmark.
"""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sherpa_onnx")

from choral.pipeline.teacher import DEFAULT_CHECKPOINT  # noqa: E402
from choral.pipeline.teacher.features import load_audio  # noqa: E402
from choral.pipeline.teacher.icefall_backend import load_icefall_teacher  # noqa: E402
from choral.pipeline.teacher.stateless_backend import is_stateless_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "benchmarks" / "accented"))

from corpus_io import load_demo  # noqa: E402
from sherpa_agreement import choral_best, export, sherpa_best  # noqa: E402

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file() or not is_stateless_checkpoint(DEFAULT_CHECKPOINT),
                                reason="the shipped default teacher is not a stateless checkpoint")
BEAM = 4


def test_sherpa_onnx_decodes_the_exported_default_teacher_as_choral_does(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    export(DEFAULT_CHECKPOINT, tmp_path / "teacher")  # the command a user runs: choral export-teacher
    teacher = load_icefall_teacher(tmp_path / "teacher", beam=BEAM, nbest=BEAM)
    cuts, _ = load_demo()
    by_accent: dict[str, list] = {}
    for cut in cuts:
        by_accent.setdefault(cut.custom.get("accent"), []).append(cut)
    chosen = [cut for group in by_accent.values() for cut in group[:3]]
    ours = choral_best(teacher, teacher.features(chosen), BEAM)
    samples = [load_audio(cut) for cut in chosen]
    greedy, _ = sherpa_best(tmp_path / "teacher", samples, "greedy_search", BEAM, 1, 8)
    beam, _ = sherpa_best(tmp_path / "teacher", samples, "modified_beam_search", BEAM, 1, 8)
    assert any(ours["greedy"]), "the teacher decoded nothing"
    for name, theirs, mine in (("greedy", greedy, ours["greedy"]), ("beam", beam, ours["search"])):
        differing = [(c.id, teacher.tokens.decode(a), teacher.tokens.decode(b))
                     for c, a, b in zip(chosen, mine, theirs) if a != b]
        assert not differing, (name, differing)
