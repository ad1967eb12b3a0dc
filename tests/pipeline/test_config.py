"""Strict YAML config reading: every typo or wrong type is a one-line InputError naming the file and key."""

import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional

import pytest

from choral.cli.common import Digits
from choral.pipeline.config import coerce, from_mapping, placed_at, read_yaml_mapping
from choral.pipeline.decode import DecodeConfig
from choral.pipeline.errors import ChoralError, ConfigError, InputError
from choral.pipeline.propagate import PropagateConfig, load_params
from choral.pipeline.run_config import RunConfig, load_run_config
from choral.pipeline.text import DIGITS_POLICIES, DigitsPolicy, TextNormalizer
from choral.pipeline.tune import TuneConfig, parse_grid

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
    assert config.teacher == "default" and config.decode == DecodeConfig()
    assert config.tune_enabled and config.tune == TuneConfig()
    assert config.propagate == PropagateConfig()
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
    (MINIMAL + "graph:\n  metric: euclid\n", "graph.metric"),
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
    assert config.decode.search_temperature == 2.0 and type(config.decode) is DecodeConfig
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
    (MINIMAL + "decode:\n  nbest: 9\n  beam: 4\n",
     "key 'decode.nbest' 9 exceeds 'decode.beam' 4: the beam holds at most 4 hypotheses"),
    (MINIMAL + "decode:\n  beam: 0\n  nbest: 0\n", "key 'decode.nbest' must be at least 1, not 0"),
    (MINIMAL + "decode:\n  batch_duration: 0\n", "key 'decode.batch_duration' must be positive, not 0.0"),
    (MINIMAL + "decode:\n  search_temperature: 0\n", "key 'decode.search_temperature' must be positive"),
    (MINIMAL + "group:\n  bands: 5\n", "key 'group.num_perm' (32) must be divisible by 'group.bands' (5)"),
    (MINIMAL + "graph:\n  quantile: 2\n", "key 'graph.quantile' must lie strictly between 0 and 1, not 2.0"),
    (MINIMAL + "propagate:\n  alpha: 1.5\n", "key 'propagate.alpha' must be in [0, 1), not 1.5"),
    (MINIMAL + "propagate:\n  max_labels: 0\n", "key 'propagate.max_labels' must be positive, not 0"),
    (MINIMAL + "export:\n  format: nemo\n  with_fbank: true\n",
     "key 'export.with_fbank' only applies to 'export.format' lhotse"),
    (MINIMAL + "tune:\n  folds: 1\n", "key 'tune.folds' must be at least 2, not 1"),
    (MINIMAL + "tune:\n  alpha: []\n", "key 'tune.alpha' needs at least one value"),
    (MINIMAL + "tune:\n  alpha: [0.5, 1.0]\n", "key 'tune.alpha' must be in [0, 1), not 1.0"),
    (MINIMAL + "tune:\n  fusion_weight: [1.5]\n", "key 'tune.fusion_weight' must be in [0, 1], not 1.5"),
    (MINIMAL + "tune:\n  temperature: [0]\n", "key 'tune.temperature' must be positive, not 0.0"),
    (MINIMAL + "eval:\n  by: ['']\n", "key 'eval.by' needs field names"),
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
    assert Path(config.teacher) == base / "models" / "teacher.pt"
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


