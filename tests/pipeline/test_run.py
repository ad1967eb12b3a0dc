"""``run_pipeline``: every stage from one config, skipping what is up to date, under a run lock."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import SupervisionSegment

from choral.pipeline.errors import ChoralError, InputError
from choral.pipeline.manifest import read_cuts
from choral.pipeline.propagate import load_params
from choral.pipeline.run import STAGES, RunLocked, load_run_config, run_lock, run_pipeline
from choral.pipeline.teacher import (
    TransducerConfig,
    TransducerTeacher,
    open_teacher,
    registry,
    save_teacher,
    teacher_scorer,
)

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)
PROMPTS = ["the cat sat on the mat", "the cat ran to the mat", "a dog sat on the rug", "a dog ran to the rug"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=2), path)
    return path


def tone(path: Path, seconds: float, freq: float, rate: int = 16_000, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32),
             rate)


def make_project(root: Path, teacher: Path, *, n_cuts: int = 12, n_annotated: int = 5, tune: bool = True,
                 references: bool = True, extra: str = "") -> Path:
    """An audio folder of ``n_cuts`` tones in two speaker folders (cuts of the same prompt share their audio,
    so their n-best lists overlap and they group; one is an 8 kHz FLAC), Kaldi-text annotations for the first
    ``n_annotated``, lhotse supervision references with an ``accent`` for all, and the run config (returned)."""
    ids, texts = [], {}
    for i in range(n_cuts):
        cut_id = f"spk{1 + i % 2}-u{i:02d}"
        prompt = i % len(PROMPTS)
        path = root / "audio" / f"spk{1 + i % 2}" / f"u{i:02d}.{'flac' if i == 3 else 'wav'}"
        tone(path, 1.0 + 0.2 * prompt, 200.0 + 60 * prompt, rate=8_000 if i == 3 else 16_000, seed=prompt)
        ids.append(cut_id)
        texts[cut_id] = PROMPTS[prompt]
    (root / "text").write_text("".join(f"{i} {texts[i]}\n" for i in ids[:n_annotated]))
    with (root / "references.jsonl").open("w") as handle:
        for k, cut_id in enumerate(ids):
            supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=1.0,
                                             text=texts[cut_id], custom={"accent": "uk" if k % 3 else "in"})
            handle.write(json.dumps(supervision.to_dict()) + "\n")
    config = root / "run.yaml"
    config.write_text(
        "run_dir: run\n"
        "input:\n  audio_dir: audio\n" + ("  annotations: text\n" if n_annotated else "")
        + f"decode:\n  teacher: {teacher}\n  nbest: 3\n  beam: 3\n  batch_duration: 10\n"
        + ("tune:\n  folds: 2\n  alpha: [0.5, 0.9]\n  fusion_weight: [0.3]\n  temperature: [1.0]\n"
           "  threshold_scale: [1.0]\n" if tune else "tune:\n  enabled: false\n")
        + ("eval:\n  references: references.jsonl\n  by: [accent]\n" if references else "")
        + extra)
    return config


def statuses(summary) -> dict[str, str]:
    return {s.stage: s.status for s in summary.stages}


def output_files(run_dir: Path) -> dict[str, int]:
    """mtime of every file in the run directory but the run summary and the lock."""
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def test_full_run_then_nothing_to_do_then_new_annotation(tmp_path: Path, teacher: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_run_config(make_project(tmp_path, teacher))
    seen = []
    summary = run_pipeline(config, on_stage=seen.append)
    assert [s.stage for s in summary.stages] == list(STAGES) == [s.stage for s in seen]
    assert summary.ran == list(STAGES), statuses(summary)
    details = {s.stage: s.detail for s in summary.stages}
    assert details["prepare"].startswith("12 cuts") and "5 annotated" in details["prepare"]
    assert details["decode"].startswith("12 cuts, 0 failed")
    assert all(s.seconds >= 0 and s.peak_rss_mib > 0 for s in summary.stages)

    run_dir = tmp_path / "run"
    for name in ("prepare/cuts.jsonl.gz", "prepare/failed.jsonl", "decode/decoded.jsonl.gz", "decode/embeddings.h5",
                 "grouped.jsonl.gz", "graph.npz", "threshold.json", "params.yaml", "params.json",
                 "rescored.jsonl.gz", "eval/report.json", "eval/report.md", "eval/report.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "export").iterdir())
    assert len(read_cuts(run_dir / "rescored.jsonl.gz")) == 12

    record = json.loads((run_dir / "run.json").read_text())
    assert record["run_dir"] == str(run_dir) and [s["stage"] for s in record["stages"]] == list(STAGES)
    assert all(s["status"] == "ran" for s in record["stages"]) and record["peak_rss_mib"] > 0

    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert summary.report == report
    assert report["unannotated"]["n_cuts"] == 7 and report["annotated"]["n_cuts"] == 5
    assert set(report["unannotated"]["breakdown"]["accent"]) == {"uk", "in"}

    # nothing new: every stage skipped, nothing rewritten, and the teacher is not even loaded for scoring
    before = output_files(run_dir)
    monkeypatch.setattr(registry, "open_teacher", lambda *a, **k: pytest.fail("teacher loaded for a skipped stage"))
    again = run_pipeline(config)
    assert set(statuses(again).values()) == {"skipped"} and again.ran == []
    assert again.report == report
    assert output_files(run_dir) == before
    assert [s["status"] for s in json.loads((run_dir / "run.json").read_text())["stages"]] == ["skipped"] * 8
    monkeypatch.undo()

    # a new transcript changes the input: everything is redone from prepare on
    with (tmp_path / "text").open("a") as handle:
        handle.write("spk2-u05 the cat ran to the mat\n")
    third = run_pipeline(load_run_config(tmp_path / "run.yaml"))
    assert third.ran == list(STAGES)
    assert "6 annotated" in third.stages[0].detail
    assert third.report["unannotated"]["n_cuts"] == 6


def test_until_stops_after_that_stage_and_a_later_run_continues(tmp_path: Path, teacher: Path) -> None:
    config = load_run_config(make_project(tmp_path, teacher, n_cuts=6, n_annotated=3))
    summary = run_pipeline(config, until="group")
    assert statuses(summary) == {"prepare": "ran", "decode": "ran", "group": "ran"}
    run_dir = tmp_path / "run"
    assert (run_dir / "grouped.jsonl.gz").is_file() and not (run_dir / "graph.npz").exists()
    assert [s["stage"] for s in json.loads((run_dir / "run.json").read_text())["stages"]] == ["prepare", "decode",
                                                                                             "group"]
    assert summary.report is None

    rest = run_pipeline(config)
    assert statuses(rest) == {"prepare": "skipped", "decode": "skipped", "group": "skipped", "graph": "ran",
                              "tune": "ran", "propagate": "ran", "export": "ran", "eval": "ran"}

    forced = run_pipeline(config, until="prepare", force=True)
    assert statuses(forced) == {"prepare": "ran"}
    with pytest.raises(ChoralError, match="unknown stage 'bogus'"):
        run_pipeline(config, until="bogus")

    # --force-stage redoes one stage; the later ones rerun only because its output changed
    one = run_pipeline(config, until="graph", force_stages=("group",))  # decode: prepare was forced above
    assert statuses(one) == {"prepare": "skipped", "decode": "ran", "group": "ran", "graph": "ran"}
    two = run_pipeline(config, until="graph", force_stages=("graph",))
    assert statuses(two) == {"prepare": "skipped", "decode": "skipped", "group": "skipped", "graph": "ran"}
    with pytest.raises(ChoralError, match="unknown stage 'bogus'"):
        run_pipeline(config, force_stages=("bogus",))


def test_optional_stages_are_off(tmp_path: Path, teacher: Path) -> None:
    """tune off, no scorer, no references; a lhotse manifest needing nothing is decoded as it is."""
    config_file = make_project(tmp_path, teacher, n_cuts=4, n_annotated=0, tune=False, references=False,
                               extra="propagate:\n  scorer: false\n  alpha: 0.5\n")
    config = load_run_config(config_file)
    assert not config.tune_enabled and not config.scorer and config.eval.references is None
    summary = run_pipeline(config)
    assert statuses(summary) == {"prepare": "ran", "decode": "ran", "group": "ran", "graph": "ran", "tune": "off",
                                 "propagate": "ran", "export": "ran", "eval": "off"}
    assert not (tmp_path / "run" / "params.yaml").exists() and not (tmp_path / "run" / "eval").exists()
    assert summary.report is None
    meta = json.loads((tmp_path / "run" / "rescored.jsonl.gz.meta.json").read_text())
    assert meta["params"]["scorer"] is None and meta["params"]["propagate"]["alpha"] == 0.5

    # the scorer of `choral run` and `choral propagate --teacher` is keyed at once and opens the teacher when used
    grouped = tmp_path / "run" / "grouped.jsonl.gz"
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(registry, "open_teacher", lambda *a, **k: pytest.fail("teacher opened before scoring"))
        lazy = teacher_scorer(grouped, str(teacher))
    assert (lazy.name, lazy.inputs) == (f"teacher:{teacher.resolve()}", [teacher])
    eager = open_teacher(teacher).scorer(read_cuts(grouped))
    cut_id = read_cuts(grouped)[0].id
    assert list(lazy(cut_id, ["the cat", "a dog"])) == list(eager(cut_id, ["the cat", "a dog"]))

    # the prepared manifest as input: prepare is off, decode reads it directly
    prepared = tmp_path / "cuts.jsonl.gz"
    shutil.copy(tmp_path / "run" / "prepare" / "cuts.jsonl.gz", prepared)
    config_file.write_text(config_file.read_text().replace("  audio_dir: audio\n", f"  cuts: {prepared}\n")
                           .replace("run_dir: run", "run_dir: run2"))
    summary = run_pipeline(load_run_config(config_file), until="decode")
    assert statuses(summary) == {"prepare": "off", "decode": "ran"}
    assert not (tmp_path / "run2" / "prepare").exists()


def test_tune_switches_itself_off_below_two_annotated_cuts(tmp_path: Path, teacher: Path) -> None:
    config = load_run_config(make_project(tmp_path, teacher, n_cuts=4, n_annotated=1))
    summary = run_pipeline(config)
    tune = next(s for s in summary.stages if s.stage == "tune")
    assert tune.status == "off" and "1 annotated" in tune.detail
    assert statuses(summary)["propagate"] == "ran"
    # the params file holds the config's own values, so propagate ran with them
    assert load_params(tmp_path / "run" / "params.yaml") == config.propagate
    again = run_pipeline(config)
    assert statuses(again)["tune"] == "skipped"


def test_a_held_lock_stops_a_second_run_before_any_work(tmp_path: Path, teacher: Path) -> None:
    config = load_run_config(make_project(tmp_path, teacher, n_cuts=3, n_annotated=0))
    run_dir = tmp_path / "run"
    with run_lock(run_dir):
        with pytest.raises(RunLocked, match=r"\.lock is held"):
            run_pipeline(config)
        with pytest.raises(RunLocked):
            with run_lock(run_dir):
                pass
    assert [p.name for p in run_dir.iterdir()] == [".lock"]
    summary = run_pipeline(config, until="prepare")  # released: the next run proceeds
    assert statuses(summary) == {"prepare": "ran"}


def test_a_failed_run_records_the_failed_stage_in_run_json(tmp_path: Path, teacher: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a run that failed left the previous run's run.json, which said every stage ran (issue 16)."""
    config = load_run_config(make_project(tmp_path, teacher, n_cuts=4, n_annotated=0, tune=False,
                                          references=False))
    run_dir = tmp_path / "run"
    run_pipeline(config, until="group")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "ok"

    def broken(*args, **kwargs):
        raise InputError(run_dir / "decode" / "decoded.jsonl.gz", "something is wrong", line=3)

    import choral.pipeline.run as run_module

    monkeypatch.setattr(run_module, "group_manifest", broken)
    seen = []
    with pytest.raises(InputError, match="something is wrong"):
        run_pipeline(config, until="export", force=True, on_stage=seen.append)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["error"] == f"{run_dir / 'decode' / 'decoded.jsonl.gz'}:3: something is wrong"
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [("prepare", "ran"), ("decode", "ran"),
                                                                      ("group", "failed")]
    assert record["stages"][-1]["detail"] == record["error"] and seen[-1].status == "failed"
    assert not list(run_dir.glob("**/.*.tmp.*"))

    # an interrupt is recorded too, at the stage it stopped
    monkeypatch.setattr(run_module, "group_manifest", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, until="export")
    record = json.loads((run_dir / "run.json").read_text())
    assert [(s["stage"], s["status"]) for s in record["stages"]] == [("prepare", "skipped"), ("decode", "skipped"),
                                                                      ("group", "failed")]
    assert record["error"] == "interrupted"


