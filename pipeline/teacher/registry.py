"""Teacher backends: what ``--teacher`` may name, and how each kind is checked, opened and turned into a scorer.

A backend is a class registered with :func:`register_teacher_backend` (lhotse's
``register_extractor`` style). It says whether a path is its kind (``claims``),
lists the files it is read from (``files``: they key the meta sidecars, so
replacing any of them invalidates the stages), opens it as a
:class:`~.contracts.Teacher`, and describes itself in one line for the
``--teacher`` help of the CLI (:func:`teacher_help`). choral's backends live in
modules of their own (torch checkpoints in :mod:`.torch_backend`, ONNX
directories in :mod:`.onnx_backend`) that the package imports, so adding a kind
of teacher is one new module and no edit here, in the stages or in the CLI.

``default`` names the checkpoint shipped with choral. A path is offered to the
backends newest first, so a backend registered later can claim paths a
built-in one would take (a directory in another layout, a file with its own suffix).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Protocol, Sequence, TypeVar

from lhotse.cut import Cut

from ...kernels import threads
from ..errors import ChoralError
from ..manifest import read_cuts
from .contracts import NamedScorer, Teacher
from .device import resolve_device
from .precision import apply_precision, check_precision_spec, guard, guard_applies
from .score_memo import ScoreMemo, fingerprint, memo_path
from .scoring import ScoreOptions, TeacherScorer

log = logging.getLogger(__name__)

DEFAULT_TEACHER = "default"
# choral's own teacher, trained by benchmarks/accented/train_teacher.py and shipped as package data
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default_teacher.pt"
_DEFAULT_HELP = "`default` (the teacher shipped with choral: US English, synthetic speech)"


class TeacherBackend(Protocol):
    """One kind of teacher. ``kind`` names a path of it with its article, for messages
    ("an ONNX teacher directory"); ``description`` is its ``--teacher`` help ("a checkpoint file ...")."""

    name: str
    kind: str
    description: str

    def claims(self, path: Path) -> bool:
        """Whether ``path`` is of this kind (complete or not: ``files`` says what is missing)."""

    def files(self, path: Path) -> list[Path]:
        """The files the teacher at ``path`` is read from; ChoralError naming any that is missing."""

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> Teacher:
        """Load the teacher at ``path``; ChoralError if it is unusable."""


_BACKENDS: dict[str, TeacherBackend] = {}
BackendClass = TypeVar("BackendClass", bound=type[TeacherBackend])


def register_teacher_backend(cls: BackendClass) -> BackendClass:
    """Class decorator: register an instance of ``cls`` under ``cls.name`` (registering a name again replaces it)."""
    _BACKENDS[cls.name] = cls()
    return cls


def get_teacher_backend(name: str) -> TeacherBackend:
    """The backend registered as ``name``."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ChoralError(f"unknown teacher backend {name!r} (known: {', '.join(_BACKENDS)})") from None


def teacher_backends() -> list[TeacherBackend]:
    """The registered backends, in the order they were registered."""
    return list(_BACKENDS.values())


def backend_of(teacher: str | Path) -> TeacherBackend:
    """The backend that claims the path ``teacher`` (the newest registered first)."""
    path = Path(teacher)
    for backend in reversed(teacher_backends()):
        if backend.claims(path):
            return backend
    raise ChoralError(f"{path}: teacher checkpoint not found (nor an ONNX teacher directory)")


def resolve_teacher(spec: str | Path) -> Path:
    """The teacher named by ``--teacher``: ``default`` (the checkpoint shipped with choral) or a path that a
    backend claims, checked to hold all of its files."""
    if str(spec) == DEFAULT_TEACHER:
        if not DEFAULT_CHECKPOINT.is_file():
            raise ChoralError(f"the default teacher checkpoint is missing ({DEFAULT_CHECKPOINT}); "
                              "pass --teacher PATH to a checkpoint written by save_teacher")
        return DEFAULT_CHECKPOINT
    path = Path(spec)
    backend_of(path).files(path)
    return path


def teacher_inputs(teacher: str | Path) -> list[Path]:
    """The files a resolved teacher is read from, which key the meta sidecars (so replacing any of them
    invalidates the stage): the checkpoint, or the four files of an ONNX directory."""
    return backend_of(teacher).files(Path(teacher))


def open_teacher(teacher: str | Path, *, beam: int = 8, nbest: int = 8, search_temperature: float = 1.0,
                 device: str = "cpu", precision: str = "float32") -> Teacher:
    """Load a resolved teacher with the backend that claims it, on ``device`` (``auto``, ``cpu``, ``cuda[:N]``).

    A teacher whose backend cannot move (it has no ``to``) stays where it opened; with
    ``auto``, one that cannot run on the CUDA device torch sees (an onnxruntime without
    CUDA) stays on the CPU. ``precision`` ``float16`` puts a torch teacher's network in half
    precision (:mod:`.precision`; an ONNX teacher ignores it, with a warning); ``auto`` and
    ``float32`` open it in float32 (``auto``'s guard is the caller's, on its first work).
    """
    check_precision_spec(precision)
    backend = backend_of(teacher)
    threads.apply_to_torch()  # torch sizes its own pool from the machine; choral's budget is shared
    target = resolve_device(device)
    log.info("opening teacher %s with the %s backend (beam %d, nbest %d, %d threads, device %s)", teacher,
             backend.name, beam, nbest, threads.budget(), target)
    opened = backend.open(Path(teacher), beam=beam, nbest=nbest, search_temperature=search_temperature)
    move = getattr(opened, "to", None)
    if move is not None and target.type != "cpu":
        try:
            opened = move(target)
        except ChoralError as error:
            if device != "auto":
                raise
            log.info("teacher stays on the CPU: %s", error)
    apply_precision(opened, precision, backend.name)
    return opened


