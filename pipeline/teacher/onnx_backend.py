"""A :class:`~.contracts.Teacher` running a transducer exported to ONNX (icefall / sherpa-onnx layout).

The directory holds ``encoder.onnx``, ``decoder.onnx``, ``joiner.onnx`` and
``tokens.txt`` (see :mod:`.onnx_export`). The models' metadata decides how they
are driven:

- ``decoder_kind=lstm`` (choral's exports): the decoder takes the previous symbol
  and LSTM state ``h``, ``c`` and returns the new state;
- ``decoder_kind=stateless`` or absent (icefall's exports): the decoder takes the
  last ``context_size`` symbols ``y (N, context_size)``, the first context being
  ``-1 ... -1, blank`` as in icefall and sherpa-onnx;
- ``feature_normalization=utterance_cmvn``: features are normalised per utterance
  like the torch teacher's; otherwise the encoder gets raw log-mel fbank, which is
  what icefall models were trained on.

Search and scoring are :mod:`.search`'s, through :class:`OnnxTransducer`, a
:class:`~.search.Decodable` adapter. The encoder's output is already projected
for the joiner; the frames stored and pooled into the embedding are the raw
encoder frames when the model exports them (``encoder_frames``), else the
projected ones (icefall exports have nothing else).

Registered as the ``onnx`` teacher backend: ``--teacher DIR`` names such a directory.
Directories in the icefall layout (stateless decoder, ``bpe.model``) are claimed
first by the ``icefall`` backend (:mod:`.icefall_backend`), which checks that
layout strictly and segments texts with the model's sentencepiece model; this
backend keeps choral's own LSTM-decoder export (``choral export-teacher`` of a
character checkpoint) and anything the icefall backend does not claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ..errors import ChoralError
from .contracts import DecodeResult
from .features import batch_features
from .onnx_export import MODEL_FILES, SPACE_SYMBOL, TOKENS_FILE
from .registry import register_teacher_backend
from .scoring import BatchScorer, ScoreOptions, ScoreStore, stored_or_encoded
from .search import Hypothesis, modified_beam_search, nbest_texts, score_texts
from .tokens import BLANK, TokenTable

REQUIRED_FILES = (*MODEL_FILES, TOKENS_FILE)
_RAW_FBANK_PADDING = math.log(1e-10)  # what sherpa-onnx pads raw-fbank batches with


def onnx_teacher_files(directory: str | Path) -> list[Path]:
    """The four files of an ONNX teacher directory; ChoralError naming any that is missing."""
    directory = Path(directory)
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise ChoralError(f"{directory}: ONNX teacher directory lacks {', '.join(missing)} "
                          f"(expected {', '.join(REQUIRED_FILES)})")
    return [directory / name for name in REQUIRED_FILES]


def onnxruntime_module():
    try:
        import onnxruntime
    except ImportError:
        raise ChoralError("ONNX teachers need onnxruntime: pip install 'choral[onnx]'") from None
    return onnxruntime


@dataclass(frozen=True)
class Signature:
    """What a model file takes and gives (``(name, element type, shape)`` each) and its metadata."""

    inputs: tuple[tuple[str, str, tuple[Any, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[Any, ...]], ...]
    metadata: dict[str, str]


@lru_cache(maxsize=32)
def _signature(path: str, mtime_ns: int, size: int) -> Signature | str:
    ort = onnxruntime_module()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own kinds
        return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    described = [tuple((a.name, a.type, tuple(a.shape)) for a in args)
                 for args in (session.get_inputs(), session.get_outputs())]
    return Signature(described[0], described[1], dict(session.get_modelmeta().custom_metadata_map))


def signature(path: Path) -> Signature:
    """Inputs, outputs and metadata of an ONNX model (cached per file version); ChoralError if unloadable."""
    stat = path.stat()
    info = _signature(str(path), stat.st_mtime_ns, stat.st_size)
    if isinstance(info, str):
        raise ChoralError(f"{path}: not a loadable ONNX model ({info})")
    return info


class PieceTable(TokenTable):
    """Token table of a word-piece (BPE) vocabulary: texts are split greedily into the longest known pieces.

    Pieces match case-insensitively (icefall's English pieces are upper case, the
    normaliser lower-cases); a piece starting with a space starts a word.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        pieces: dict[str, int] = {}
        for i, symbol in enumerate(self.symbols):
            if i != BLANK:
                pieces.setdefault(symbol.lower(), i)
        object.__setattr__(self, "_pieces", pieces)
        object.__setattr__(self, "_longest", max(map(len, pieces), default=1))

    def encode(self, text: str | None) -> list[int]:
        pieces: dict[str, int] = self._pieces  # type: ignore[attr-defined]
        out: list[int] = []
        for word in self.normalizer(text).split():
            rest = " " + word
            while rest:
                for size in range(min(len(rest), self._longest), 0, -1):  # type: ignore[attr-defined]
                    if rest[:size] in pieces:
                        out.append(pieces[rest[:size]])
                        rest = rest[size:]
                        break
                else:  # no piece starts here: drop the character
                    rest = rest[1:]
        return out


