"""The teacher's floating precision: ``--precision auto|float32|float16`` (decode and scoring), ``precision:`` in
the run config.

- ``float32``: every forward pass in single precision (what choral always did).
- ``float16``: the torch teachers' networks (encoder, predictor, joiner) run in half precision. What is summed
  stays wide: logits are cast to float32 before every log-softmax / logsumexp, beam scores add in float64 and
  the lattice's forward algorithm runs in its own dtype, so n-best scores stay log-likelihoods comparable with
  float32 ones up to the network's rounding.
- ``auto`` (the default): float32 on the CPU. On CUDA a guard decodes a probe (decode's first batch; for the
  scorer, a few cuts' n-best texts ranked by their scores) in both precisions and keeps float16 for the run only
  if every probe cut's n-best, texts and order, is identical (:func:`half_keeps_nbest`, a pure function of the
  two lists); otherwise float32. One log line says which and why. The guard sees its probe only: on the
  200 demo cuts (CPU, ``benchmarks/decode_speed.py --precision``) the first batch's 23 kept their n-best
  and 195 of the 200 did, so a run it passes may still reorder a few cuts' lower hypotheses.

**How**: a float16 copy of the modules (``.half()``), not ``torch.autocast``, because

1. torch's CPU autocast cannot run the LSTMs in float16 (oneDNN rejects the unpacked LSTM; a packed sequence
   silently stays float32), so the autocast path could not be run, let alone tested, without a GPU; ``.half()``
   modules run on the CPU (real float16 arithmetic, slowly) exactly as on CUDA;
2. beam search calls the joiner and the predictor once per frame; autocast re-casts their weights at every
   call, a copy casts them once;
3. autocast's float32 op list differs by device (the CPU keeps ``log_softmax`` in half), so the float32
   accumulation has to be written out anyway.

The float32 weights are kept beside the copy (never float32 -> half -> float32), so the guard runs both
precisions from one loaded teacher. Inside a float16 encoder, the stateless model's per-utterance mean/variance
normalisation stays float32 (a sum of squares over 30 s of fbank overflows float16's 65,504).

The ONNX teachers (``onnx``, ``icefall``, ``nemo``) run in onnxruntime at their export's precision and ignore
the option (a warning when float16 is asked). ``float16`` keys the stages' sidecars; ``auto`` does not (it keeps
float16 only where the probe's n-best are float32's, as ``--device`` does not key them either). The score memo
keys the precision the scorer actually ran in, so float16 scores never mix with float32 ones.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable, Generic, Literal, Mapping, Sequence, TypeVar

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "float16")
PRECISION_HELP = ("Floating precision of the teacher's network: auto (float32 on the CPU; on CUDA float16 when a "
                  "probe's n-best equal float32's), float32, or float16 (on the CPU: real half arithmetic, slower, "
                  "for checking). ONNX teachers ignore it (they run at their export's precision).")

Precision = Literal["float32", "float16"]
M = TypeVar("M", bound=nn.Module)
R = TypeVar("R")


def check_precision_spec(spec: str, field: str = "precision") -> str:
    """``spec`` if it is ``auto``, ``float32`` or ``float16``; else a ConfigError on ``field``."""
    if not isinstance(spec, str) or spec not in PRECISIONS:
        raise ConfigError(field, f"must be auto, float32 or float16, not {spec!r}")
    return spec


@dataclass(frozen=True)
class Verdict:
    """The guard's decision: ``precision`` to run in (None: nothing was compared yet) and why, in words."""

    precision: Precision | None
    reason: str


def half_keeps_nbest(full: Mapping[str, Sequence[str]], half: Mapping[str, Sequence[str]]) -> Verdict:
    """float16 if every probe cut's n-best (texts, in order) under float16 is the one under float32, else float32.

    ``full`` and ``half`` map each probe cut's id to its n-best texts, best first. A cut present in one and not
    the other differs. No probe cut at all decides nothing (``precision`` None): the caller probes again.
    """
    if not full and not half:
        return Verdict(None, "no probe cut was decoded")
    for cut_id in list(full) + [c for c in half if c not in full]:
        if cut_id not in full or cut_id not in half:
            return Verdict("float32", f"cut {cut_id} was decoded in one precision only")
        a, b = list(full[cut_id]), list(half[cut_id])
        if a != b:
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            ours = repr(a[k]) if k < len(a) else "(none)"
            theirs = repr(b[k]) if k < len(b) else "(none)"
            return Verdict("float32", f"cut {cut_id}'s n-best differs at rank {k + 1}: float32 {ours}, "
                                      f"float16 {theirs}")
    return Verdict("float16", f"all {len(full)} probe cuts have the same n-best (texts and order) in float16 "
                              "as in float32")


