"""Intermediate outputs of a model by module path, through forward hooks (no model code changes).

    from kdlightning.distill.hooks import capture, check_paths
    check_paths(model, ["features.3"], role="student")        # ValueError naming near paths
    with capture(model, ["features.3", "pool"]) as feats:
        logits = model(x)
    feats["features.3"]   # that module's output during the forward above

A path is what ``model.named_modules()`` lists (``features.3``, ``layer2.0.bn1``). The hooks
exist only inside the ``with`` block: they are removed on exit, also when the forward raises.

Each captured output is **cloned**: a module whose output a later module changes in place
(``nn.ReLU(inplace=True)`` after a BatchNorm or Linear, as in SmallCNN and MLP) would otherwise
hand over the modified tensor. With the clone, a path always yields exactly what that module
returned (for SmallCNN: ``features.1`` is the BatchNorm output *before* the ReLU, ``features.2``
the activation after it). The clone is differentiable, so features still carry gradients.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["capture", "check_paths", "probe_shapes"]


def _output_tensor(path: str, output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    raise TypeError(
        f"the module at {path!r} returns {type(output).__name__}, not a tensor; hook one of its "
        "submodules that returns a tensor instead"
    )


def check_paths(model: nn.Module, paths: Sequence[str], role: str = "model") -> None:
    """Raise ``ValueError`` for the first path that names no submodule of ``model``.

    The message lists the closest valid paths and every path the model has, so a typo or a
    layer index from another architecture is fixed from the message alone.
    """
    names = [name for name, _ in model.named_modules() if name]
    for path in paths:
        if path in names:
            continue
        near = difflib.get_close_matches(str(path), names, n=5, cutoff=0.4)
        hint = f"closest: {', '.join(near)}; " if near else ""
        raise ValueError(
            f"the {role} ({type(model).__name__}) has no module {path!r} ({hint}all paths: "
            f"{', '.join(names)}). Set kd.{role}_layers to paths from this list."
        )


@contextmanager
def capture(model: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of ``model``'s submodules at ``paths`` while the block runs.

    Yields a dict filled by the forward passes inside the block (the last call of a module wins;
    a module that did not run is absent). Paths must exist: call :func:`check_paths` first for a
    message naming the valid ones (here a bad path raises PyTorch's ``AttributeError``).
    """
    found: dict[str, Tensor] = {}
    handles = []
    try:
        for path in dict.fromkeys(paths):  # a path listed twice is hooked once

            def hook(_module: nn.Module, _inputs: object, output: object, path: str = path) -> None:
                # clone: a later in-place op (ReLU(inplace=True)) must not change what we keep
                found[path] = _output_tensor(path, output).clone()

            handles.append(model.get_submodule(path).register_forward_hook(hook))
        yield found
    finally:
        for handle in handles:
            handle.remove()


def probe_shapes(
    model: nn.Module, paths: Sequence[str], input_shape: Sequence[int], role: str = "model"
) -> list[tuple[int, ...]]:
    """Per-sample output shapes at ``paths`` from one dummy forward (2 zero samples, eval mode,
    no gradient); the model's train/eval mode is restored. Checks the paths first."""
    check_paths(model, paths, role)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, paths) as found:
            model(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
    missing = [p for p in paths if p not in found]
    if missing:
        raise ValueError(
            f"the {role}'s modules {', '.join(missing)} did not run in a forward pass (defined "
            f"but unused by {type(model).__name__}.forward); choose modules that run"
        )
    return [tuple(found[p].shape[1:]) for p in paths]