def read_tokens(path: str | Path) -> TokenTable:
    """Token table of a sherpa ``tokens.txt`` (``▁`` and ``<sp>`` read as spaces); ChoralError if malformed."""
    path = Path(path)
    by_id: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ChoralError(f"{path}:{number}: expected '<symbol> <id>', got {line!r}")
        by_id[int(parts[1])] = " " if parts[0] == "<sp>" else parts[0].replace(SPACE_SYMBOL, " ")
    if sorted(by_id) != list(range(len(by_id))):
        raise ChoralError(f"{path}: token ids must be 0 .. {len(by_id) - 1}, each once")
    if by_id.get(BLANK) != "<blk>":
        raise ChoralError(f"{path}: id {BLANK} must be the blank <blk>, not {by_id.get(BLANK)!r}")
    symbols = tuple(by_id[i] for i in range(len(by_id)))
    word_pieces = any(len(s) > 1 for i, s in enumerate(symbols) if i != BLANK and not s.startswith("<"))
    return (PieceTable if word_pieces else TokenTable).from_list(symbols)


class OnnxTransducer:
    """The three ONNX sessions of a teacher directory, seen as a :class:`~.search.Decodable` (torch tensors in/out)."""

    def __init__(self, directory: str | Path, vocab_size: int) -> None:
        self.directory = Path(directory)
        self.providers: list[Any] = ["CPUExecutionProvider"]
        self._open_sessions()
        meta: dict[str, str] = {}
        for session in (self.joiner, self.decoder, self.encoder):  # the encoder's word wins
            meta.update(session.get_modelmeta().custom_metadata_map)
        self.metadata = meta
        self._check_layout(vocab_size)

    def _open_sessions(self) -> None:
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.encoder, self.decoder, self.joiner = (self._session(ort, name, options) for name in MODEL_FILES)

    def to(self, device: torch.device) -> None:
        """Run the sessions on ``device``: the CPU, or CUDA through onnxruntime's CUDA execution provider
        (ChoralError when this onnxruntime has none)."""
        providers: list[Any]
        if device.type == "cuda":
            available = onnxruntime_module().get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise ChoralError(f"{self.directory}: this onnxruntime cannot run on {device} (providers: "
                                  f"{', '.join(available)}; install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        if providers != self.providers:
            self.providers = providers
            self._open_sessions()

    def _check_layout(self, vocab_size: int) -> None:
        meta = self.metadata
        self.kind = meta.get("decoder_kind", "stateless")
        if self.kind not in ("lstm", "stateless"):
            raise ChoralError(f"{self.directory}: unknown decoder_kind {self.kind!r} (lstm or stateless)")
        self.num_mel_bins = self._int("num_mel_bins", 80)
        self.cmvn = meta.get("feature_normalization") == "utterance_cmvn"
        declared = self._int("vocab_size", vocab_size)
        if declared != vocab_size:
            raise ChoralError(f"{self.directory}: models' vocab_size {declared} != {vocab_size} tokens in "
                              f"{TOKENS_FILE}")
        self._enc_in = [i.name for i in self.encoder.get_inputs()]
        self._enc_out = [o.name for o in self.encoder.get_outputs()]
        self._dec_in = [i.name for i in self.decoder.get_inputs()]
        self._join_in = [i.name for i in self.joiner.get_inputs()]
        if len(self._enc_in) != 2 or len(self._join_in) != 2:
            raise ChoralError(f"{self.directory}: expected an offline encoder (inputs x, x_lens) and a joiner with "
                              "inputs encoder_out, decoder_out; streaming models are not supported")
        if self.kind == "lstm":
            self.layers, self.hidden = self._int("predictor_layers", 0), self._int("predictor_hidden", 0)
            if len(self._dec_in) != 3 or self.layers < 1 or self.hidden < 1:
                raise ChoralError(f"{self.directory}: an lstm decoder needs inputs y, h, c and metadata "
                                  "predictor_layers, predictor_hidden")
        else:
            if len(self._dec_in) != 1:
                raise ChoralError(f"{self.directory}: a stateless decoder takes one input y (N, context_size), "
                                  f"this one takes {len(self._dec_in)}; set decoder_kind metadata if it is an lstm")
            shape = self.decoder.get_inputs()[0].shape
            static = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else 2
            self.context_size = self._int("context_size", static)

    def _session(self, ort: Any, name: str, options: Any) -> Any:
        path = self.directory / name
        try:
            return ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
        except Exception as error:  # onnxruntime raises its own kinds
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ChoralError(f"{path}: not a loadable ONNX model ({reason})") from None

    def _int(self, key: str, default: int) -> int:
        try:
            return int(self.metadata.get(key, default))
        except ValueError:
            raise ChoralError(f"{self.directory}: metadata {key}={self.metadata[key]!r} is not an integer") from None

    # --- encoder -------------------------------------------------------------------------
    def encode(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected frames ``(N, T', J)``, lengths ``(N,)`` and the frames to store ``(N, T', D)``."""
        lengths = np.array([f.shape[0] for f in features], dtype=np.int64)
        batch = np.full((len(features), int(lengths.max()), self.num_mel_bins),
                        0.0 if self.cmvn else _RAW_FBANK_PADDING, dtype=np.float32)
        for i, f in enumerate(features):
            batch[i, : f.shape[0]] = f
        outputs = dict(zip(self._enc_out, self.encoder.run(None, {self._enc_in[0]: batch, self._enc_in[1]: lengths})))
        projected = torch.from_numpy(outputs[self._enc_out[0]])
        out_lengths = torch.from_numpy(outputs[self._enc_out[1]]).long()
        frames = torch.from_numpy(outputs.get("encoder_frames", outputs[self._enc_out[0]]))
        return projected, out_lengths, frames

    # --- Decodable -----------------------------------------------------------------------
    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return encoded  # encoder.onnx projects already

    def _decode(self, y: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        feed = {self._dec_in[0]: y.numpy().astype(np.int64)}
        if self.kind == "lstm":
            feed[self._dec_in[1]] = np.ascontiguousarray(state[0].numpy())
            feed[self._dec_in[2]] = np.ascontiguousarray(state[1].numpy())
            out, h, c = self.decoder.run(None, feed)[:3]
            return torch.from_numpy(out), (torch.from_numpy(h), torch.from_numpy(c))
        return torch.from_numpy(self.decoder.run(None, feed)[0]), y

    def start(self, n: int, device: torch.device | None = None) -> tuple[torch.Tensor, Any]:
        if self.kind == "lstm":
            zeros = torch.zeros(self.layers, n, self.hidden)
            return self._decode(torch.full((n, 1), BLANK, dtype=torch.long), (zeros, zeros))
        context = torch.full((n, self.context_size), -1, dtype=torch.long)
        context[:, -1] = BLANK
        return self._decode(context)

    def advance(self, symbols: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        symbols = symbols.long().cpu()[:, None]
        if self.kind == "lstm":
            return self._decode(symbols, state)
        return self._decode(torch.cat([state[:, 1:], symbols], dim=1))

    def select(self, state: Any, index: torch.Tensor) -> Any:
        index = index.cpu()
        return (state[0][:, index], state[1][:, index]) if self.kind == "lstm" else state[index]

    def concat(self, first: Any, second: Any) -> Any:
        if self.kind == "lstm":
            return torch.cat([first[0], second[0]], dim=1), torch.cat([first[1], second[1]], dim=1)
        return torch.cat([first, second])

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        enc, pred = torch.broadcast_tensors(enc_projected, pred_projected)
        shape = enc.shape[:-1]
        feed = {self._join_in[0]: np.ascontiguousarray(enc.reshape(-1, enc.shape[-1]).numpy(), dtype=np.float32),
                self._join_in[1]: np.ascontiguousarray(pred.reshape(-1, pred.shape[-1]).numpy(), dtype=np.float32)}
        logits = torch.from_numpy(self.joiner.run(None, feed)[0])
        return logits.reshape(*shape, logits.shape[-1])

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long().cpu()
        n, length = targets.shape
        if self.kind == "stateless":  # every position's context at once: one decoder call
            pad = torch.full((n, self.context_size), -1, dtype=torch.long)
            pad[:, -1] = BLANK
            contexts = torch.cat([pad, targets], dim=1).unfold(1, self.context_size, 1)  # (n, U+1, context)
            out, _ = self._decode(contexts.reshape(-1, self.context_size))
            return out.reshape(n, length + 1, -1)
        out, state = self.start(n)
        outs = [out]
        for u in range(length):
            out, state = self.advance(targets[:, u], state)
            outs.append(out)
        return torch.stack(outs, dim=1)


class OnnxTransducerTeacher:
    """A :class:`~.contracts.Teacher` over an ONNX transducer: same search, scores and outputs
    as :class:`~.torch_backend.TransducerTeacher`."""

    def __init__(self, model: OnnxTransducer, tokens: TokenTable, *, beam: int = 8, nbest: int = 8,
                 search_temperature: float = 1.0) -> None:
        if beam < 1 or nbest < 1:
            raise ValueError("beam and nbest must be at least 1")
        if search_temperature <= 0:
            raise ValueError("search temperature must be positive")
        self.model = model
        self.tokens = tokens
        self.beam = beam
        self.nbest = nbest
        self.search_temperature = search_temperature

    def to(self, device: torch.device) -> "OnnxTransducerTeacher":
        """Run the ONNX sessions on ``device`` (see :meth:`OnnxTransducer.to`)."""
        self.model.to(device)
        return self

    def feature_options(self) -> tuple[int, bool]:
        """``(num_mel_bins, normalize)`` of :func:`~.features.cut_features` for this model (decode's loaders)."""
        return self.model.num_mel_bins, self.model.cmvn

    def features(self, cuts: Sequence[Cut]) -> list[np.ndarray]:
        """The encoder's input features of ``cuts``: normalised, or raw log-mel fbank (icefall's input), as the
        metadata says; one AudioError naming every failed cut."""
        return batch_features(cuts, self.model.num_mel_bins, normalize=self.model.cmvn)

    def decode(self, cuts: Sequence[Cut]) -> list[DecodeResult]:
        return self.decode_features(self.features(cuts))

    @torch.inference_mode()
    def decode_features(self, features: Sequence[np.ndarray]) -> list[DecodeResult]:
        """Beam-search a batch of feature matrices together; n-best scores are exact RNN-T log-likelihoods."""
        if not features:
            return []
        projected, lengths, frames = self.model.encode(features)
        results = []
        for i, hyps in enumerate(modified_beam_search(self.model, projected, lengths, self.beam,
                                                              self.search_temperature)):
            length = int(lengths[i])
            exact = score_texts(self.model, projected[i, :length], [h.tokens for h in hyps])
            hyps = [Hypothesis(h.tokens, score) for h, score in zip(hyps, exact)]
            stored = frames[i, :length].float().numpy()
            results.append(DecodeResult(nbest_texts(hyps, self.tokens, self.nbest), stored, stored.mean(axis=0)))
        return results

    def scorer(self, cuts: Sequence[Cut], options: ScoreOptions = ScoreOptions(), *,
               store: ScoreStore | None = None) -> BatchScorer:
        """Scores texts by RNN-T log-likelihood in batched lattice passes (:mod:`.scoring`); the joiner runs in
        onnxruntime, the forward algorithm in torch."""

        def encode(batch: list[Cut]) -> list[torch.Tensor]:
            return stored_or_encoded(batch, lambda cut: None, self.features,
                                     lambda features: self.model.encode(features)[:2])

        return BatchScorer(cuts, self.model, encode, self.tokens, options, store=store)


def load_onnx_teacher(directory: str | Path, *, beam: int = 8, nbest: int = 8,
                      search_temperature: float = 1.0) -> OnnxTransducerTeacher:
    """The teacher of an ONNX directory (icefall / sherpa-onnx layout); ChoralError if it is incomplete or unusable."""
    files = onnx_teacher_files(directory)
    tokens = read_tokens(files[-1])
    return OnnxTransducerTeacher(OnnxTransducer(directory, len(tokens)), tokens, beam=beam, nbest=nbest,
                                 search_temperature=search_temperature)


@register_teacher_backend
class OnnxBackend:
    """A directory in the icefall / sherpa-onnx layout, run by onnxruntime (any directory is read as one,
    so an incomplete one is reported by the files it lacks)."""

    name = "onnx"
    kind = "an ONNX teacher directory"
    description = (f"a directory of choral's ONNX export with an LSTM decoder ({', '.join(REQUIRED_FILES)}; "
                   "`choral export-teacher` of a character checkpoint)")

    def claims(self, path: Path) -> bool:
        return path.is_dir()

    def files(self, path: Path) -> list[Path]:
        return onnx_teacher_files(path)

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> OnnxTransducerTeacher:
        return load_onnx_teacher(path, beam=beam, nbest=nbest, search_temperature=search_temperature)
