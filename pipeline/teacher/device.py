"""Where the teacher runs: ``--device auto|cpu|cuda[:N]`` (decode and scoring) and the run config's ``device``.

``auto`` picks the first CUDA device when torch sees one, else the CPU. A named CUDA
device that torch does not see is an error, not a silent fall-back: a run that was
meant to use a GPU should not quietly take hours on the CPU.
"""

from __future__ import annotations

import re

import torch

from ..errors import ChoralError, ConfigError

DEVICE_HELP = "Where the teacher runs: auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N."
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_spec(spec: str, field: str = "device") -> str:
    """``spec`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; else a ConfigError on ``field``."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise ConfigError(field, f"must be auto, cpu, cuda or cuda:N, not {spec!r}")
    return spec


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device ``spec`` names (see the module docstring); ChoralError for a CUDA device torch lacks."""
    check_device_spec(spec)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ChoralError(f"device {spec}: torch sees no CUDA device (use --device cpu or auto)")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ChoralError(f"device {spec}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device