def test_run_level_settings_sit_in_their_sections(tmp_path: Path) -> None:
    """decode.teacher, tune.enabled and propagate.scorer are the run's, read among their section's keys."""
    config = load_run_config(write(tmp_path, MINIMAL + "decode:\n  nbest: 4\n"
                                   "tune:\n  enabled: false\n  folds: 3\npropagate:\n  scorer: false\n  alpha: 0.5\n"))
    assert config.decode == DecodeConfig(nbest=4) and config.teacher == "default"
    assert config.tune == TuneConfig(folds=3) and config.tune_enabled is False
    assert config.propagate == PropagateConfig(alpha=0.5) and config.scorer is False
    assert load_run_config(write(tmp_path, MINIMAL + "decode:\ntune:\npropagate:\n")).tune_enabled is True
    assert "key 'tune.enabled' must be bool" in str(load_error(tmp_path, MINIMAL + "tune:\n  enabled: 1\n"))
    assert "key 'decode.teacher' must be str" in str(load_error(tmp_path, MINIMAL + "decode:\n  teacher: 5\n"))
    error = load_error(tmp_path, MINIMAL + "tune:\n  enable: false\n")
    assert "unknown key 'tune.enable'" in str(error) and "enabled" in error.problem and "folds" in error.problem
    assert "teacher" in load_error(tmp_path, MINIMAL + "decode:\n  bem: 4\n").problem
    error = load_error(tmp_path, MINIMAL + "scorer: false\n")  # only inside its section
    assert "unknown key 'scorer'" in str(error) and "scorer" not in error.problem.split("(")[1]


def test_params_yaml_goes_through_the_same_reader(tmp_path: Path) -> None:
    """params.yaml, bare or under ``propagate:``: keys are named as written, dotted when wrapped."""
    base = PropagateConfig(max_borrowed=4)
    assert load_params(write(tmp_path, "alpha: 0.5\n", "p.yaml"), base=base) == replace(base, alpha=0.5)
    assert load_params(write(tmp_path, "propagate:\n  alpha: 0.5\n", "p.yaml"), base=base) == replace(base, alpha=0.5)
    assert load_params(write(tmp_path, "", "p.yaml"), base=base) == base
    params = tmp_path / "p.yaml"
    for text, problem in (
        ("propagate:\n  alfa: 0.5\n", "unknown key 'propagate.alfa'"),
        ("propagate:\n  alpha: high\n", "key 'propagate.alpha' must be float, not 'high'"),
        ("propagate:\n  alpha: 1.5\n", "key 'propagate.alpha' must be in [0, 1), not 1.5"),
        ("propagate:\n  scorer: true\n", "unknown key 'propagate.scorer'"),  # a run setting, not a parameter
        ("propagate:\n  alpha: 0.5\ntune:\n  folds: 2\n", "unknown key 'tune' (known at the top level: propagate)"),
        ("propagate: 0.5\n", "section 'propagate' must be a mapping"),
        ("nearest: -1\n", "key 'nearest' must be 0 (threshold only) or a positive count, not -1"),
        ("alpha: [\n", "malformed YAML"),
    ):
        params.write_text(text)
        with pytest.raises(InputError) as caught:
            load_params(params)
        assert str(caught.value).startswith(f"{params}: {problem}"), str(caught.value)


def test_tune_config_checks_its_values_with_the_propagate_rules() -> None:
    with pytest.raises(ConfigError) as caught:
        TuneConfig(alpha=(0.5, 1.0))
    assert (caught.value.field, str(caught.value)) == ("alpha", "alpha must be in [0, 1), not 1.0")
    with pytest.raises(ConfigError) as caught:
        TuneConfig(threshold_scale=())
    assert (caught.value.field, str(caught.value)) == ("threshold_scale", "threshold_scale needs at least one value")
    with pytest.raises(ConfigError, match="^folds must be at least 2, not 1$"):
        TuneConfig(folds=1)
    assert TuneConfig().grid == {"alpha": (0.5, 0.9, 0.99), "fusion_weight": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7),
                                 "temperature": (0.5, 1.0, 2.0), "threshold_scale": (0.8, 1.0, 1.25)}
    assert TuneConfig().size == 3 * 7 * 3 * 3
    assert parse_grid({"alpha": "0.5", "temperature": None}, TuneConfig(folds=3)) == TuneConfig(alpha=(0.5,), folds=3)
    with pytest.raises(ConfigError) as caught:
        parse_grid({"fusion_weight": "0.1,x"})
    assert caught.value.field == "fusion_weight" and "must be comma-separated numbers, not '0.1,x'" in str(caught.value)


