"""The export formats by name: what each one writes, and the function that writes it.

A format is one registered writer function (lhotse's ``register_*`` style)::

    @register_export_format("toy", output="{prefix}_{split}.txt", description="cut id and text per line")
    def write_toy(items: Iterable[tuple[Cut, Label]], paths: ExportPaths, source: Path) -> int:
        ...

The name is all a user gives (``--format toy``, ``export.format: toy``); the
registry turns it into the writer, as scikit-learn turns a kernel's name into its
function. ``ExportConfig`` accepts exactly the registered names, and ``choral
export --format`` offers them with each format's output and description, so a
new format needs no edit anywhere else. The built-in lhotse, NeMo and Kaldi
formats register themselves the same way.

A writer gets lhotse cuts. One registered with ``raw=True`` gets each cut as the JSON object
of its manifest line instead (a dict, what ``Cut.to_dict`` gives), with no lhotse object
built: the ``lhotse`` format passes lines through that way, which a million-cut export
needs (building and serialising the cuts again costs several times the rest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from lhotse.cut import Cut

from ..errors import ChoralError
from .pseudo_labels import Label

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class ExportPaths:
    """Where one export writes: the primary output (manifest, or Kaldi dir) and the feature archive."""

    primary: Path
    features: Path | None = None

    @property
    def all(self) -> list[Path]:
        return [self.primary] + ([self.features] if self.features is not None else [])


# A writer consumes the kept cuts with their labels, writes ``paths`` (each under its real name only when
# complete), and returns how many utterance ids it had to rename (only Kaldi renames). ``source`` is the
# rescored manifest, for error messages.
Writer = Callable[[Iterable[tuple[Cut, Label]], ExportPaths, Path], int]
# A writer registered with raw=True gets the cuts as their manifest lines' JSON objects.
RawWriter = Callable[[Iterable[tuple[dict, Label]], ExportPaths, Path], int]


@dataclass(frozen=True)
class ExportFormat:
    """One export format: its name, its writer, the names of what it writes, and one line for ``--help``.

    ``output`` and ``features`` are names under the output folder with ``{prefix}``
    and ``{split}`` placeholders; a folder's name ends in ``/``. Only a format with
    a ``features`` name takes ``--with-fbank``. ``raw``: the writer takes cuts as JSON dicts
    (:data:`RawWriter`) rather than lhotse cuts.
    """

    name: str
    writer: Callable[[Iterable[tuple[Any, Label]], ExportPaths, Path], int]
    output: str
    description: str
    features: str | None = None
    raw: bool = False

    def paths(self, out_dir: Path, prefix: str, split: str, *, with_fbank: bool = False) -> ExportPaths:
        """The output (and fbank archive) paths for one prefix and split."""
        features = self.features if with_fbank else None
        return ExportPaths(out_dir / self.output.format(prefix=prefix, split=split),
                           out_dir / features.format(prefix=prefix, split=split) if features is not None else None)

    @property
    def help(self) -> str:
        """``name: OUT_DIR/<output> (description)``, as ``choral export --help`` lists it."""
        return f"{self.name}: OUT_DIR/{self.output.format(prefix='PREFIX', split='SPLIT')} ({self.description})"


_FORMATS: dict[str, ExportFormat] = {}


def register_export_format(name: str, *, output: str, description: str, features: str | None = None,
                           raw: bool = False) -> Callable[[Any], Any]:
    """Decorator: register the writer it decorates as export format ``name``; listed in registration order.
    With ``raw`` the writer is a :data:`RawWriter` (cuts as JSON dicts)."""
    if not _NAME.match(name):
        raise ValueError(f"export format name {name!r} must be lower-case letters, digits, '-' or '_'")
    for pattern in (output, features):
        try:
            if pattern is not None:
                pattern.format(prefix="", split="")
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"export format {name!r}: {pattern!r} may only use {{prefix}} and {{split}}") from None

    def register(writer: Any) -> Any:
        if name in _FORMATS:
            raise ValueError(f"export format {name!r} is already registered")
        _FORMATS[name] = ExportFormat(name, writer, output, description, features, raw)
        return writer

    return register


def unregister_export_format(name: str) -> None:
    """Remove a registered format (a test's toy format, for one)."""
    if _FORMATS.pop(name, None) is None:
        raise ValueError(f"export format {name!r} is not registered")


def export_format_names() -> tuple[str, ...]:
    """The registered format names, in registration order."""
    return tuple(_FORMATS)


def export_formats() -> tuple[ExportFormat, ...]:
    """The registered formats, in registration order."""
    return tuple(_FORMATS.values())


def get_export_format(name: str) -> ExportFormat:
    """The format registered as ``name``; a ChoralError naming the registered ones if there is none."""
    if not isinstance(name, str) or name not in _FORMATS:
        raise ChoralError(f"unknown export format {name!r}; choose one of {', '.join(_FORMATS)}")
    return _FORMATS[name]
