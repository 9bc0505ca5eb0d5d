"""Models by name from torchvision (always) and timm (optional extra), never downloading.

    torchvision_model("resnet18", num_classes=10, input_shape=(3, 224, 224))
    torchvision_model("resnet18", num_classes=1000, input_shape=(3, 224, 224),
                      weights="IMAGENET1K_V1")   # only if the file is in torch.hub's cache
    timm_model("resnet18", num_classes=10, input_shape=(3, 224, 224))  # kdlightning[timm]

torchvision's models take RGB images: for data with another number of channels (digits,
(Fashion-)MNIST: one), the first convolution that reads the 3 channels is replaced by one that
reads the data's channels, its pretrained weights (if any) summed over RGB for one channel (the
grey image's response equals the RGB image's with R = G = B) or cycled and rescaled for more, as
timm's ``in_chans`` does. timm models get ``in_chans`` directly.

Pretrained weights are loaded only from local files: torchvision's from
``<torch.hub.get_dir()>/checkpoints/<file name of the weights' URL>`` (where torchvision itself
caches them; set ``TORCH_HOME`` to move it), timm's from ``pretrained_file``. When the data set
has another number of classes than the weights, the classifier head is left freshly initialised
(fine-tuning with ``task=classify``); everything else must fit exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from kdlightning.models.weights import CheckpointError

log = logging.getLogger(__name__)


def torchvision_weights_file(name: str, weights: str) -> tuple[Path, Any]:
    """The local cache path of torchvision's ``weights`` for model ``name``, and the enum entry."""
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise ValueError(f"torchvision has no weights for model {name!r}: {err}") from err
    try:
        entry = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except KeyError:
        known = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise ValueError(
            f"unknown torchvision weights {weights!r} for {name!r}; choose one of {known}"
        ) from None
    filename = Path(urlparse(entry.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, entry


def _load_except_head(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` strictly except for shape-mismatched classifier tensors (a new head)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or len(reshaped) > 2:  # a head is one weight and one bias
        raise CheckpointError(
            f"the weights {source} do not fit the model: missing keys {missing[:10]}, "
            f"unexpected keys {unexpected[:10]}, shape mismatches {reshaped[:10]}"
        )
    if reshaped:
        log.warning("%s: new classifier head for this number of classes (%s)", source, reshaped)
    model.load_state_dict({k: v for k, v in state.items() if k not in reshaped}, strict=False)


def adapt_input_channels(model: nn.Module, channels: int, name: str = "the model") -> nn.Module:
    """Make ``model``'s first 3-channel ``Conv2d`` read ``channels`` channels (in place).

    The new layer keeps every setting of the old one; its weights are the old weights summed
    over the RGB channels (one channel) or cycled over them and scaled by 3 / ``channels``, so
    that a pretrained model sees about the same activations. A model without such a layer is
    refused with a ValueError."""
    if channels == 3:
        return model
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3 and child.groups == 1:
                new = nn.Conv2d(
                    channels, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, 1, child.bias is not None, child.padding_mode,
                )  # fmt: skip
                with torch.no_grad():
                    w = child.weight
                    if channels == 1:
                        new.weight.copy_(w.sum(dim=1, keepdim=True))
                    else:
                        reps = -(-channels // 3)
                        new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :channels] * (3 / channels))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, child_name, new)
                return model
    raise ValueError(
        f"{name} takes 3-channel (RGB) images and has no first 3-channel convolution to adapt "
        f"to this data's {channels} channel(s); use a data set with RGB images or a model that "
        "takes any number of channels (student=cnn, student=mlp, timm's in_chans)"
    )


def torchvision_model(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    weights: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``torchvision.models.get_model(name, num_classes=...)``; ``weights`` from the local cache.

    ``input_shape``: its channel count adapts the first convolution when it is not 3
    (:func:`adapt_input_channels`); torchvision's models pool globally, so the image size is
    free (the job checks the output)."""
    if name not in torchvision.models.list_models():
        raise ValueError(
            f"torchvision has no model {name!r}; see torchvision.models.list_models() "
            "(e.g. resnet18, mobilenet_v3_small, efficientnet_b0, vit_b_16)"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=int(num_classes), **kwargs)
    if weights:
        path, _ = torchvision_weights_file(name, weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"torchvision weights {name}.{weights} not found at {str(path)!r}; kdlightning "
                "never downloads. Fetch the file on a machine with network access (e.g. "
                f"torchvision.models.get_model({name!r}, weights={weights!r})) and copy it "
                "there, or pass the file as teacher.checkpoint."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        _load_except_head(model, state, f"{str(path)!r}")
    return adapt_input_channels(model, int(input_shape[0]), f"torchvision's {name}")


def timm_model(
    name: str,
    num_classes: int,
    input_shape: Sequence[int],
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, num_classes=..., in_chans=C)``, pretrained from a local file."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            "timm models need the optional extra: pip install 'kdlightning[timm]'"
        ) from err
    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
    overlay = None
    if pretrained_file:
        if not Path(pretrained_file).expanduser().is_file():
            raise FileNotFoundError(f"timm pretrained_file not found: {pretrained_file!r}")
        overlay = {"file": str(Path(pretrained_file).expanduser())}
    return timm.create_model(
        name,
        pretrained=overlay is not None,
        pretrained_cfg_overlay=overlay,
        num_classes=int(num_classes),
        in_chans=int(input_shape[0]),
        **kwargs,
    )
