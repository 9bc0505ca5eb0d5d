"""kdlightning.distill.hooks: outputs of submodules by path, hooks removed after use, helpful
errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlightning.distill.hooks import capture, check_paths, probe_shapes
from kdlightning.models import SmallCNN


def cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(num_classes=10, input_shape=(1, 8, 8), channels=[4, 8], hidden=16).eval()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_capture_returns_exactly_each_modules_output_even_before_an_inplace_relu() -> None:
    model = cnn()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad(), capture(model, ["features.1", "features.2", "pool"]) as found:
        logits = model(x)
    assert set(found) == {"features.1", "features.2", "pool"}
    f = model.features
    with torch.no_grad():
        pre = f[1](f[0](x))  # BatchNorm output, which nn.ReLU(inplace=True) then overwrites
    torch.testing.assert_close(found["features.1"], pre)
    assert (found["features.1"] < 0).any()  # not the ReLU'd tensor: the clone kept it intact
    torch.testing.assert_close(found["features.2"], pre.clamp_min(0))
    torch.testing.assert_close(model.head(found["pool"]), logits)


def test_captured_features_carry_gradients_to_the_model() -> None:
    model = cnn().train()
    with capture(model, ["features.2"]) as found:
        model(torch.randn(4, 1, 8, 8))
    found["features.2"].square().mean().backward()
    assert model.features[0].weight.grad is not None
    assert model.head[1].weight.grad is None  # only what the features depend on


def test_hooks_are_removed_after_the_block_and_after_an_exception() -> None:
    model = cnn()
    with capture(model, ["features.0", "features.0", "head.1"]) as found:
        assert hook_count(model) == 2  # a path listed twice is hooked once
        model(torch.zeros(2, 1, 8, 8))
    assert hook_count(model) == 0 and set(found) == {"features.0", "head.1"}
    with pytest.raises(RuntimeError, match="boom"), capture(model, ["features.3"]):
        raise RuntimeError("boom")
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError), capture(model, ["features.3"]):
        model(torch.zeros(2, 3, 8, 8))  # wrong channel count: the forward itself raises
    assert hook_count(model) == 0


def test_a_bad_path_names_the_closest_ones_and_every_path() -> None:
    with pytest.raises(ValueError) as info:
        check_paths(cnn(), ["features.1", "feature.3"], role="student")
    msg = str(info.value)
    assert "no module 'feature.3'" in msg and "closest: features.3" in msg
    assert "all paths: features, features.0," in msg and "head.3" in msg
    assert "kd.student_layers" in msg


def test_probe_shapes_gives_per_sample_shapes_and_keeps_the_mode() -> None:
    model = cnn().train()
    shapes = probe_shapes(model, ["features.3", "features.7", "pool", "head.1"], (1, 8, 8))
    assert shapes == [(4, 4, 4), (8, 2, 2), (8, 1, 1), (16,)]
    assert model.training


def test_a_module_that_never_runs_or_returns_no_tensor_is_refused() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x.flatten(1))

    with pytest.raises(ValueError, match="unused did not run"):
        probe_shapes(Odd(), ["unused"], (4,))

    class Tuple(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    model = nn.Sequential(Tuple())
    with pytest.raises(TypeError, match="returns tuple, not a tensor"), capture(model, ["0"]):
        model(torch.zeros(1, 2))
