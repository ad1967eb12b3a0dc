from collections import defaultdict
from pathlib import Path

import pytest
from lhotse import MonoCut

from choral.pipeline.errors import InputError
from choral.pipeline.group import group_manifest
from choral.pipeline.manifest import read_cuts, write_cuts
from choral.pipeline.synthetic import SyntheticCorpus


def test_groups_follow_prompts(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    output = tmp_path / "grouped.jsonl.gz"
    summary = group_manifest(small_corpus.decoded, output)
    assert not summary.skipped
    cuts = read_cuts(output)
    assert len(cuts) == summary.n_cuts == small_corpus.n_cuts
    for cut in cuts:
        assert cut.custom["group_size"] >= 1
        assert cut.custom["group"].startswith("s" if cut.custom["group_size"] == 1 else "g")
    # nearly every cut shares a group with most readings of its prompt (similar prompts may merge)
    by_prompt: dict[int, list[str]] = defaultdict(list)
    for cut in cuts:
        by_prompt[small_corpus.prompt_of_cut[cut.id]].append(cut.custom["group"])
    in_modal_group = sum(max(groups.count(g) for g in groups) for groups in by_prompt.values())
    assert in_modal_group / len(cuts) > 0.9
    assert summary.n_groups < small_corpus.n_cuts / 4


def test_rerun_is_skipped_and_force_redoes(small_corpus: SyntheticCorpus, tmp_path: Path) -> None:
    output = tmp_path / "grouped.jsonl.gz"
    group_manifest(small_corpus.decoded, output)
    assert group_manifest(small_corpus.decoded, output).skipped
    assert not group_manifest(small_corpus.decoded, output, force=True).skipped


def test_cut_without_nbest_fails_naming_file_and_cut(tmp_path: Path) -> None:
    decoded = tmp_path / "decoded.jsonl.gz"
    write_cuts([MonoCut(id="ok", start=0, duration=1, channel=0, custom={"nbest": [{"text": "a b", "score": -1.0}]}),
                MonoCut(id="bare", start=0, duration=1, channel=0)], decoded)
    output = tmp_path / "grouped.jsonl.gz"
    with pytest.raises(InputError, match=r"decoded.jsonl.gz \(cut bare\): cut has no n-best"):
        group_manifest(decoded, output)
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoded.jsonl.gz"]
