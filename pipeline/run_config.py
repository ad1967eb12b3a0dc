"""The ``choral run`` config: one YAML with a section per stage, checked before any work.

Top level: ``run_dir``, ``digits``, and the sections ``input`` (see
:mod:`choral.pipeline.prepare`), ``decode``, ``group``, ``graph``, ``tune``,
``propagate`` (PropagateConfig fields plus ``scorer``), ``export`` and ``eval``.
Every unknown key and wrong type is an InputError naming the file and the dotted
key; paths are relative to the config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from .config import from_mapping, read_yaml_mapping
from .decode import DecodeConfig
from .errors import ChoralError, InputError
from .export import ExportConfig
from .graph import GraphConfig
from .grouping import GroupingConfig
from .prepare import InputConfig
from .propagate import PropagateConfig
from .teacher.registry import resolve_teacher
from .text import TextNormalizer
from .tune import TuneGrid


@dataclass(frozen=True)
class DecodeSection:
    """``decode:`` — the teacher and its search (see ``choral decode --help``)."""

    teacher: str = "default"
    nbest: int = 8
    beam: int = 8
    search_temperature: float = 1.0
    batch_duration: float = 60.0
    save_frames: bool = False
    on_error: Literal["skip", "fail"] = "skip"

    def config(self) -> DecodeConfig:
        return DecodeConfig(nbest=self.nbest, beam=self.beam, search_temperature=self.search_temperature,
                            batch_duration=self.batch_duration, save_frames=self.save_frames, on_error=self.on_error)


@dataclass(frozen=True)
class TuneSection:
    """``tune:`` — cross-validation over annotated cuts (off: propagate uses its own values)."""

    enabled: bool = True
    folds: int = 5
    seed: int = 0
    alpha: tuple[float, ...] = TuneGrid.alpha
    fusion_weight: tuple[float, ...] = TuneGrid.fusion_weight
    temperature: tuple[float, ...] = TuneGrid.temperature
    threshold_scale: tuple[float, ...] = TuneGrid.threshold_scale

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ChoralError(f"tune.folds must be at least 2, not {self.folds}")
        for name in ("alpha", "fusion_weight", "temperature", "threshold_scale"):
            if not getattr(self, name):
                raise ChoralError(f"tune.{name} needs at least one value")
        if not all(0.0 <= a < 1.0 for a in self.alpha):
            raise ChoralError("tune.alpha values must lie in [0, 1)")
        if not all(0.0 <= w <= 1.0 for w in self.fusion_weight):
            raise ChoralError("tune.fusion_weight values must lie in [0, 1]")
        if not all(v > 0 for v in (*self.temperature, *self.threshold_scale)):
            raise ChoralError("tune.temperature and tune.threshold_scale values must be positive")

    def grid(self) -> TuneGrid:
        return TuneGrid(alpha=self.alpha, fusion_weight=self.fusion_weight, temperature=self.temperature,
                        threshold_scale=self.threshold_scale)


@dataclass(frozen=True)
class EvalSection:
    """``eval:`` — WER against full references (no references: the stage is off)."""

    references: Path | None = None
    by: tuple[str, ...] = ()
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if any(not name.strip() for name in self.by):
            raise ChoralError("eval.by needs field names (e.g. [accent])")


@dataclass(frozen=True)
class RunConfig:
    """A whole run, as read from YAML (``propagate:`` holds PropagateConfig fields plus ``scorer``)."""

    input: InputConfig
    run_dir: Path = Path("runs/choral")
    digits: Literal["keep", "spell", "drop"] = "spell"
    decode: DecodeSection = DecodeSection()
    group: GroupingConfig = GroupingConfig()
    graph: GraphConfig = GraphConfig()
    tune: TuneSection = TuneSection()
    propagate: PropagateConfig = PropagateConfig()
    scorer: bool = True  # score neighbours' hypotheses with the teacher (candidate sharing)
    export: ExportConfig = ExportConfig()
    eval: EvalSection = EvalSection()

    @property
    def normalizer(self) -> TextNormalizer:
        return TextNormalizer(digits=self.digits)


_TOP_LEVEL = ("run_dir", "digits", "input", "decode", "group", "graph", "tune", "propagate", "export", "eval")


def _resolve(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(value).expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; every unknown key or wrong type is an InputError naming it."""
    path = Path(path)
    data = read_yaml_mapping(path)
    for key in data:
        if key not in _TOP_LEVEL:
            raise InputError(path, f"unknown key {key!r} (known at the top level: {', '.join(_TOP_LEVEL)})")
    if "input" not in data:
        raise InputError(path, "missing section 'input' (where the audio comes from)")
    propagate = dict(data.get("propagate") or {}) if isinstance(data.get("propagate") or {}, dict) else None
    if propagate is None:
        raise InputError(path, "section 'propagate' must be a mapping")
    scorer = propagate.pop("scorer", True)
    if not isinstance(scorer, bool):
        raise InputError(path, f"key 'propagate.scorer' must be bool, not {scorer!r}")
    base = path.resolve().parent
    inputs = from_mapping(InputConfig, data["input"], path, "input")
    inputs = replace(inputs, **{f.name: _resolve(base, getattr(inputs, f.name)) for f in fields(InputConfig)
                                if isinstance(getattr(inputs, f.name), Path)})
    decode = from_mapping(DecodeSection, data.get("decode"), path, "decode")
    if decode.teacher != "default":
        decode = replace(decode, teacher=str(_resolve(base, Path(decode.teacher))))
    evaluation = from_mapping(EvalSection, data.get("eval"), path, "eval")
    evaluation = replace(evaluation, references=_resolve(base, evaluation.references))
    top = {k: data[k] for k in ("run_dir", "digits") if k in data}
    head = from_mapping(_TopLevel, top, path, "")
    try:
        decode.config()
    except ChoralError as error:
        raise InputError(path, f"section decode: {error}") from None
    # files the late stages need are checked now, not after hours of decoding
    if decode.teacher != "default":
        try:
            resolve_teacher(decode.teacher)
        except ChoralError as error:
            raise InputError(path, f"key 'decode.teacher': {error}") from None
    if evaluation.references is not None and not evaluation.references.is_file():
        raise InputError(path, f"key 'eval.references': {evaluation.references}: file not found")
    return RunConfig(
        input=inputs,
        run_dir=_resolve(base, head.run_dir) or base / "runs" / "choral",
        digits=head.digits,
        decode=decode,
        group=from_mapping(GroupingConfig, data.get("group"), path, "group"),
        graph=from_mapping(GraphConfig, data.get("graph"), path, "graph"),
        tune=from_mapping(TuneSection, data.get("tune"), path, "tune"),
        propagate=from_mapping(PropagateConfig, propagate, path, "propagate"),
        scorer=scorer,
        export=from_mapping(ExportConfig, data.get("export"), path, "export"),
        eval=evaluation,
    )


@dataclass(frozen=True)
class _TopLevel:
    run_dir: Path = Path("runs/choral")
    digits: Literal["keep", "spell", "drop"] = "spell"
