"""The model zoo: CIFAR benchmark family (published parameter counts), 1-D CNN, torchvision and
timm by name, pretrained weights from local files only."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision

from kdlightning.deploy.measure import count_parameters
from kdlightning.models import CIFAR_MODELS, CNN1D, cifar_model, timm_model, torchvision_model
from kdlightning.models.hub import adapt_input_channels, torchvision_weights_file
from kdlightning.models.weights import CheckpointError

# Parameter counts on CIFAR-100 in millions, as published for the CIFAR KD benchmark
# (RepDistiller / CRD, Tian et al. 2020, and the tables that reuse its models). The published
# values have two decimals; vgg8 is printed truncated (3,965,028 -> 3.96), so the tolerance is
# one unit of the last published digit.
PUBLISHED_MILLIONS = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "resnet20": 0.28,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "wrn_16_2": 0.70,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_parameter_counts_match_the_published_ones(name: str) -> None:
    model = cifar_model(name, num_classes=100)
    assert abs(count_parameters(model) / 1e6 - PUBLISHED_MILLIONS[name]) <= 0.01 + 1e-9


def test_every_zoo_model_is_listed_and_classifies_cifar_batches() -> None:
    assert set(CIFAR_MODELS) == set(PUBLISHED_MILLIONS)
    x = torch.randn(2, 3, 32, 32)
    for name in ("resnet8x4", "resnet20", "wrn_16_2", "vgg8"):  # one per family, fast
        model = cifar_model(name, num_classes=10, input_shape=(3, 32, 32)).eval()
        assert model(x).shape == (2, 10)
        # a one-channel input shape changes the stem, not the rest
        grey = cifar_model(name, num_classes=7, input_shape=(1, 28, 28)).eval()
        assert grey(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_bad_names_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"unknown CIFAR model 'resnet9'.*resnet20"):
        cifar_model("resnet9", num_classes=10)
    with pytest.raises(ValueError, match=r"image input_shape"):
        cifar_model("resnet20", num_classes=10, input_shape=(1, 40))
    with pytest.raises(ValueError, match=r"\(channels, length\)"):
        CNN1D(num_classes=10, input_shape=(1, 28, 28))


def test_cnn1d_on_mnist1d_shapes() -> None:
    model = CNN1D(num_classes=10, input_shape=(1, 40), channels=[8, 8, 8]).eval()
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_torchvision_by_name_with_the_right_classes() -> None:
    model = torchvision_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    assert model.fc.out_features == 10
    with pytest.raises(ValueError, match=r"no model 'resnet_nope'"):
        torchvision_model("resnet_nope", num_classes=10, input_shape=(3, 32, 32))


def test_torchvision_weights_are_never_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"never downloads"):
        torchvision_model("resnet18", num_classes=1000, input_shape=(3, 64, 64), weights="DEFAULT")
    with pytest.raises(ValueError, match=r"unknown torchvision weights 'NOPE'"):
        torchvision_model("resnet18", num_classes=1000, input_shape=(3, 64, 64), weights="NOPE")


def test_torchvision_weights_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, _ = torchvision_weights_file("resnet18", "IMAGENET1K_V1")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    source = torchvision.models.resnet18(num_classes=1000)  # stands in for the real file
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    same = torchvision_model("resnet18", 1000, (3, 64, 64), weights="IMAGENET1K_V1")
    for k, v in source.state_dict().items():
        assert torch.equal(same.state_dict()[k], v), k
    # another number of classes: everything but the fresh head comes from the file
    ten = torchvision_model("resnet18", 10, (3, 64, 64), weights="IMAGENET1K_V1")
    assert ten.fc.out_features == 10
    assert torch.equal(ten.conv1.weight, source.conv1.weight)
    # a file of another architecture is refused with the keys named
    torch.save(torchvision.models.resnet34(num_classes=1000).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['layer1.2"):
        torchvision_model("resnet18", 1000, (3, 64, 64), weights="IMAGENET1K_V1")


def test_timm_by_name_and_local_pretrained_file(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    model = timm_model("resnet18", num_classes=10, input_shape=(1, 32, 32))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    source = timm.create_model("resnet18", num_classes=1000)
    weights = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), weights)
    loaded = timm_model("resnet18", 10, (3, 32, 32), pretrained_file=str(weights))
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    assert loaded.fc.out_features == 10
    with pytest.raises(FileNotFoundError, match=r"pretrained_file not found"):
        timm_model("resnet18", 10, (3, 32, 32), pretrained_file=str(tmp_path / "none.pth"))
    with pytest.raises(ValueError, match=r"timm has no model"):
        timm_model("no_such_net", 10, (3, 32, 32))


def test_torchvision_models_adapt_their_first_layer_to_one_channel_data() -> None:
    """teacher=torchvision / student=torchvision on digits (1x8x8): the first convolution
    reads one channel instead of failing with "expected input[2, 1, 8, 8] to have 3 channels"."""
    torch.manual_seed(0)
    rgb = torchvision_model("resnet18", num_classes=10, input_shape=(3, 32, 32))
    for name in ("resnet18", "mobilenet_v3_small"):
        model = torchvision_model(name, num_classes=10, input_shape=(1, 8, 8)).eval()
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # pretrained-style weights are summed over RGB: a grey image gives the RGB model's answer
    grey = adapt_input_channels(copy.deepcopy(rgb), 1).eval()
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(grey(x), rgb.eval()(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=0)
    two = adapt_input_channels(copy.deepcopy(rgb), 2)
    assert two.conv1.in_channels == 2 and two.conv1.stride == rgb.conv1.stride
    with pytest.raises(ValueError, match="no first 3-channel convolution to adapt"):
        adapt_input_channels(torch.nn.Linear(3, 2), 1, "a linear model")