def test_config_errors_name_the_field_and_spell_it_as_asked() -> None:
    with pytest.raises(ConfigError) as caught:
        DecodeConfig(nbest=9, beam=4)
    error = caught.value
    assert isinstance(error, ChoralError) and isinstance(error, ValueError) and error.field == "nbest"
    assert str(error) == "nbest 9 exceeds beam 4: the beam holds at most 4 hypotheses"
    assert error.message(lambda name: "--" + name) == "--nbest 9 exceeds --beam 4: the beam holds at most 4 hypotheses"
    assert "--" not in str(error)
    with pytest.raises(ConfigError, match="^fusion_weight must be in"):
        PropagateConfig(fusion_weight=2.0)
    with pytest.raises(ConfigError, match="^on_error must be skip or fail, not 'ignore'$"):
        DecodeConfig(on_error="ignore")  # type: ignore[arg-type]


def test_digits_policies_are_defined_once() -> None:
    assert DIGITS_POLICIES == typing.get_args(DigitsPolicy) == ("keep", "spell", "drop")
    assert [d.value for d in Digits] == list(DIGITS_POLICIES)
    assert typing.get_type_hints(RunConfig)["digits"] == DigitsPolicy
    assert typing.get_type_hints(TextNormalizer)["digits"] == DigitsPolicy
    with pytest.raises(ConfigError) as caught:
        TextNormalizer(digits="roman")  # type: ignore[arg-type]
    assert caught.value.field == "digits" and str(caught.value) == "digits must be keep, spell or drop, not 'roman'"


def test_from_mapping_over_a_base_and_placed_fields(tmp_path: Path) -> None:
    source = tmp_path / "x.yaml"
    assert from_mapping(_Inner, {}, source, "s", base=_Inner(size=5)) == _Inner(size=5)
    assert from_mapping(_Placed, {"inner": {"size": 3, "flag": True}}, source, "") == _Placed(_Inner(3), True)
    assert from_mapping(_Placed, {"inner": None}, source, "") == _Placed()
    with pytest.raises(InputError, match=r"key 'inner\.flag' must be bool, not 'y'"):
        from_mapping(_Placed, {"inner": {"flag": "y"}}, source, "")
    with pytest.raises(InputError, match=r"unknown key 'flag' \(known in the top level: inner\)"):
        from_mapping(_Placed, {"flag": True}, source, "")
    with pytest.raises(InputError, match=r"x.yaml: key 'inner\.flag' needs a size of 3, not 1"):
        from_mapping(_Placed, {"inner": {"flag": True}}, source, "")
    with pytest.raises(InputError, match=r"x.yaml: key 'top\.inner\.size' must be odd, not 2 \('top\.inner\.flag' "
                                         r"is set\)"):
        from_mapping(_Outer2, {"inner": {"size": 2}}, source, "top")
    with pytest.raises(ValueError, match="section.name"):
        placed_at("flag", False)


@dataclass(frozen=True)
class _Checked:
    size: int = 1
    flag: bool = True

    def __post_init__(self) -> None:
        if self.size % 2 == 0:
            raise ConfigError("size", f"must be odd, not {self.size} ({{flag}} is set)", related=("flag",))


@dataclass(frozen=True)
class _Outer2:
    inner: _Checked = _Checked()


@dataclass(frozen=True)
class _Placed:
    inner: _Inner = _Inner()
    flag: bool = placed_at("inner.flag", False)

    def __post_init__(self) -> None:
        if self.flag and self.inner.size != 3:
            raise ConfigError("flag", f"needs a size of 3, not {self.inner.size}")


def test_threads_is_a_top_level_key(tmp_path: Path) -> None:
    assert load_run_config(write(tmp_path, MINIMAL)).threads is None
    assert load_run_config(write(tmp_path, MINIMAL + "threads: 1\n")).threads == 1
    assert "key 'threads' must be a positive number of threads, not 0" in str(load_error(tmp_path,
                                                                                         MINIMAL + "threads: 0\n"))
    assert "key 'threads' must be int or null" in str(load_error(tmp_path, MINIMAL + "threads: many\n"))
