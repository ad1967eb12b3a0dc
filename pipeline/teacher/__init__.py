"""The teacher layer: what the decode and propagate stages need from an ASR model, and the models that provide it.

Module map (data flows down; :mod:`.contracts` imports nothing of choral's)::

    contracts      Scorer, NamedScorer, Teacher, DecodeResult, AudioError
    registry       teacher backends; resolve `default` / a path, open it, build scorers, --teacher help
    scoring        the cached text scorer of the backends, the lazily opened TeacherScorer
    device         --device: where the teacher runs
    precision      --precision: float32 / float16 networks of the torch teachers, auto's n-best guard
    torch_backend  TransducerTeacher over a checkpoint file (save_teacher / load_teacher)
    onnx_backend   OnnxTransducerTeacher over an ONNX directory (choral's LSTM-decoder export, stateless ones)
    icefall_backend  the icefall / sherpa-onnx layout (stateless decoder, bpe.model), checked strictly
    nemo_backend   NeMo transducers as sherpa-onnx runs them (channels-first encoder, LSTM decoder, blank last)
    stateless_backend  StatelessTeacher over a stateless-decoder checkpoint (same results as its ONNX export)
    model          the character Transducer and its checkpoint
    stateless      the stateless-decoder transducer in icefall's conventions and its checkpoint
    bpe            sentencepiece vocabularies (bpe.model): the model's own segmentation, training one
    search         greedy and modified beam search, exact text scoring
    features       log-mel features of a cut's audio
    tokens         the character token table
    onnx_export    writing a Transducer as ONNX (``choral export-teacher``)
    icefall_export writing a StatelessTransducer in icefall's export-onnx.py layout

Importing the package registers its backends; a new kind of teacher is one
module that registers itself and is imported here.
"""

from __future__ import annotations

# registers the backends; icefall_backend imports onnx_backend, nemo_backend icefall_backend and stateless_backend
# torch_backend, so each registers after the more general backend of its kind and is offered before it
from . import icefall_backend, nemo_backend, onnx_backend, stateless_backend, torch_backend  # noqa: F401
from .contracts import AudioError, DecodeResult, NamedScorer, Scorer, Teacher
from .model import Transducer, TransducerConfig, parameter_count
from .registry import (
    DEFAULT_CHECKPOINT,
    DEFAULT_TEACHER,
    open_teacher,
    register_teacher_backend,
    resolve_teacher,
    teacher_help,
    teacher_inputs,
    teacher_scorer,
)
from .search import Hypothesis
from .tokens import BLANK, TokenTable
from .torch_backend import TransducerTeacher, load_teacher, save_teacher

__all__ = [
    "AudioError", "BLANK", "DEFAULT_CHECKPOINT", "DEFAULT_TEACHER", "DecodeResult", "Hypothesis", "NamedScorer",
    "Scorer", "Teacher", "TokenTable", "Transducer", "TransducerConfig", "TransducerTeacher", "load_teacher",
    "open_teacher", "parameter_count", "register_teacher_backend", "resolve_teacher", "save_teacher",
    "teacher_help", "teacher_inputs", "teacher_scorer",
]