def test_a_run_removes_what_killed_runs_left_behind(tmp_path: Path, teacher: Path) -> None:
    """After kill -9, the dead run's .tmp.PID files stayed forever (issue 16)."""
    import os
    import subprocess
    import sys

    config = load_run_config(make_project(tmp_path, teacher, n_cuts=3, n_annotated=0))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    (run_dir / "decode").mkdir(parents=True)
    orphans = [run_dir / "decode" / f".decoded.tmp.{dead.pid}.jsonl.gz",
               run_dir / "decode" / f".embeddings.tmp.{dead.pid}.h5",
               run_dir / f".export.old.{dead.pid}", run_dir / f".eval.tmp.{dead.pid}"]
    for path in orphans[:2]:
        path.write_bytes(b"half")
    for path in orphans[2:]:
        (path / "inner").mkdir(parents=True)
    alive = [run_dir / f".grouped.tmp.{os.getppid()}.jsonl.gz", run_dir / "decode" / "notes.tmp.1.txt"]
    for path in alive:
        path.write_bytes(b"not ours to remove")
    run_pipeline(config, until="prepare")
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in alive)


def test_the_configs_thread_budget_applies_unless_the_command_line_chose_one(tmp_path: Path, teacher: Path) -> None:
    import dataclasses

    import torch

    from choral.kernels import threads

    before = torch.get_num_threads()
    config = dataclasses.replace(load_run_config(make_project(tmp_path, teacher, n_cuts=3, n_annotated=0)),
                                 threads=1)
    try:
        threads.set_budget(None)
        run_pipeline(config, until="prepare")
        assert threads.chosen() == 1 and torch.get_num_threads() == 1
        threads.set_budget(2)  # as `choral --threads 2` does before the run
        run_pipeline(config, until="prepare")
        assert threads.chosen() == 2
    finally:
        threads.set_budget(None)
        torch.set_num_threads(before)
