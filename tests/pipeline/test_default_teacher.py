"""The shipped default teacher, checked on a handful of committed demo cuts."""

import sys
from pathlib import Path

import jiwer
import pytest

from choral.pipeline.teacher import DEFAULT_CHECKPOINT, open_teacher, resolve_teacher
from choral.pipeline.text import normalize

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks" / "accented"))

from corpus_io import load_demo  # noqa: E402

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="default teacher checkpoint not shipped")


def test_default_teacher_transcribes_majority_demo_cuts() -> None:
    cuts, references = load_demo()
    texts = {s.id: s.text for s in references}
    majority = [c for c in cuts if c.custom.get("accent") == "en-us"][:6]
    teacher = open_teacher(resolve_teacher("default"), beam=4, nbest=4)  # whichever backend claims it
    results = teacher.decode(majority)
    refs = [normalize(texts[c.id]) for c in majority]
    hyps = [r.nbest[0][0] for r in results]
    assert jiwer.wer(refs, hyps) < 0.35, list(zip(refs, hyps))
    for result in results:
        scores = [score for _, _, score in result.nbest]
        assert scores == sorted(scores, reverse=True) and len(set(t for t, _, _ in result.nbest)) == len(scores)
        assert result.embedding.ndim == 1 and result.frames.shape[1] == result.embedding.shape[0]
