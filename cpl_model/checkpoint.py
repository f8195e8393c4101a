"""Self-describing checkpoints: the model config and the weights in one file.

Loading needs neither the training code's runtime nor pickle: files are read with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers, so a file
from an untrusted source cannot run code. Writes go to a temporary file renamed into place, so a
reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .network import CPLNet

FORMAT = "cpl-restore-checkpoint/1"
WEIGHTS = "model.pt"  # the checkpoint's file name wherever the pipelines write or look for one


def load_weights_only(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with every failure (missing file, not a torch file, a pickled
    object that weights-only loading refuses) reported as ``ValueError`` naming the file."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    # A few bytes that are not a torch file fail inside the unpickler: struct.error, IndexError, KeyError.
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, struct.error, LookupError) as err:
        text = str(err).strip()
        # torch's refusal of a pickled object starts with paragraphs of advice; the object's name is below.
        refused = _REFUSED_GLOBAL.search(text)
        if refused:
            reason = f"it pickles {refused.group(1)}, code that weights-only loading refuses to run"
        else:
            reason = text.splitlines()[0] if text else type(err).__name__
        raise ValueError(f"cannot load {path} as a weights-only torch file: {reason}") from None


_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def save_checkpoint(model: CPLNet, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s config and fp32 weights, plus ``extra`` (JSON-serialisable, e.g. the training config).

    Raises:
        ValueError: if ``extra`` is not JSON-serialisable (it could not be loaded back safely).
    """
    extra = extra or {}
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint extra must be JSON-serialisable: {err}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().float().cpu() for name, tensor in model.state_dict().items()}
    payload = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state, "extra": extra}
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(payload, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[CPLNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint file; returns ``(model in eval mode, extra)``.

    Raises:
        ValueError: if the file is missing, not a weights-only file, or not one of our checkpoints.
    """
    payload = load_weights_only(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint")
    model = CPLNet(ModelConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload.get("extra", {})
