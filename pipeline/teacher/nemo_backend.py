"""The ``nemo`` teacher backend: a NeMo transducer exported to ONNX as sherpa-onnx runs it (``nemo_transducer``).

The layout (what NeMo's ``encoder.export`` / ``decoder.export`` / ``joint.export``
write, with the metadata sherpa-onnx's export scripts add to the encoder):

- ``encoder.onnx``: ``audio_signal (N, C, T)`` float features *channels first* and
  ``length (N,)`` -> ``outputs (N, D, T')`` and ``encoded_lengths (N,)``; metadata
  ``vocab_size`` (without the blank), ``subsampling_factor``, ``pred_rnn_layers``,
  ``pred_hidden`` (required by sherpa-onnx), ``normalize_type`` (``per_feature``
  or empty / ``NA``), optionally ``feat_dim`` (default 80), ``model_type``
  (``EncDecRNNTBPEModel``, ``EncDecHybridRNNTCTCBPEModel``), ``url``;
- ``decoder.onnx``: the prediction network *with state*: ``targets (N, U)`` int,
  ``target_length (N,)``, LSTM state ``h``, ``c`` ``(pred_rnn_layers, N, pred_hidden)``
  -> ``outputs (N, H, U)``, lengths, next ``h``, next ``c`` (read by position: NeMo's
  export names them ``states.1`` and whatever the tracer chose);
- ``joiner.onnx``: ``encoder_outputs (N, D, T)`` + ``decoder_outputs (N, H, U)`` ->
  ``outputs (N, T, U, vocab_size + 1)``;
- ``tokens.txt``: ``<piece> <id>``, NeMo's vocabulary in order and ``<blk>`` *last*
  (id ``vocab_size``), as sherpa-onnx requires; ``bpe.model``: NeMo's sentencepiece
  tokenizer (``tokenizer.model`` inside the ``.nemo`` archive), needed when the
  vocabulary is word pieces, so borrowed texts are scored as the model segments them.

Features are what sherpa-onnx computes for these models: 25 ms frames every 10 ms
(``snip_edges`` off, no dither, no DC removal, pre-emphasis 0.97, Povey window,
512-point FFT), a librosa-style mel bank (Slaney scale and area norm, 0 to 7600 Hz),
``log(mel + 2^-24)`` (NeMo's zero guard), then the ``normalize_type`` of the metadata: ``per_feature`` is
``(x - mean) / (std + 1e-5)`` per mel bin over the utterance (population std).
Padded frames of a batch are 0, after normalisation.

Search follows sherpa-onnx's NeMo decoders, not icefall's: greedy search emits up
to ``max_symbols`` (10) symbols per frame; beam search (``modified_beam_search``)
keeps ``beam`` hypotheses, each at its own frame, expands those at the earliest
frame by their ``beam`` best symbols (a label stays on the frame, blank or ``<unk>``
moves on), prunes all candidates of an utterance to ``beam`` by score without merging
equal outputs, and returns the highest score. choral batches both over utterances.
Internally ids are rotated so that the blank is 0 (choral's searches and lattice
kernel assume it): choral id ``k + 1`` is NeMo id ``k``. Decode results give the
model's own ids (those of ``tokens.txt``). TDT models (durations in the joiner) and
GigaAM's features are not supported and are reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse.cut import Cut

from ..errors import ChoralError
from . import icefall_backend  # noqa: F401  (registered before this backend, so offered after it)
from .bpe import BPE_FILE, SPACE_SYMBOL, _sentencepiece
from .contracts import AudioError, DecodeResult
from .features import SAMPLING_RATE, load_audio
from .onnx_backend import onnxruntime_module, signature
from .onnx_export import MODEL_FILES, TOKENS_FILE
from .registry import register_teacher_backend
from .scoring import BatchScorer, ScoreOptions, ScoreStore, stored_or_encoded
from .search import Hypothesis, nbest_texts, score_texts
from .tokens import BLANK, TokenTable

NEMO_FILES = (*MODEL_FILES, TOKENS_FILE)
REQUIRED_KEYS = ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden")  # sherpa-onnx exits without
NEMO_MODEL_TYPES = ("EncDecRNNTBPEModel", "EncDecHybridRNNTCTCBPEModel", "EncDecRNNTModel",
                    "EncDecHybridRNNTCTCModel")
NORMALIZE_TYPES = ("", "NA", "per_feature")
MAX_SYMBOLS_PER_FRAME = 10  # sherpa-onnx's NeMo greedy and beam search
DEFAULT_FEAT_DIM = 80
_LAYOUT = ("NeMo's layout as sherpa-onnx runs it: encoder.onnx (audio_signal, length; metadata "
           f"{', '.join(REQUIRED_KEYS)}), decoder.onnx (targets, target_length, LSTM states), joiner.onnx, "
           "tokens.txt with <blk> last")


# --- the files ------------------------------------------------------------------------------------------------------

def looks_like_nemo(directory: Path) -> bool:
    """Whether ``directory`` holds a NeMo transducer: its decoder is NeMo's stateful prediction network (inputs
    ``targets``, ``target_length``) or, without a decoder, its ``tokens.txt`` ends with the blank (NeMo's order;
    icefall's and choral's put it first)."""
    decoder = directory / "decoder.onnx"
    if not decoder.is_file():
        tokens = directory / TOKENS_FILE
        try:
            lines = tokens.read_text(encoding="utf-8").split() if tokens.is_file() else []
        except (OSError, UnicodeDecodeError):
            return False
        return len(lines) >= 2 and lines[-2] == "<blk>"
    try:
        names = [name for name, _, _ in signature(decoder).inputs]
    except ChoralError:
        return False
    return names[:2] == ["targets", "target_length"]


@dataclass(frozen=True)
class NemoLayout:
    """What the files of a NeMo directory say about the model."""

    vocab_size: int             # with the blank (NeMo's vocab_size + 1); the blank is the last id
    pred_layers: int
    pred_hidden: int
    normalize: str              # "per_feature" or "" (none)
    feat_dim: int
    subsampling: int
    tokens: tuple[str, ...]     # tokens.txt, by NeMo id (spaces for "▁")
    unk: int | None             # NeMo id of <unk>, which sherpa-onnx's beam search treats as blank
    state_batch: bool           # whether the decoder's states take any batch size (NeMo pins c to batch 1)

    @property
    def blank(self) -> int:
        return self.vocab_size - 1


def _int_key(path: Path, metadata: dict[str, str], key: str) -> int:
    value = metadata.get(key, "")
    if not value:
        raise ChoralError(f"{path}: metadata key {key!r} is missing ({_LAYOUT}; sherpa-onnx needs it)")
    try:
        number = int(value)
    except ValueError:
        raise ChoralError(f"{path}: metadata {key}={value!r} is not an integer") from None
    if number < 0:
        raise ChoralError(f"{path}: metadata {key}={number} is negative")
    return number


def _read_tokens(path: Path) -> list[str]:
    """``tokens.txt`` by id; ChoralError when malformed."""
    by_id: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ChoralError(f"{path}:{number}: expected '<symbol> <id>', got {line!r}")
        if int(parts[1]) in by_id:
            raise ChoralError(f"{path}:{number}: id {parts[1]} listed twice")
        by_id[int(parts[1])] = parts[0]
    if sorted(by_id) != list(range(len(by_id))):
        raise ChoralError(f"{path}: token ids must be 0 .. {len(by_id) - 1}, each once")
    return [by_id[i] for i in range(len(by_id))]


def _dim(shape: tuple[Any, ...], axis: int) -> int | None:
    """A static dimension, or None when it is symbolic."""
    return shape[axis] if len(shape) > axis and isinstance(shape[axis], int) else None


def read_nemo_layout(directory: str | Path) -> NemoLayout:
    """Check a NeMo-layout directory as sherpa-onnx would load it; ChoralError naming the file and the problem."""
    directory = Path(directory)
    missing = [name for name in NEMO_FILES if not (directory / name).is_file()]
    if missing:
        raise ChoralError(f"{directory}: lacks {', '.join(missing)} ({_LAYOUT})")
    encoder_path, decoder_path, joiner_path = (directory / name for name in MODEL_FILES)
    encoder, decoder, joiner = (signature(p) for p in (encoder_path, decoder_path, joiner_path))
    meta = encoder.metadata
    vocab, subsampling, layers, hidden = (_int_key(encoder_path, meta, key) for key in REQUIRED_KEYS)
    normalize = meta.get("normalize_type", "")
    if normalize not in NORMALIZE_TYPES:
        raise ChoralError(f"{encoder_path}: metadata normalize_type={normalize!r} is not supported "
                          "(per_feature, NA or empty; sherpa-onnx implements only these)")
    if meta.get("is_giga_am", "0") not in ("", "0"):
        raise ChoralError(f"{encoder_path}: metadata is_giga_am={meta['is_giga_am']!r}: GigaAM's features "
                          "(64 Hann-window bins) are not supported")
    if "tdt" in meta.get("url", ""):
        raise ChoralError(f"{encoder_path}: a TDT model (metadata url {meta['url']!r}): token-and-duration "
                          "transducers are not supported")
    model_type = meta.get("model_type", "")
    if model_type and model_type not in NEMO_MODEL_TYPES:
        raise ChoralError(f"{encoder_path}: metadata model_type={model_type!r} is not a NeMo transducer "
                          f"({', '.join(NEMO_MODEL_TYPES)})")
    feat_dim = _int_key(encoder_path, meta, "feat_dim") if meta.get("feat_dim", "") else DEFAULT_FEAT_DIM
    if len(encoder.inputs) != 2 or len(encoder.inputs[0][2]) != 3 or len(encoder.outputs) < 2:
        shapes = ", ".join(f"{name} {list(shape)}" for name, _, shape in encoder.inputs)
        raise ChoralError(f"{encoder_path}: a NeMo encoder takes audio_signal (N, C, T) and length, "
                          f"this one takes {shapes or 'nothing'}")
    if _dim(encoder.inputs[0][2], 1) not in (None, feat_dim):
        raise ChoralError(f"{encoder_path}: audio_signal has {encoder.inputs[0][2][1]} channels, metadata "
                          f"feat_dim says {feat_dim}")
    if len(decoder.inputs) != 4 or len(decoder.outputs) != 4:
        names = ", ".join(name for name, _, _ in decoder.inputs)
        raise ChoralError(f"{decoder_path}: a NeMo decoder takes targets, target_length and two LSTM states and "
                          f"gives 4 outputs; this one takes {names or 'nothing'}")
    for name, _, shape in decoder.inputs[2:]:
        if len(shape) != 3 or _dim(shape, 0) not in (None, layers) or _dim(shape, 2) not in (None, hidden):
            raise ChoralError(f"{decoder_path}: state {name} {list(shape)} is not (pred_rnn_layers={layers}, N, "
                              f"pred_hidden={hidden}) as the encoder's metadata says")
    state_batch = all(_dim(shape, 1) is None for _, _, shape in decoder.inputs[2:])
    if len(joiner.inputs) != 2 or any(len(shape) != 3 for _, _, shape in joiner.inputs) or not joiner.outputs:
        raise ChoralError(f"{joiner_path}: a NeMo joiner takes encoder_outputs (N, D, T) and decoder_outputs "
                          "(N, H, U)")
    outputs = _dim(joiner.outputs[0][2], len(joiner.outputs[0][2]) - 1)
    if outputs is not None and outputs != vocab + 1:
        raise ChoralError(f"{joiner_path}: gives {outputs} scores per step, but the encoder's metadata "
                          f"vocab_size={vocab} means {vocab + 1} with the blank (a TDT joiner is not supported)")
    tokens = _read_tokens(directory / TOKENS_FILE)
    if len(tokens) != vocab + 1:
        raise ChoralError(f"{directory / TOKENS_FILE}: {len(tokens)} tokens, but metadata vocab_size={vocab} "
                          f"(+1 for the blank) in {encoder_path.name}")
    if tokens[-1] != "<blk>":
        raise ChoralError(f"{directory / TOKENS_FILE}: the last token must be the blank <blk> (NeMo's "
                          f"convention, which sherpa-onnx checks), not {tokens[-1]!r}")
    symbols = tuple(s.replace(SPACE_SYMBOL, " ") for s in tokens)
    unk = symbols.index("<unk>") if "<unk>" in symbols else None
    return NemoLayout(vocab + 1, layers, hidden, "" if normalize == "NA" else normalize, feat_dim, subsampling,
                      symbols, unk, state_batch)


def nemo_files(directory: str | Path) -> list[Path]:
    """The files a NeMo-layout directory is read from, checked (``bpe.model`` too, required for word pieces)."""
    directory = Path(directory)
    layout = read_nemo_layout(directory)
    files = [directory / name for name in NEMO_FILES]
    if (directory / BPE_FILE).is_file():
        files.append(directory / BPE_FILE)
    elif any(len(s.strip()) > 1 for s in layout.tokens[:-1] if not _special(s)):
        raise ChoralError(f"{directory}: lacks {BPE_FILE} (its {TOKENS_FILE} holds word pieces; copy the model's "
                          "sentencepiece tokenizer, tokenizer.model in the .nemo archive, there as bpe.model)")
    return files


def _special(symbol: str) -> bool:
    return symbol.startswith("<") and symbol.endswith(">")


# --- the vocabulary -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class NemoTokenTable(TokenTable):
    """NeMo's vocabulary in choral's order: the blank first, NeMo id ``k`` at choral id ``k + 1``.

    ``encode`` is the sentencepiece tokenizer's own segmentation (``processor``),
    or, for a character vocabulary without one, choral's character lookup.
    ``decode`` skips special symbols (``<unk>``).
    """

    processor: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        letters = "".join(s for s in self.symbols if not _special(s))
        object.__setattr__(self, "_upper", sum(c.isupper() for c in letters) > sum(c.islower() for c in letters))

    @classmethod
    def from_layout(cls, layout: NemoLayout, bpe: Path | None) -> "NemoTokenTable":
        symbols = ("<blk>", *layout.tokens[:-1])
        if bpe is None:
            return cls(symbols=symbols)
        processor = _tokenizer(bpe)
        pieces = [processor.IdToPiece(i).replace(SPACE_SYMBOL, " ") for i in range(processor.GetPieceSize())]
        if pieces != list(layout.tokens[:-1]):
            first = next((i for i, (a, b) in enumerate(zip(pieces, layout.tokens)) if a != b), min(len(pieces),
                                                                                                len(layout.tokens) - 1))
            raise ChoralError(f"{bpe}: {len(pieces)} pieces do not match tokens.txt's {len(layout.tokens) - 1} "
                              f"(first difference at id {first})")
        return cls(symbols=symbols, processor=processor)

    def encode(self, text: str | None) -> list[int]:
        if self.processor is None:
            return super().encode(text)
        normalised = self.normalizer(text)
        if self._upper:  # type: ignore[attr-defined]
            normalised = normalised.upper()
        return [i + 1 for i in self.processor.EncodeAsIds(normalised)] if normalised.strip() else []

    def decode(self, tokens: Sequence[int]) -> str:
        text = super().decode([t for t in tokens if 0 < t < len(self.symbols) and not _special(self.symbols[t])])
        return text.lower() if self._upper and self.normalizer.lowercase else text  # type: ignore[attr-defined]


def _tokenizer(path: Path) -> Any:
    """A NeMo sentencepiece tokenizer (no blank piece: NeMo's blank is after its vocabulary)."""
    spm = _sentencepiece()  # (bpe.processor_from_bytes insists on icefall's <blk> at 0; NeMo's has none)
    processor = spm.SentencePieceProcessor()
    try:
        processor.LoadFromSerializedProto(path.read_bytes())
    except Exception as error:  # sentencepiece raises RuntimeError/OSError with multi-line text
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ChoralError(f"{path}: not a sentencepiece model ({reason})") from None
    return processor


# --- features -------------------------------------------------------------------------------------------------------

FFT_SIZE = 512
LOG_GUARD = 2.0 ** -24  # NeMo's log_zero_guard_value ("add"), which sherpa-onnx 2.x adds before the log
LOW_HZ, HIGH_HZ = 0.0, SAMPLING_RATE / 2 - 400.0  # sherpa-onnx keeps its default high cut-off (-400) for NeMo


def _slaney_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per factor 6.4)."""
    hz = np.asarray(hz, dtype=np.float64)
    return np.where(hz <= 1000, hz * 3 / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4))


def _slaney_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel <= 15, mel * 200 / 3, 1000 * np.exp((mel - 15) * np.log(6.4) / 27))


@lru_cache(maxsize=4)
def librosa_mel_bank(num_bins: int) -> torch.Tensor:
    """``(FFT_SIZE/2 + 1, num_bins)`` triangular filters, evenly spaced on Slaney's mel scale, each with area
    normalisation ``2 / (right - left)`` (librosa's ``norm='slaney'``); FFT bin ``i`` sits at
    ``i * rate / FFT_SIZE``."""
    edges = _slaney_hz(np.linspace(_slaney_mel(LOW_HZ), _slaney_mel(HIGH_HZ), num_bins + 2))
    hz = np.arange(FFT_SIZE // 2 + 1) * SAMPLING_RATE / FFT_SIZE
    bank = np.zeros((FFT_SIZE // 2 + 1, num_bins))
    for b in range(num_bins):
        left, centre, right = edges[b: b + 3]
        rising, falling = (hz - left) / (centre - left), (right - hz) / (right - centre)
        inside = (hz > left) & (hz < right)
        bank[:, b] = np.where(inside, np.where(hz <= centre, rising, falling), 0.0) * 2 / (right - left)
    return torch.from_numpy(bank.astype(np.float32))


@lru_cache(maxsize=1)
def _stft() -> Any:
    from lhotse.features.kaldi.layers import Wav2FFT

    return Wav2FFT(sampling_rate=SAMPLING_RATE, frame_length=0.025, frame_shift=0.01, round_to_power_of_two=True,
                   remove_dc_offset=False, preemph_coeff=0.97, window_type="povey", dither=0.0, snip_edges=False,
                   use_energy=False)


@torch.inference_mode()
def nemo_features(samples: np.ndarray, num_bins: int = DEFAULT_FEAT_DIM, normalize: str = "per_feature"
                  ) -> np.ndarray:
    """``(frames, num_bins)`` log-mel features of 16 kHz samples as sherpa-onnx computes them for NeMo models.

    ``log(mel + 2^-24)``: the guard is NeMo's (a floor at float32's epsilon instead
    moved sherpa-onnx 2.0.1's log-probabilities by up to 4e-3 on quiet frames).
    ``per_feature``: each bin minus its mean over the utterance, over its standard
    deviation ``sqrt(E[x^2] - E[x]^2)`` plus 1e-5.
    """
    spectrum = _stft()(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None])[0]
    power = spectrum.real.square() + spectrum.imag.square()
    mel = power.double() @ librosa_mel_bank(num_bins).double()
    features = np.log(mel.numpy() + LOG_GUARD)
    if normalize == "per_feature":
        mean = features.mean(axis=0)
        std = np.sqrt(np.maximum((features ** 2).mean(axis=0) - mean ** 2, 0.0))
        features = (features - mean) / (std + 1e-5)
    return features.astype(np.float32)


# --- the model ------------------------------------------------------------------------------------------------------

class NemoTransducer:
    """The three ONNX sessions of a NeMo directory as a :class:`~.search.Decodable` (choral ids, blank 0)."""

    def __init__(self, directory: str | Path, layout: NemoLayout) -> None:
        ort = onnxruntime_module()
        self.directory = Path(directory)
        self.layout = layout
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions = []
        for name in MODEL_FILES:
            try:
                sessions.append(ort.InferenceSession(str(self.directory / name), sess_options=options,
                                                     providers=["CPUExecutionProvider"]))
            except Exception as error:  # onnxruntime raises its own kinds
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                raise ChoralError(f"{self.directory / name}: not a loadable ONNX model ({reason})") from None
        self.encoder, self.decoder, self.joiner = sessions
        self._enc_in = [i.name for i in self.encoder.get_inputs()]
        self._enc_len_type = np.int32 if self.encoder.get_inputs()[1].type == "tensor(int32)" else np.int64
        self._dec_in = [i.name for i in self.decoder.get_inputs()]
        self._dec_types = [np.int32 if i.type == "tensor(int32)" else np.int64 for i in self.decoder.get_inputs()[:2]]
        self._join_in = [i.name for i in self.joiner.get_inputs()]
        self.context_size = 1  # (for callers that ask; a stateful decoder has no context window)

    # --- encoder ---------------------------------------------------------------------------------------------------
    def encode(self, features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder frames ``(N, T', D)`` (twice: the joiner's input and the frames to store) and lengths."""
        lengths = np.array([f.shape[0] for f in features], dtype=self._enc_len_type)
        batch = np.zeros((len(features), self.layout.feat_dim, int(lengths.max())), dtype=np.float32)
        for i, f in enumerate(features):
            batch[i, :, : f.shape[0]] = f.T
        out, out_lengths = self.encoder.run(None, {self._enc_in[0]: batch, self._enc_in[1]: lengths})[:2]
        frames = torch.from_numpy(np.ascontiguousarray(out.transpose(0, 2, 1)))
        return frames, torch.from_numpy(out_lengths.astype(np.int64)), frames

    # --- decoder ---------------------------------------------------------------------------------------------------
    def _decoder_rows(self, targets: np.ndarray, h: np.ndarray, c: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        feed = {self._dec_in[0]: targets.astype(self._dec_types[0]),
                self._dec_in[1]: np.full(targets.shape[0], targets.shape[1], dtype=self._dec_types[1]),
                self._dec_in[2]: np.ascontiguousarray(h, dtype=np.float32),
                self._dec_in[3]: np.ascontiguousarray(c, dtype=np.float32)}
        out, _, h_next, c_next = self.decoder.run(None, feed)[:4]
        return out, h_next, c_next

    def _run_decoder(self, nemo_targets: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Decoder outputs ``(M, U, H)`` and the state after ``nemo_targets (M, U)`` from ``state``."""
        targets, h, c = nemo_targets.numpy(), state[0].numpy(), state[1].numpy()
        if self.layout.state_batch or targets.shape[0] == 1:
            out, h_next, c_next = self._decoder_rows(targets, h, c)
        else:  # NeMo's export pins one state to batch 1: one row at a time
            rows = [self._decoder_rows(targets[i: i + 1], h[:, i: i + 1], c[:, i: i + 1])
                    for i in range(targets.shape[0])]
            out, h_next, c_next = (np.concatenate(parts, axis=axis) for parts, axis in zip(zip(*rows), (0, 1, 1)))
        return (torch.from_numpy(np.ascontiguousarray(out.transpose(0, 2, 1))),
                (torch.from_numpy(h_next), torch.from_numpy(c_next)))

    def _zeros(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.layout.pred_layers, n, self.layout.pred_hidden)
        return zeros, zeros.clone()

    def to_nemo(self, symbols: torch.Tensor) -> torch.Tensor:
        """choral ids -> NeMo ids (choral's blank 0 is NeMo's last id)."""
        symbols = symbols.long()
        return torch.where(symbols == BLANK, torch.full_like(symbols, self.layout.blank), symbols - 1)

    # --- Decodable -------------------------------------------------------------------------------------------------
    def project_encoder(self, encoded: torch.Tensor) -> torch.Tensor:
        return encoded

    def start(self, n: int, device: torch.device | None = None) -> tuple[torch.Tensor, Any]:
        out, state = self._run_decoder(torch.full((n, 1), self.layout.blank, dtype=torch.long), self._zeros(n))
        return out[:, 0], state

    def advance(self, symbols: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        out, state = self._run_decoder(self.to_nemo(symbols.cpu())[:, None], state)
        return out[:, 0], state

    def select(self, state: Any, index: torch.Tensor) -> Any:
        index = index.cpu()
        return state[0][:, index], state[1][:, index]

    def concat(self, first: Any, second: Any) -> Any:
        return torch.cat([first[0], second[0]], dim=1), torch.cat([first[1], second[1]], dim=1)

    def _join_rows(self, enc: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Joiner over ``enc (N, D, T)`` and ``pred (N, H, U)`` -> ``(N, T, U, V)`` logits, NeMo order."""
        return self.joiner.run(None, {self._join_in[0]: enc, self._join_in[1]: pred})[0]

    def join(self, enc_projected: torch.Tensor, pred_projected: torch.Tensor) -> torch.Tensor:
        """Logits in choral's order (blank first) of broadcastable encoder ``(..., D)`` and decoder ``(..., H)``
        vectors; the (frames x symbols) grid of scoring goes through the joiner in one call."""
        enc, pred = enc_projected.float(), pred_projected.float()
        if enc.dim() == 4 and pred.dim() == 4 and enc.shape[2] == 1 and pred.shape[1] == 1:
            n = max(enc.shape[0], pred.shape[0])
            grid = self._join_rows(np.ascontiguousarray(enc[:, :, 0].expand(n, -1, -1).transpose(1, 2).numpy()),
                                   np.ascontiguousarray(pred[:, 0].expand(n, -1, -1).transpose(1, 2).numpy()))
            logits = torch.from_numpy(grid)
        else:
            shape = torch.broadcast_shapes(enc.shape[:-1], pred.shape[:-1])
            enc_rows = enc.expand(*shape, enc.shape[-1]).reshape(-1, enc.shape[-1])
            pred_rows = pred.expand(*shape, pred.shape[-1]).reshape(-1, pred.shape[-1])
            rows = self._join_rows(np.ascontiguousarray(enc_rows[:, :, None].numpy()),
                                   np.ascontiguousarray(pred_rows[:, :, None].numpy()))
            logits = torch.from_numpy(rows).reshape(*shape, rows.shape[-1])
        return torch.cat([logits[..., -1:], logits[..., :-1]], dim=-1)

    def predict_along(self, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.long().cpu()
        start = torch.full((targets.shape[0], 1), self.layout.blank, dtype=torch.long)
        out, _ = self._run_decoder(torch.cat([start, self.to_nemo(targets)], dim=1), self._zeros(targets.shape[0]))
        return out


# --- search ---------------------------------------------------------------------------------------------------------

@torch.inference_mode()
def nemo_greedy_search(model: NemoTransducer, encoded: torch.Tensor, lengths: torch.Tensor,
                       max_symbols: int = MAX_SYMBOLS_PER_FRAME) -> list[Hypothesis]:
    """The most likely symbol at each step, up to ``max_symbols`` labels per frame (a blank moves to the next
    frame); batched over utterances. Scores sum the chosen log-probabilities, blanks included."""
    batch, frames, _ = encoded.shape
    pred, state = model.start(batch)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    scores = [0.0] * batch
    for t in range(frames):
        active = [i for i in range(batch) if int(lengths[i]) > t]
        for _ in range(max_symbols):
            if not active:
                break
            index = torch.tensor(active)
            log_probs = model.join(encoded[index, t], pred[index]).log_softmax(-1)
            best_lp, best = log_probs.max(-1)
            emit = []
            for i, symbol, lp in zip(active, best.tolist(), best_lp.tolist()):
                scores[i] += lp
                if symbol != BLANK:
                    tokens[i].append(symbol)
                    emit.append(i)
            if emit:
                emit_index = torch.tensor(emit)
                chosen = best[[active.index(i) for i in emit]]
                new_pred, new_state = model.advance(chosen, model.select(state, emit_index))
                take = torch.arange(batch)
                take[emit_index] = batch + torch.arange(len(emit))
                state = model.select(model.concat(state, new_state), take)
                pred = torch.cat([pred, new_pred])[take]
            active = emit
    return [Hypothesis(tuple(t), s) for t, s in zip(tokens, scores)]


@dataclass(frozen=True)
class _Hyp:
    tokens: tuple[int, ...]
    score: float
    frame: int
    symbols: int          # labels emitted on the current frame
    row: int              # its decoder output and state in the store
    pending: bool = False  # its last label is not yet fed to the decoder


@torch.inference_mode()
def nemo_beam_search(model: NemoTransducer, encoded: torch.Tensor, lengths: torch.Tensor, beam: int = 4,
                     max_symbols: int = MAX_SYMBOLS_PER_FRAME, unk: int | None = None) -> list[list[Hypothesis]]:
    """sherpa-onnx's beam search for NeMo transducers (``modified_beam_search``, ``max_active_paths=beam``), batched
    over utterances; per utterance its final hypotheses, best first (the first is sherpa-onnx's answer).

    Each hypothesis sits at its own frame. A step expands, per utterance, the
    hypotheses at its earliest frame: each by its ``beam`` most likely symbols, a
    label staying on the frame (at most ``max_symbols`` per frame, then a free move
    on), blank or ``unk`` (choral id) moving to the next frame with the symbols
    unchanged. The utterance's candidates, hypotheses ahead included, are pruned to
    the ``beam`` best by score; equal outputs are not merged.
    """
    if beam < 1:
        raise ValueError("beam must be at least 1")
    batch = encoded.shape[0]
    frame_count = [int(x) for x in lengths.tolist()]
    pred, state = model.start(batch)
    hyps = [[_Hyp((), 0.0, 0, 0, u)] for u in range(batch)]
    while True:
        expand: list[tuple[int, _Hyp]] = []
        candidates: dict[int, list[_Hyp]] = {}
        for u in range(batch):
            earliest = min(h.frame for h in hyps[u])
            if earliest >= frame_count[u]:
                continue
            kept = candidates.setdefault(u, [])
            for h in hyps[u]:
                if h.frame > earliest:
                    kept.append(h)
                elif h.symbols >= max_symbols:
                    kept.append(replace(h, frame=h.frame + 1, symbols=0))
                else:
                    expand.append((u, h))
        if not candidates:
            break
        if expand:
            enc = encoded[torch.tensor([u for u, _ in expand]), torch.tensor([h.frame for _, h in expand])]
            log_probs = model.join(enc, pred[torch.tensor([h.row for _, h in expand])]).log_softmax(-1)
            top_lp, top_ids = log_probs.topk(min(beam, log_probs.shape[-1]), dim=-1)
            for (u, h), lps, ids in zip(expand, top_lp.tolist(), top_ids.tolist()):
                for lp, k in zip(lps, ids):
                    if k == BLANK or k == unk:
                        candidates[u].append(replace(h, score=h.score + lp, frame=h.frame + 1, symbols=0))
                    else:
                        candidates[u].append(_Hyp(h.tokens + (k,), h.score + lp, h.frame, h.symbols + 1, h.row, True))
        for u, kept in candidates.items():
            hyps[u] = sorted(kept, key=lambda h: -h.score)[:beam]
        # feed the survivors' new labels to the decoder (one call), then compact the store to the live rows
        live = [h for u in range(batch) for h in hyps[u]]
        fresh = [h for h in live if h.pending]
        rows_pred, rows_state = pred, state
        if fresh:
            new_pred, new_state = model.advance(torch.tensor([h.tokens[-1] for h in fresh]),
                                                model.select(state, torch.tensor([h.row for h in fresh])))
            rows_pred = torch.cat([pred, new_pred])
            rows_state = model.concat(state, new_state)
        fresh_row = {id(h): pred.shape[0] + j for j, h in enumerate(fresh)}
        index = torch.tensor([fresh_row[id(h)] if h.pending else h.row for h in live], dtype=torch.long)
        pred, state = rows_pred[index], model.select(rows_state, index)
        position = iter(range(len(live)))
        hyps = [[replace(h, row=next(position), pending=False) for h in hyps[u]] for u in range(batch)]
    return [[Hypothesis(h.tokens, h.score) for h in sorted(hs, key=lambda h: -h.score)] for hs in hyps]


# --- the teacher ----------------------------------------------------------------------------------------------------

class NemoTeacher:
    """A :class:`~.contracts.Teacher` over a NeMo-layout directory: sherpa-onnx's features and searches, n-best
    rescored by exact RNN-T log-likelihood, texts scored with the tokenizer's own segmentation."""

    def __init__(self, model: NemoTransducer, tokens: NemoTokenTable, *, beam: int = 4, nbest: int = 4,
                 search_temperature: float = 1.0, score_cache: int = 64) -> None:
        if beam < 1 or nbest < 1:
            raise ValueError("beam and nbest must be at least 1")
        if search_temperature != 1.0:
            raise ChoralError("a NeMo teacher searches as sherpa-onnx does: search temperature must be 1")
        self.model = model
        self.tokens = tokens
        self.beam = beam
        self.nbest = nbest
        self.score_cache = score_cache
        self.unk = None if model.layout.unk is None else model.layout.unk + 1

    def features(self, cuts: Sequence[Cut]) -> list[np.ndarray]:
        """sherpa-onnx's NeMo features of each cut; one AudioError naming every cut whose audio failed."""
        out, failures = [], {}
        for cut in cuts:
            try:
                features = nemo_features(load_audio(cut), self.model.layout.feat_dim, self.model.layout.normalize)
                if features.shape[0] == 0:
                    raise AudioError({cut.id: "audio is too short for one feature frame"})
                out.append(features)
            except AudioError as error:
                failures.update(error.failures)
        if failures:
            raise AudioError(failures)
        return out

    def _own_ids(self, tokens: Sequence[int]) -> list[int]:
        return [t - 1 for t in tokens]

    def greedy_features(self, features: Sequence[np.ndarray]) -> list[tuple[str, list[int], float]]:
        """Greedy 1-best ``(text, NeMo ids, path score)`` per feature matrix."""
        if not features:
            return []
        encoded, lengths, _ = self.model.encode(features)
        return [(self.tokens.decode(h.tokens), self._own_ids(h.tokens), h.score)
                for h in nemo_greedy_search(self.model, encoded, lengths)]

    def greedy(self, cuts: Sequence[Cut]) -> list[tuple[str, list[int], float]]:
        return self.greedy_features(self.features(cuts))

    def beam_features(self, features: Sequence[np.ndarray]) -> list[list[Hypothesis]]:
        """The final beam of each feature matrix (choral ids), best first: the first is sherpa-onnx's 1-best."""
        if not features:
            return []
        encoded, lengths, _ = self.model.encode(features)
        return nemo_beam_search(self.model, encoded, lengths, self.beam, unk=self.unk)

    def decode(self, cuts: Sequence[Cut]) -> list[DecodeResult]:
        return self.decode_features(self.features(cuts))

    @torch.inference_mode()
    def decode_features(self, features: Sequence[np.ndarray]) -> list[DecodeResult]:
        """Beam-search a batch together; the distinct outputs are rescored exactly (all alignments) and ranked."""
        if not features:
            return []
        encoded, lengths, frames = self.model.encode(features)
        results = []
        for i, hyps in enumerate(nemo_beam_search(self.model, encoded, lengths, self.beam, unk=self.unk)):
            length = int(lengths[i])
            distinct = list(dict.fromkeys(h.tokens for h in hyps))
            exact = score_texts(self.model, encoded[i, :length], distinct)
            ranked = nbest_texts([Hypothesis(t, s) for t, s in zip(distinct, exact)], self.tokens, self.nbest)
            stored = frames[i, :length].float().numpy()
            results.append(DecodeResult([(text, self._own_ids(ids), score) for text, ids, score in ranked],
                                        stored, stored.mean(axis=0)))
        return results

    def scorer(self, cuts: Sequence[Cut], options: ScoreOptions = ScoreOptions(), *,
               store: ScoreStore | None = None) -> BatchScorer:
        """Scores texts by RNN-T log-likelihood of the tokenizer's segmentation, in batched lattice passes
        (:mod:`.scoring`); the networks run in onnxruntime, the forward algorithm in torch."""

        def encode(batch: list[Cut]) -> list[torch.Tensor]:
            return stored_or_encoded(batch, lambda cut: None, self.features,
                                     lambda features: self.model.encode(features)[:2])

        return BatchScorer(cuts, self.model, encode, self.tokens, options, store=store)


def load_nemo_teacher(directory: str | Path, *, beam: int = 4, nbest: int = 4,
                      search_temperature: float = 1.0) -> NemoTeacher:
    """The teacher of a NeMo-layout directory; ChoralError if it is incomplete or not that layout."""
    directory = Path(directory)
    files = nemo_files(directory)
    layout = read_nemo_layout(directory)
    bpe = directory / BPE_FILE if directory / BPE_FILE in files else None
    tokens = NemoTokenTable.from_layout(layout, bpe)
    return NemoTeacher(NemoTransducer(directory, layout), tokens, beam=beam, nbest=nbest,
                       search_temperature=search_temperature)


@register_teacher_backend
class NemoBackend:
    """A directory whose decoder is NeMo's stateful prediction network (inputs ``targets``, ``target_length``)."""

    name = "nemo"
    kind = "a NeMo-layout teacher directory"
    description = ("a directory in NeMo's layout as sherpa-onnx runs it (encoder.onnx with NeMo's metadata, "
                   "decoder.onnx with LSTM state, joiner.onnx, tokens.txt with <blk> last, bpe.model; "
                   "NeMo's encoder/decoder/joint export)")

    def claims(self, path: Path) -> bool:
        return path.is_dir() and looks_like_nemo(path)

    def files(self, path: Path) -> list[Path]:
        return nemo_files(path)

    def open(self, path: Path, *, beam: int, nbest: int, search_temperature: float) -> NemoTeacher:
        return load_nemo_teacher(path, beam=beam, nbest=nbest, search_temperature=search_temperature)
