"""Strict YAML config reading: every typo or wrong type is a one-line InputError naming the file and key."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from choral.pipeline.config import coerce, from_mapping, read_yaml_mapping
from choral.pipeline.errors import InputError
from choral.pipeline.run_config import RunConfig, load_run_config
from choral.pipeline.tune import TuneGrid

REPO = Path(__file__).resolve().parents[2]

MINIMAL = "input:\n  audio_dir: audio\n"


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_run_config(path)
    error = caught.value
    assert error.path == str(path) and str(path) in str(error)
    assert "\n" not in str(error)
    return error


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, MINIMAL))
    assert isinstance(config, RunConfig)
    assert config.input.kind == "audio_dir" and config.input.audio_dir == tmp_path.resolve() / "audio"
    assert config.run_dir == tmp_path.resolve() / "runs" / "choral"
    assert config.digits == "spell" and config.normalizer.digits == "spell"
    assert config.decode.teacher == "default" and config.decode.nbest == 8
    assert config.tune.enabled and config.tune.grid() == TuneGrid()
    assert config.scorer is True and config.eval.references is None


def test_bundled_demo_config_loads() -> None:
    config = load_run_config(REPO / "configs" / "demo.yaml")
    base = REPO / "configs"
    assert config.input.kind == "cuts"
    assert config.input.cuts.resolve() == (REPO / "benchmarks/accented/demo/cuts.jsonl.gz").resolve()
    assert config.input.audio_root.resolve() == REPO.resolve() and config.input.needs_prepare
    assert config.run_dir.resolve() == (base / "../runs/demo").resolve()
    assert config.decode.batch_duration == 60.0 and isinstance(config.decode.batch_duration, float)
    assert config.tune.folds == 5 and config.export.format == "lhotse" and config.eval.by == ("accent",)


@pytest.mark.parametrize("text, key", [
    (MINIMAL + "decoder:\n  beam: 4\n", "'decoder'"),
    (MINIMAL + "decode:\n  bem: 4\n", "'decode.bem'"),
    (MINIMAL + "graph:\n  treshold: 0.3\n", "'graph.treshold'"),
    ("input:\n  audio_dir: audio\n  annotation: text\n", "'input.annotation'"),
    (MINIMAL + "propagate:\n  alpa: 0.5\n", "'propagate.alpa'"),
])
def test_unknown_key_names_file_and_dotted_key(tmp_path: Path, text: str, key: str) -> None:
    error = load_error(tmp_path, text)
    assert f"unknown key {key}" in str(error)


def test_unknown_nested_key_lists_the_known_ones(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "decode:\n  bem: 4\n")
    assert "beam" in error.problem and "nbest" in error.problem


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "decode:\n  nbest: eight\n", "key 'decode.nbest' must be int, not 'eight'"),
    (MINIMAL + "decode:\n  nbest: 2.5\n", "key 'decode.nbest' must be int"),
    (MINIMAL + "decode:\n  beam: true\n", "key 'decode.beam' must be int"),
    (MINIMAL + "decode:\n  save_frames: 1\n", "key 'decode.save_frames' must be bool"),
    (MINIMAL + "tune:\n  alpha: 0.5\n", "key 'tune.alpha' must be list of float, not 0.5"),
    (MINIMAL + "tune:\n  alpha: [0.5, high]\n", "key 'tune.alpha' must be list of float"),
    (MINIMAL + "eval:\n  by: accent\n", "key 'eval.by' must be list of str"),
    (MINIMAL + "graph:\n  window: wide\n", "key 'graph.window' must be int or null"),
    ("input:\n  audio_dir: ''\n", "key 'input.audio_dir' must be Path or null"),
    (MINIMAL + "run_dir: 5\n", "key 'run_dir' must be Path"),
    (MINIMAL + "propagate:\n  scorer: maybe\n", "key 'propagate.scorer' must be bool"),
])
def test_wrong_type_names_key_and_expected_type(tmp_path: Path, text: str, message: str) -> None:
    assert message in str(load_error(tmp_path, text))


@pytest.mark.parametrize("text, key", [
    (MINIMAL + "export:\n  format: parquet\n", "export.format"),
    (MINIMAL + "digits: roman\n", "digits"),
    (MINIMAL + "decode:\n  on_error: ignore\n", "decode.on_error"),
    (MINIMAL + "propagate:\n  algorithm: magic\n", "propagate.algorithm"),
])
def test_literal_values_are_checked(tmp_path: Path, text: str, key: str) -> None:
    error = load_error(tmp_path, text)
    assert f"key '{key}' must be '" in str(error)


def test_ints_are_accepted_for_floats_and_lists_become_tuples(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, MINIMAL + (
        "decode:\n  batch_duration: 30\n  nbest: 4\n  beam: 6\n  search_temperature: 2\n"
        "graph:\n  threshold: 2\n  window: 3\n"
        "tune:\n  alpha: [0, 0.5]\n  threshold_scale: [1]\n"
        "propagate:\n  fusion_weight: 1\n  scorer: false\n"
        "export:\n  format: nemo\n  min_confidence: 0\n")))
    assert config.decode.batch_duration == 30.0 and type(config.decode.batch_duration) is float
    assert (config.decode.nbest, config.decode.beam) == (4, 6)
    assert config.decode.config().search_temperature == 2.0
    assert config.graph.threshold == 2.0 and type(config.graph.threshold) is float and config.graph.window == 3
    assert config.tune.alpha == (0.0, 0.5) and all(type(a) is float for a in config.tune.alpha)
    assert config.tune.threshold_scale == (1.0,)
    assert config.propagate.fusion_weight == 1.0 and config.scorer is False
    assert config.export.format == "nemo" and config.export.min_confidence == 0.0


def test_digits_is_a_top_level_setting(tmp_path: Path) -> None:
    config = load_run_config(write(tmp_path, MINIMAL + "digits: keep\n"))
    assert config.digits == "keep" and config.normalizer.digits == "keep"
    error = load_error(tmp_path, MINIMAL + "decode:\n  digits: keep\n")
    assert "'decode.digits'" in str(error)


def test_missing_or_ambiguous_input_section(tmp_path: Path) -> None:
    assert "missing section 'input'" in str(load_error(tmp_path, "decode:\n  nbest: 4\n"))
    assert "missing section 'input'" in str(load_error(tmp_path, ""))
    error = load_error(tmp_path, "input:\n  audio_dir: audio\n  nemo_manifest: train.json\n")
    assert "exactly one of" in str(error) and "audio_dir, nemo_manifest" in str(error)
    assert "exactly one of" in str(load_error(tmp_path, "input:\n  annotations: text\n"))
    assert "exactly one of" in str(load_error(tmp_path, "input:\n"))
    assert "section 'input' must be a mapping" in str(load_error(tmp_path, "input: audio\n"))


def test_sections_must_be_mappings_and_the_file_valid_yaml(tmp_path: Path) -> None:
    assert "section 'decode' must be a mapping" in str(load_error(tmp_path, MINIMAL + "decode: 5\n"))
    assert "section 'propagate' must be a mapping" in str(load_error(tmp_path, MINIMAL + "propagate: [1]\n"))
    assert "malformed YAML" in str(load_error(tmp_path, "input: {audio_dir: [\n"))
    assert "expected a mapping" in str(load_error(tmp_path, "- input\n- decode\n"))
    with pytest.raises(InputError, match="file not found"):
        load_run_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "decode:\n  nbest: 9\n  beam: 4\n", "section decode: --nbest 9 exceeds --beam 4"),
    (MINIMAL + "decode:\n  batch_duration: 0\n", "section decode"),
    (MINIMAL + "decode:\n  search_temperature: 0\n", "section decode"),
    (MINIMAL + "group:\n  bands: 5\n", "section group"),
    (MINIMAL + "graph:\n  quantile: 2\n", "section graph"),
    (MINIMAL + "propagate:\n  alpha: 1.5\n", "section propagate: alpha must be in [0, 1)"),
    (MINIMAL + "export:\n  format: nemo\n  with_fbank: true\n", "section export"),
    (MINIMAL + "tune:\n  folds: 1\n", "section tune: tune.folds must be at least 2"),
    (MINIMAL + "tune:\n  alpha: []\n", "section tune: tune.alpha needs at least one value"),
    (MINIMAL + "tune:\n  alpha: [1.0]\n", "tune.alpha values must lie in [0, 1)"),
    (MINIMAL + "tune:\n  temperature: [0]\n", "must be positive"),
    (MINIMAL + "eval:\n  by: ['']\n", "section eval: eval.by needs field names"),
    ("input:\n  audio_dir: audio\n  audio_root: ..\n", "section input: audio_root only applies to a cuts"),
])
def test_values_are_validated_by_their_section(tmp_path: Path, text: str, message: str) -> None:
    assert message in str(load_error(tmp_path, text))


def test_relative_paths_are_resolved_against_the_config_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "teacher.pt").write_bytes(b"checkpoint")
    (project / "refs.jsonl").write_text("")
    absolute = tmp_path / "elsewhere" / "text"
    path = write(project, (
        "run_dir: out/run\n"
        "input:\n  cuts: data/cuts.jsonl.gz\n  audio_root: ..\n"
        f"  annotations: {absolute}\n"
        "decode:\n  teacher: models/teacher.pt\n"
        "eval:\n  references: refs.jsonl\n"))
    absolute.parent.mkdir()
    monkeypatch.chdir(absolute.parent)  # the working folder plays no part
    config = load_run_config(Path("..") / "project" / "run.yaml")
    base = project.resolve()
    assert config.run_dir == base / "out" / "run"
    assert config.input.cuts == base / "data" / "cuts.jsonl.gz"
    assert config.input.audio_root.resolve() == tmp_path.resolve()
    assert config.input.annotations == absolute
    assert Path(config.decode.teacher) == base / "models" / "teacher.pt"
    assert config.eval.references == base / "refs.jsonl"
    assert load_run_config(path) == config


def test_files_needed_by_late_stages_are_checked_at_load(tmp_path: Path) -> None:
    error = load_error(tmp_path, MINIMAL + "decode:\n  teacher: models/missing.pt\n")
    assert "key 'decode.teacher'" in str(error) and "teacher checkpoint not found" in str(error)
    error = load_error(tmp_path, MINIMAL + "eval:\n  references: refs.jsonl\n")
    assert "key 'eval.references'" in str(error) and "file not found" in str(error)


def test_read_yaml_mapping_of_empty_file_is_empty(tmp_path: Path) -> None:
    assert read_yaml_mapping(write(tmp_path, "# nothing yet\n")) == {}


@dataclass(frozen=True)
class _Inner:
    size: int = 1


@dataclass(frozen=True)
class _Outer:
    name: str = "x"
    ratio: Optional[float] = None
    mode: Literal["a", "b"] = "a"
    inner: _Inner = _Inner()
    paths: tuple[Path, ...] = ()


def test_from_mapping_reads_nested_sections_and_names_nested_keys(tmp_path: Path) -> None:
    source = tmp_path / "x.yaml"
    built = from_mapping(_Outer, {"ratio": 1, "mode": "b", "inner": {"size": 3}, "paths": ["a", "b/c"]}, source, "")
    assert built == _Outer(ratio=1.0, mode="b", inner=_Inner(size=3), paths=(Path("a"), Path("b/c")))
    assert from_mapping(_Outer, None, source, "") == _Outer()
    with pytest.raises(InputError, match=r"unknown key 'inner\.sise'"):
        from_mapping(_Outer, {"inner": {"sise": 3}}, source, "")
    with pytest.raises(InputError, match=r"key 'top\.inner\.size' must be int, not '3'"):
        from_mapping(_Outer, {"inner": {"size": "3"}}, source, "top")


def test_coerce_rules() -> None:
    assert coerce(3, float) == 3.0 and type(coerce(3, float)) is float
    assert coerce(None, Optional[int]) is None and coerce(4, Optional[int]) == 4
    assert coerce(["x"], tuple[str, ...]) == ("x",)
    for value, annotation in ((True, int), (True, float), (1, bool), ("a", Literal["b"]), (True, Literal[1]),
                              ("", Path), (5, str), ({"a": 1}, _Inner), ("1", tuple[str, ...])):
        with pytest.raises(TypeError):
            coerce(value, annotation)