def teacher_scorer(grouped: str | Path, teacher: str | Path, *, device: str = "cpu",
                   options: ScoreOptions = ScoreOptions(), memo: bool = True, precision: str = "auto") -> NamedScorer:
    """The RNN-T scorer of a teacher (``default`` or a path) over the cuts of ``grouped``.

    Its name and inputs are known at once (a missing teacher is an error now); the
    teacher is opened on the first call, and encoder outputs are computed lazily,
    only for cuts that borrow a neighbour's transcript. With ``memo``, scores are also
    kept in ``<grouped>.scores.sqlite`` (:mod:`.score_memo`), shared by ``tune``,
    ``propagate`` and their reruns. The name carries the lattice options and an asked
    ``float16``, so stages scored otherwise are not taken as up to date.

    ``precision`` (:mod:`.precision`): with ``auto`` on CUDA the guard scores a few cuts' own
    n-best texts in both precisions and keeps float16 only if every cut ranks them alike.
    The memo's fingerprint carries the precision the scorer runs in.
    """
    check_precision_spec(precision)
    resolved = resolve_teacher(teacher)
    inputs = teacher_inputs(resolved)
    tags = ([] if options == ScoreOptions() else [options.tag]) + (["precision=float16"]
                                                                    if precision == "float16" else [])
    name = f"teacher:{resolved.resolve()}" + (f"[{';'.join(tags)}]" if tags else "")

    def build():
        opened: Any = open_teacher(resolved, device=device, precision=precision)
        cuts = read_cuts(grouped)
        if "store" not in inspect.signature(opened.scorer).parameters:  # a backend of the plain Teacher protocol
            return opened.scorer(cuts)
        if guard_applies(precision, opened):
            _guard_scoring(opened, cuts, options)
        # float16 scores never mix with float32 ones: the memo of a half scorer has its own fingerprint
        key = name + ("|float16" if getattr(opened, "precision", "float32") == "float16" else "")
        store = ScoreMemo(memo_path(grouped), fingerprint(key, [Path(grouped), *inputs])) if memo else None
        return opened.scorer(cuts, options, store=store)

    return TeacherScorer(name, inputs, build)


_PROBE_CUTS = 8  # cuts whose own n-best the scoring guard ranks in both precisions


def _guard_scoring(opened: Any, cuts: Sequence[Cut], options: ScoreOptions) -> None:
    """``auto`` on CUDA: rank the n-best texts of the first cuts holding two or more by their scores in float32
    and in float16 (:func:`~.precision.guard`); the teacher is left in the precision chosen."""
    requests: list[tuple[str, list[str]]] = []
    for cut in cuts:
        texts = list(dict.fromkeys(h.get("text", "") for h in (cut.custom or {}).get("nbest") or []))
        if len(texts) >= 2:
            requests.append((cut.id, texts))
            if len(requests) == _PROBE_CUTS:
                break

    def run() -> dict[str, list[str]]:
        scorer = opened.scorer(cuts, options, store=None)
        ranked = {}
        for (cut_id, texts), scores in zip(requests, scorer.score_many(requests)):
            order = sorted(range(len(texts)), key=lambda i: -scores[i])
            ranked[cut_id] = [texts[i] for i in order]
        return ranked

    if not requests:
        opened.set_precision("float32")
        log.info("precision auto: float32 for the scorer, no cut has two hypotheses to rank")
        return
    try:
        verdict, _ = guard(opened, run, lambda ranked: ranked, f"the scorer's ranking of {len(requests)} cuts' "
                                                                   "n-best texts")
    except ChoralError as error:  # the probe cuts' audio is gone and no frames were stored
        opened.set_precision("float32")
        log.info("precision auto: float32 for the scorer, its probe could not be scored (%s)", error)


def teacher_help(role: str = "", note: str = "", *, backends: Sequence[str] | None = None) -> str:
    """The ``--teacher`` help: "Teacher{role}: `default` (...), <each backend's description>." then ``note``.

    Backends are listed by name (the order modules register in is an accident of
    imports); ``backends`` limits the list to those names (a command that reads only checkpoints).
    """
    names = sorted(_BACKENDS) if backends is None else list(backends)
    chosen = [get_teacher_backend(name) for name in names]
    kinds = [_DEFAULT_HELP, *(backend.description for backend in chosen)]
    listing = " or ".join(kinds) if len(kinds) <= 2 else ", ".join(kinds[:-1]) + ", or " + kinds[-1]
    return f"Teacher{role}: {listing}." + (f" {note}" if note else "")
