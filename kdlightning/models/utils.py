"""Sanity checks on models built for a data set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def check_model_output(
    model: nn.Module, num_classes: int, input_shape: Sequence[int], role: str
) -> None:
    """Run one dummy sample through ``model`` and check it yields ``num_classes`` logits.

    Fails with a message naming the role (teacher/student) instead of a shape error deep
    inside the loss. The model's train/eval mode is preserved.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as err:  # any failure here is a model/data mismatch the user must fix
        raise ValueError(
            f"the {role} model cannot take inputs of shape {tuple(input_shape)} from the data "
            f"set: {type(err).__name__}: {err}. Pick a {role} built for this data."
        ) from err
    finally:
        model.train(was_training)
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ValueError(
            f"the {role} model outputs shape {tuple(out.shape)[1:]} per sample but the data set "
            f"has {num_classes} classes; build the {role} with num_classes={num_classes}."
        )
