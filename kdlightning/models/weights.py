"""Load model weights from a kdlightning/Lightning checkpoint or a plain ``state_dict`` file.

    from kdlightning.models.weights import load_weights
    load_weights(teacher, "logs/classify/runs/<date>_<time>_<id>/teacher/checkpoints/best.ckpt",
                 role="teacher")

Every failure a user can cause (missing file, not a checkpoint, wrong architecture) raises an
error that names the file and says what to do, instead of a traceback from inside torch. Files
are read with ``torch.load(weights_only=True)``: tensors and plain values, never code, so a
checkpoint from anywhere cannot run anything when it is loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Prefixes under which our Lightning modules keep the wrapped network in their state dict:
# ClassifierModule.model, DistillationModule.student (the teacher is never saved).
_MODULE_PREFIXES = ("model.", "student.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into the requested model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the network weights from ``path``: a Lightning checkpoint or a plain state dict.

    Lightning checkpoints written by ``ClassifierModule`` or ``DistillationModule`` have their
    ``model.``/``student.`` prefix stripped, so the result loads into the bare network.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint file not found: {str(path)!r}; give the path of a .ckpt written by "
            "kdlightning (see results.json) or of a torch.save(model.state_dict()) file."
        )
    try:
        # weights_only=True: tensors and plain Python values only, never code. A pickle that
        # would run something on load (or a whole pickled nn.Module) is refused here.
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch says "GLOBAL" when the pickle names a class or function (code); any other
        # unpickling error means the bytes are no checkpoint at all.
        if "GLOBAL" not in str(err) and "Unsupported global" not in str(err):
            raise CheckpointError(
                f"{str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})"
            ) from err
        raise CheckpointError(
            f"{str(path)!r} holds more than tensors and plain values (a pickled object or code), "
            "so it is not loaded: kdlightning reads weights only. Save the weights with "
            "torch.save(model.state_dict(), path)."
        ) from err
    except Exception as err:
        raise CheckpointError(
            f"{str(path)!r} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from err
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict of tensors; save one "
            "with torch.save(model.state_dict(), path)."
        )
    state = dict(obj)
    for prefix in _MODULE_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path, role: str = "model") -> nn.Module:
    """Load the weights at ``path`` into ``model`` (strictly) and return ``model``.

    A key or shape mismatch with the chosen architecture raises :class:`CheckpointError`
    listing the missing and unexpected keys and the mismatched shapes.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:

        def show(items: list[str]) -> str:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            return ", ".join(items[:10]) + more

        parts = [f"the {role} checkpoint {str(path)!r} does not fit the configured {role} model:"]
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {show(mismatched)}")
        parts.append(f"choose the {role} config the checkpoint was trained with.")
        raise CheckpointError("\n  ".join(parts))
    model.load_state_dict(state, strict=True)
    return model