class HalfPrecision(Generic[M]):
    """Mixin of the torch teachers: ``model`` runs in ``precision``; its float32 weights are kept for switching.

    A subclass sets ``model`` (float32) in its constructor and may override :meth:`_precision_changed` to
    rebuild what wraps the model.
    """

    model: M
    precision: Precision = "float32"
    _float32: M | None = None
    _float16: M | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The floating type the network's inputs must have."""
        return torch.float16 if self.precision == "float16" else torch.float32

    def set_precision(self, precision: Precision) -> None:
        """Run the network in ``precision`` from now on (the float16 copy is made once, from the float32 weights)."""
        if precision not in ("float32", "float16"):
            raise ValueError(f"precision must be float32 or float16, not {precision!r}")
        if precision == self.precision:
            return
        if self._float32 is None:
            self._float32 = self.model
        if precision == "float16" and self._float16 is None:
            self._float16 = copy.deepcopy(self._float32).half().eval()
        self.model = self._float16 if precision == "float16" else self._float32  # type: ignore[assignment]
        self.precision = precision
        self._precision_changed()

    def _move_copies(self, device: torch.device) -> None:
        """Move the inactive copy along with ``model`` (called by the subclass's ``to``)."""
        for module in (self._float32, self._float16):
            if module is not None and module is not self.model:
                module.to(device)

    def _precision_changed(self) -> None:
        """Hook: ``model`` was replaced."""


def half_capable(teacher: object) -> bool:
    """Whether ``teacher`` can run in float16 (a torch teacher; the ONNX ones cannot)."""
    return isinstance(teacher, HalfPrecision)


def apply_precision(teacher: object, spec: str, backend: str = "") -> None:
    """Put ``teacher`` in the precision ``spec`` asks for before any guard: float16 when asked (a warning for a
    teacher that cannot, and one on the CPU, where half is slower), else float32."""
    check_precision_spec(spec)
    if not half_capable(teacher):
        if spec == "float16":
            log.warning("precision float16 ignored: the %s teacher runs in onnxruntime at its export's precision",
                        backend or type(teacher).__name__)
        return
    assert isinstance(teacher, HalfPrecision)
    if spec == "float16" and getattr(teacher, "device", torch.device("cpu")).type == "cpu":
        log.warning("precision float16 on the CPU: real half arithmetic, slower than float32 (for checking "
                    "agreement; float16 pays off on a GPU)")
    teacher.set_precision("float16" if spec == "float16" else "float32")


def guard_applies(spec: str, teacher: object) -> bool:
    """Whether the ``auto`` guard decides this teacher's precision: ``auto``, a torch teacher, on CUDA."""
    return (spec == "auto" and half_capable(teacher)
            and getattr(teacher, "device", torch.device("cpu")).type == "cuda")


def guard(teacher: HalfPrecision, run: Callable[[], R], nbests: Callable[[R], Mapping[str, Sequence[str]]],
          probe: str) -> tuple[Verdict, R]:
    """Run ``run()`` in float32 and in float16, decide by :func:`half_keeps_nbest` over ``nbests`` of each, leave
    ``teacher`` in the chosen precision and return the decision with the chosen run's result.

    With nothing compared (``precision`` None) the teacher is left in float32 and the float32 result returned;
    the caller probes again later. ``probe`` names what was run, for the log line.
    """
    teacher.set_precision("float32")
    full = run()
    teacher.set_precision("float16")
    half = run()
    verdict = half_keeps_nbest(nbests(full), nbests(half))
    chosen = verdict.precision or "float32"
    teacher.set_precision(chosen)
    if verdict.precision is not None:
        log.info("precision auto on %s: %s for this run, %s (probe: %s)",
                 getattr(teacher, "device", "cpu"), chosen, verdict.reason, probe)
    return verdict, half if chosen == "float16" else full
