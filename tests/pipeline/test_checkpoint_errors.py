"""A malformed teacher checkpoint is one line naming it and the problem (issue 16: TypeError, KeyError,
RuntimeError and ValueError tracebacks before)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from choral.cli.app import app
from choral.pipeline.errors import ChoralError
from choral.pipeline.teacher import TransducerConfig, TransducerTeacher, load_teacher, save_teacher

TINY = TransducerConfig(conv_channels=4, encoder_input=16, encoder_hidden=16, encoder_layers=1, embedding_dim=8,
                        predictor_hidden=16, joiner_dim=16, dropout=0.0)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda payload: payload.__setitem__(key, value)


def _config(key: str, value: object) -> Callable[[dict], None]:
    return lambda payload: payload["config"].__setitem__(key, value)


def _shrink(payload: dict) -> None:
    payload["state_dict"]["conv1.weight"] = payload["state_dict"]["conv1.weight"][:2]


@pytest.mark.parametrize("damage, message", [
    (_config("colour", "blue"), "unknown model config key 'colour'"),
    (_config("encoder_hidden", "wide"), "model config key 'encoder_hidden' must be int, not 'wide'"),
    (_config("encoder_layers", 0), "model config key 'encoder_layers' must be positive, not 0"),
    (_config("dropout", 1.5), "model config key 'dropout' must be in [0, 1), not 1.5"),
    (_config("encoder_hidden", 32), "weights do not fit the model config (size mismatch for encoder"),
    (lambda p: p.pop("tokens"), "incomplete teacher checkpoint (no tokens)"),
    (lambda p: p.pop("state_dict"), "incomplete teacher checkpoint (no state_dict)"),
    (_set("config", [1, 2]), "bad model config (expected a mapping, found list)"),
    (_set("tokens", "abc"), "bad token table (expected a non-empty list of strings)"),
    (_set("tokens", ["<blk>", " ", 3]), "bad token table (expected a non-empty list of strings)"),
    (lambda p: p["tokens"].__setitem__(0, "<x>"), "bad token table (the first symbol of a token table must be"),
    (lambda p: p["tokens"].__setitem__(2, "b"), "bad token table (symbol 'b' appears twice)"),
    (lambda p: p["tokens"].pop(), "model vocabulary 29 != token table size 28"),
    (_shrink, "weights do not fit the model config (size mismatch for conv1.weight"),
    (lambda p: p["state_dict"].pop("joiner_out.bias"), "weights do not fit the model config (Missing key(s)"),
    (lambda p: p["state_dict"].__setitem__("extra", torch.zeros(1)), "(Unexpected key(s) in state_dict: \"extra\""),
    (_set("state_dict", 7), "bad weights (expected a state dict, found int)"),
])
def test_malformed_checkpoint_is_one_line(tmp_path: Path, damage: Callable[[dict], None], message: str) -> None:
    path = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=0), path)
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.raises(ChoralError) as caught:
        load_teacher(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_decode_command_names_the_bad_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    save_teacher(TransducerTeacher.random(TINY, seed=0), path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["colour"] = "blue"
    torch.save(payload, path)
    (tmp_path / "cuts.jsonl.gz").write_bytes(b"")
    result = CliRunner().invoke(app, ["decode", str(tmp_path / "cuts.jsonl.gz"), str(tmp_path / "run"),
                                      "--teacher", str(path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{path}: unknown model config key 'colour'" in lines[0]


def test_a_garbage_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "teacher.pt"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ChoralError, match="not a readable teacher checkpoint"):
        load_teacher(path)
