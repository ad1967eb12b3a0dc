"""The teacher's training recipe (benchmarks/accented/train_teacher.py) on a miniature generated corpus.

Tiny models, a few steps on a handful of tone cuts with made-up transcripts: a run
writes its training state periodically; a run "killed" after that state was written
and resumed from it ends with exactly the weights of the run that was never
interrupted (same batches, augmentation and dropout); the best checkpoint opens
with choral's teacher registry (the stateless backend for the stateless
architecture) and decodes.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from lhotse import CutSet, SupervisionSegment, SupervisionSet

from choral.pipeline.teacher import open_teacher, resolve_teacher
from choral.pipeline.teacher.bpe import SentencePieceTable
from choral.pipeline.teacher.registry import backend_of

ACCENTED = Path(__file__).resolve().parents[2] / "benchmarks" / "accented"
TEXTS = [
    "set a timer for ten minutes", "what is the weather in denver", "play some jazz music",
    "turn off the kitchen lights", "call mom on her mobile", "navigate to the airport",
    "add milk to my shopping list", "how tall is mount everest",
]
TINY = {  # two encoder layers with dropout, so the resumed run needs the stored random state
    "char": {"conv_channels": 4, "encoder_input": 16, "encoder_hidden": 16, "encoder_layers": 2,
             "embedding_dim": 8, "predictor_hidden": 16, "joiner_dim": 16, "dropout": 0.1},
    "stateless": {"conv_channels": 4, "encoder_input": 16, "encoder_hidden": 16, "encoder_layers": 2,
                  "decoder_dim": 16, "joiner_dim": 16, "dropout": 0.1},
}


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(ACCENTED))
    threads = torch.get_num_threads()
    try:
        import eval_teacher
        import train_speed
        import train_teacher
        yield train_teacher, train_speed, eval_teacher
    finally:
        sys.path.remove(str(ACCENTED))
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(modules, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    _, train_speed, _ = modules
    folder = tmp_path_factory.mktemp("corpus")
    train = train_speed.write_tone_corpus(folder, "teacher_train", TEXTS, [0.7 + 0.1 * i for i in range(8)], seed=1)
    dev = train_speed.write_tone_corpus(folder, "teacher_dev", TEXTS[:3], [0.9, 1.1, 0.8], seed=2)
    return train, dev


def options(arch: str, corpus: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return ["--arch", arch, "--train", str(corpus[0]), "--dev", str(corpus[1]), "--out", str(out),
            "--model-config", json.dumps(TINY[arch]), "--bpe-vocab", "40", "--steps", "6", "--warmup", "2",
            "--lr", "5e-3", "--batch-seconds", "3", "--checkpoint-every", "2", "--eval-every", "3",
            "--threads", "1", "--log-every", "1", *extra]


@pytest.mark.parametrize("arch", ["stateless", "char"])
def test_killed_run_resumes_exactly_and_its_checkpoint_decodes(arch, modules, corpus, tmp_path, monkeypatch,
                                                               capsys):
    tt, _, _ = modules
    write_state = tt.write_state
    written: list[int] = []

    def keep_copies(run, path: Path) -> None:  # every state the uninterrupted run writes, by step
        write_state(run, path)
        written.append(run.progress.step)
        shutil.copy(path, path.with_name(f"{path.name}.step{run.progress.step}"))

    monkeypatch.setattr(tt, "write_state", keep_copies)
    whole = tt.train(tt.parse_args(options(arch, corpus, tmp_path / "whole.pt")))
    assert whole.progress.step == 6 and math.isfinite(whole.progress.last_loss)
    assert 2 in written and 4 in written  # the periodic writes (every 2 steps), besides those after evaluations
    monkeypatch.setattr(tt, "write_state", write_state)

    # a run killed during step 3: what is left is the state written after step 2
    state = tmp_path / "killed.state.pt"
    shutil.copy(tmp_path / "whole.state.pt.step2", state)
    capsys.readouterr()
    resumed = tt.train(tt.parse_args(["--resume", "--train", str(corpus[0]), "--dev", str(corpus[1]),
                                      "--out", str(tmp_path / "killed.pt"), "--threads", "1", "--log-every", "1"]))
    log = capsys.readouterr().out
    assert "at step 2" in log and "step     3  " in log and "step     2  " not in log
    assert resumed.progress.step == 6 and math.isfinite(resumed.progress.last_loss)
    assert resumed.progress.epoch == whole.progress.epoch
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed.progress.best_wer == whole.progress.best_wer

    teacher_path = resolve_teacher(tmp_path / "killed.pt")
    assert backend_of(teacher_path).name == ("stateless" if arch == "stateless" else "checkpoint")
    teacher = open_teacher(teacher_path, beam=4, nbest=4)
    cuts = list(tt.load_cuts(corpus[1]))
    results = teacher.decode(cuts)
    assert len(results) == len(cuts)
    for result in results:
        assert result.nbest and all(math.isfinite(score) for _, _, score in result.nbest)
    if arch == "stateless":
        assert isinstance(teacher.tokens, SentencePieceTable)
        assert 10 < len(teacher.tokens) <= 40
        # the vocabulary beside the checkpoint is the one inside it, trained on the training transcripts only
        assert (tmp_path / "whole.bpe.model").read_bytes() == teacher.tokens.model_bytes
        assert (corpus[0].parent / (corpus[0].name + ".logmel.npz")).is_file()
    else:
        assert (corpus[0].parent / (corpus[0].name + ".features.npz")).is_file()


def test_invocation_bound_then_resume(modules, corpus, tmp_path, capsys):
    tt, _, _ = modules
    first = tt.train(tt.parse_args(options("stateless", corpus, tmp_path / "t.pt", "--stop-after-steps", "2")))
    assert first.progress.step == 2
    assert "stopped (resume with --resume)" in capsys.readouterr().out
    assert (tmp_path / "t.pt").is_file()  # the invocation's end is evaluated and the best model kept
    second = tt.train(tt.parse_args(options("stateless", corpus, tmp_path / "t.pt", "--resume")))
    assert second.progress.step == 6 and "done: step 6" in capsys.readouterr().out
    again = tt.train(tt.parse_args(options("stateless", corpus, tmp_path / "t.pt", "--resume")))
    assert again.progress.step == 6  # a finished run stays finished


def test_refuses_to_overwrite_or_mix_runs(modules, corpus, tmp_path, capsys):
    tt, _, _ = modules
    out = tmp_path / "t.pt"
    with pytest.raises(SystemExit) as missing:
        tt.main(options("stateless", corpus, out, "--resume"))
    assert missing.value.code == 1 and "no training state to resume" in capsys.readouterr().err
    tt.main(options("stateless", corpus, out, "--stop-after-steps", "1"))
    with pytest.raises(SystemExit):
        tt.main(options("stateless", corpus, out))  # a state exists: starting over needs it removed
    assert "pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tt.main(options("stateless", corpus, out, "--lr", "1e-3", "--resume"))
    assert "--lr 0.001 differs from the run being resumed (0.005)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tt.main(options("stateless", corpus, out, "--resume", "--train", str(corpus[1])))
    assert "not the training data of the run being resumed" in capsys.readouterr().err


def test_eval_teacher_table_for_a_stateless_checkpoint(modules, corpus, tmp_path, capsys):
    tt, train_speed, eval_teacher = modules
    tt.main(options("stateless", corpus, tmp_path / "t.pt", "--stop-after-steps", "2"))
    # a pool in two accents; one accented prompt has words the teacher never heard in training
    texts = [TEXTS[0], TEXTS[1], TEXTS[2], "the quiet harbour sleeps"]
    accents = ["en-us", "en-us", "en-gb-x-rp", "en-gb-x-rp"]
    written = train_speed.write_tone_corpus(tmp_path, "pool", texts, [1.0, 0.9, 1.2, 0.8], seed=3)
    cuts = [cut.with_custom("accent", accent) for cut, accent in zip(tt.load_cuts(written), accents)]
    pool = tmp_path / "pool_cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(pool)
    references = tmp_path / "pool_references.jsonl.gz"
    SupervisionSet.from_segments([SupervisionSegment(id=c.id, recording_id=c.recording_id, start=0.0,
                                                     duration=c.duration, text=t, custom={"accent": a})
                                  for c, t, a in zip(cuts, texts, accents)]).to_file(references)
    capsys.readouterr()
    eval_teacher.main(["--teacher", str(tmp_path / "t.pt"), "--dev", str(corpus[1]), "--pool", str(pool),
                       "--references", str(references), "--train", str(corpus[0]), "--beam", "4", "--nbest", "4"])
    table = capsys.readouterr().out
    assert "(stateless backend), beam 4, n-best 4" in table
    rows = {line[:32].strip(): line[32:].split() for line in table.splitlines() if line[:32].strip()}
    assert rows["majority (teacher_dev)"][0] == "3" and rows["majority (teacher_dev)"][-1] == "1.00"
    assert rows["pool en-us"][0] == "2" and rows["pool en-gb-x-rp"][0] == "2"
    assert rows["in vocabulary"][0] == "1" and rows["unseen words"][0] == "1"
    for name in ("majority (teacher_dev)", "pool en-us", "pool en-gb-x-rp"):
        one, oracle = (float(v.rstrip("%")) for v in rows[name][1:3])
        assert 0 <= oracle <= one


def test_noise_augmentation_is_what_the_noisy_waveform_gives(modules, corpus, tmp_path, capsys):
    """``--noise``: white noise added to raw log-mel in the power domain lands where the fbank of the noisy
    waveform does (within the noise's frame-to-frame spread), at the SNR asked; it trains, and it is refused for
    the character model's normalised features and outside [0, 1]."""
    import numpy as np

    from choral.pipeline.teacher.features import log_mel

    tt, _, _ = modules
    t = np.arange(32_000) / 16_000
    speech = (0.3 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    clean = log_mel(speech)
    for snr in (5.0, 20.0):
        gain = np.exp(clean).mean() / (np.exp(tt.white_noise_log_mel()).mean() * 10 ** (snr / 10))
        noise = np.random.default_rng(3).standard_normal(len(speech)).astype(np.float32)
        real = log_mel(speech + np.sqrt(gain) * noise)
        estimate = tt.add_noise(clean, snr)
        assert np.abs(real - estimate).mean() < 0.15 * np.abs(real - clean).mean()
    tt.main(options("stateless", corpus, tmp_path / "n.pt", "--noise", "1", "--stop-after-steps", "2"))
    assert "step" in capsys.readouterr().out
    for arch, share, message in (("char", "0.5", "--noise needs --arch stateless"),
                                 ("stateless", "1.5", "--noise must be a share in [0, 1]")):
        with pytest.raises(SystemExit):
            tt.main(options(arch, corpus, tmp_path / f"{arch}{share}.pt", "--noise", share))
        assert message in capsys.readouterr().err
