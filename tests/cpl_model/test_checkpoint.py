"""Checkpoints: a faithful round trip, weights-only files, clear errors, atomic writes."""

from __future__ import annotations

import pytest
import torch

from cpl_model import PROMPT_VARIANTS, build_model, load_checkpoint, save_checkpoint
from cpl_model.checkpoint import FORMAT


class Payload:
    """An arbitrary class: pickling it is fine, unpickling it must be refused."""

    def __init__(self) -> None:
        self.value = 42


def images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("prompt", PROMPT_VARIANTS)
def test_round_trip_restores_config_weights_and_outputs(tmp_path, prompt):
    model = build_model("tiny", prompt, seed=3, top_k=2 if prompt == "sparse" else 1).eval()
    extra = {"step": 120, "recipes": ["noise25", "haze"], "lr": 2e-4, "nested": {"ok": True}}
    path = save_checkpoint(model, tmp_path / "ckpt.pt", extra=extra)
    loaded, loaded_extra = load_checkpoint(path)
    assert loaded.config == model.config and loaded_extra == extra
    assert not loaded.training
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    x = images(2, 21, 30)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_trained_weights_survive_the_round_trip(tmp_path):
    """Not just the seed's initialisation: weights changed after building are what is stored."""
    model = build_model("tiny", "sparse").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt.pt"))
    x = images(1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert not torch.equal(loaded(x), build_model("tiny", "sparse").eval()(x))


def test_checkpoint_is_a_plain_weights_only_file(tmp_path):
    model = build_model("tiny", "sparse")
    path = save_checkpoint(model, tmp_path / "ckpt.pt", extra={"note": "x"})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["config"] == model.config.to_dict()
    assert all(t.dtype == torch.float32 for t in payload["state_dict"].values())
    assert payload["extra"] == {"note": "x"}


def test_missing_extra_loads_as_an_empty_dict(tmp_path):
    _, extra = load_checkpoint(save_checkpoint(build_model("tiny", "none"), tmp_path / "ckpt.pt"))
    assert extra == {}


def test_save_creates_parent_folders_and_leaves_no_partial_file(tmp_path):
    target = tmp_path / "runs" / "a" / "ckpt.pt"
    returned = save_checkpoint(build_model("tiny", "sparse"), target)
    assert returned == target and target.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["ckpt.pt"]


def test_saving_over_a_checkpoint_replaces_it(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(build_model("tiny", "sparse", seed=0), path)
    save_checkpoint(build_model("tiny", "dense", seed=1), path)
    loaded, _ = load_checkpoint(path)
    assert loaded.config.prompt == "dense"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_extra_that_could_not_be_loaded_back_is_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(build_model("tiny", "sparse"), tmp_path / "ckpt.pt", extra={"callback": lambda: None})
    assert list(tmp_path.iterdir()) == []


def _failing_save(payload, path):
    """Write half a file, then fail, as a full disk or a killed writer would."""
    with open(path, "wb") as handle:
        handle.write(b"partial")
    raise OSError("disk full")


def test_a_save_failing_mid_write_keeps_the_previous_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(build_model("tiny", "sparse"), path, extra={"step": 1})
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(build_model("tiny", "sparse"), path, extra={"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path)[1] == {"step": 1}


def test_missing_file_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("content", [
    {"state_dict": {}},  # a weights-only dict, but not ours
    {"format": "someone-else/1", "config": {}, "state_dict": {}},
    torch.zeros(3),
    [1, 2, 3],
], ids=["no-format", "other-format", "tensor", "list"])
def test_weights_only_files_that_are_not_checkpoints_raise_value_error(tmp_path, content):
    path = tmp_path / "other.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match="checkpoint"):
        load_checkpoint(path)


def test_text_file_raises_value_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint at all\n")
    with pytest.raises(ValueError, match="notes.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"junk", b"abcdefgh", b"\x80\x02junkjunk", b"PK\x03\x04junk"],
                         ids=["empty", "four-bytes", "eight-bytes", "pickle-header", "zip-header"])
def test_a_few_bytes_that_are_not_a_torch_file_raise_value_error(tmp_path, content):
    path = tmp_path / "short.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="short.pt"):
        load_checkpoint(path)


def test_pickled_objects_are_refused_with_value_error(tmp_path):
    """A file from an untrusted source must not run code, and the refusal is the documented ValueError."""
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": Payload()}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)


def test_checkpoint_with_an_unknown_config_key_raises_value_error(tmp_path):
    model = build_model("tiny", "sparse")
    payload = {"format": FORMAT, "config": {**model.config.to_dict(), "bogus": 1},
               "state_dict": model.state_dict(), "extra": {}}
    torch.save(payload, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match="bogus"):
        load_checkpoint(tmp_path / "ckpt.pt")
