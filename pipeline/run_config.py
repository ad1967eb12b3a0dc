"""The ``choral run`` config: one YAML with a section per stage, checked before any work.

Top level: ``run_dir``, ``digits``, ``threads``, ``device`` (where the teacher decodes and
scores), ``precision`` (its network's floating precision there: auto, float32, float16), and
the sections ``executor`` (local or Ray: :mod:`choral.pipeline.executor`), ``input`` (see
:mod:`choral.pipeline.prepare`), ``decode``, ``group``, ``graph``, ``tune``,
``propagate``, ``export`` and ``eval``. Each stage's section is that stage's
config dataclass, read by :func:`~choral.pipeline.config.from_mapping`; the
run-level settings ``decode.teacher``, ``tune.enabled`` and ``propagate.scorer``
sit among their section's keys. Every unknown key, wrong type and rejected value
is an InputError naming the file and the dotted key; paths are relative to the
config file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from .config import from_mapping, placed_at, read_yaml_mapping
from .decode import DecodeConfig
from .errors import ChoralError, ConfigError, InputError
from .executor.config import ExecutorConfig
from .export import ExportConfig
from .graph import GraphConfig
from .group import GroupingConfig
from .prepare import InputConfig
from .propagate import PropagateConfig
from .teacher.device import check_device_spec
from .teacher.precision import check_precision_spec
from .teacher.registry import resolve_teacher
from .text import DigitsPolicy, TextNormalizer
from .tune import TuneConfig


@dataclass(frozen=True)
class EvalSection:
    """``eval:`` — WER against full references (no references: the stage is off)."""

    references: Path | None = None
    by: tuple[str, ...] = ()
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if any(not name.strip() for name in self.by):
            raise ConfigError("by", "needs field names (e.g. [accent])")


@dataclass(frozen=True)
class RunConfig:
    """A whole run, as read from YAML: each stage's section is its library config."""

    input: InputConfig
    run_dir: Path = Path("runs/choral")
    digits: DigitsPolicy = "spell"
    decode: DecodeConfig = DecodeConfig()
    teacher: str = placed_at("decode.teacher", "default")  # `default`, a checkpoint or an ONNX directory
    group: GroupingConfig = GroupingConfig()
    graph: GraphConfig = GraphConfig()
    tune: TuneConfig = TuneConfig()
    tune_enabled: bool = placed_at("tune.enabled", True)  # off: propagate uses its own values
    propagate: PropagateConfig = PropagateConfig()
    scorer: bool = placed_at("propagate.scorer", True)  # score neighbours' hypotheses with the teacher
    export: ExportConfig = ExportConfig()
    eval: EvalSection = EvalSection()
    threads: int | None = None  # thread budget of the run (None: OMP_NUM_THREADS, else the CPU affinity)
    executor: ExecutorConfig = ExecutorConfig()  # where the stages run: local (default) or a Ray cluster
    device: str = "auto"  # where the teacher decodes and scores: auto (CUDA when torch sees it), cpu, cuda[:N]
    precision: str = "auto"  # the teacher network: auto (float16 on CUDA where the n-best holds), float32, float16

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads", f"must be a positive number of threads, not {self.threads}")
        check_device_spec(self.device)
        check_precision_spec(self.precision)

    @property
    def normalizer(self) -> TextNormalizer:
        return TextNormalizer(digits=self.digits)


def _resolve(base: Path, value: Path) -> Path:
    """``value`` (``~`` expanded) if absolute, else relative to ``base``."""
    value = value.expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run config; every unknown key or wrong type is an InputError naming it."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if "input" not in data:
        raise InputError(path, "missing section 'input' (where the audio comes from)")
    config = from_mapping(RunConfig, data, path, "")
    base = path.resolve().parent
    inputs = config.input
    input_paths: dict = {f.name: _resolve(base, getattr(inputs, f.name)) for f in fields(InputConfig)
                         if isinstance(getattr(inputs, f.name), Path)}
    references = config.eval.references
    config = replace(
        config,
        input=replace(inputs, **input_paths),
        run_dir=_resolve(base, config.run_dir),
        teacher=config.teacher if config.teacher == "default" else str(_resolve(base, Path(config.teacher))),
        eval=replace(config.eval, references=None if references is None else _resolve(base, references)),
    )
    # files the late stages need are checked now, not after hours of decoding
    if config.teacher != "default":
        try:
            resolve_teacher(config.teacher)
        except ChoralError as error:
            raise InputError(path, f"key 'decode.teacher': {error}") from None
    if config.eval.references is not None and not config.eval.references.is_file():
        raise InputError(path, f"key 'eval.references': {config.eval.references}: file not found")
    return config
