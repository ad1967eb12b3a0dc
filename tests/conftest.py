"""Shared fixtures: small synthetic decoded corpora generated on the fly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from choral.pipeline.synthetic import SyntheticConfig, SyntheticCorpus, generate


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCorpus:
    """30 prompts x 4 accents x 2 speakers = 240 decoded cuts, 25% annotated, with frames."""
    out = tmp_path_factory.mktemp("corpus")
    return generate(out, SyntheticConfig(n_prompts=30, annotated_fraction=0.25, frames=True, seed=7))


@pytest.fixture()
def corpus_copy(small_corpus: SyntheticCorpus, tmp_path: Path) -> SyntheticCorpus:
    """A private copy of the decoded manifest (tests may corrupt it); embeddings are shared read-only."""
    target = tmp_path / "decoded.jsonl.gz"
    target.write_bytes(small_corpus.decoded.read_bytes())
    return SyntheticCorpus(target, small_corpus.embeddings, small_corpus.references, small_corpus.n_cuts,
                           small_corpus.prompt_of_cut, small_corpus.reference_of_cut)


@pytest.fixture()
def one_torch_thread():
    """Tests that run a tiny teacher: far faster on one thread than on cores shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
