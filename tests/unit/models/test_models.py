"""Model factories, the output-shape check, measurements and weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from kdlightning.deploy.measure import count_parameters, latency_ms, measure_model, state_dict_bytes
from kdlightning.models import MLP, SmallCNN, check_model_output
from kdlightning.models.weights import CheckpointError, load_weights, read_state_dict


def test_mlp_shapes_and_parameter_count() -> None:
    m = MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[32])
    assert m(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert count_parameters(m) == 64 * 32 + 32 + 32 * 10 + 10


def test_mlp_options() -> None:
    m = MLP(num_classes=3, input_shape=(2, 5), hidden_sizes=[7, 6], dropout=0.1, batch_norm=True)
    kinds = [type(layer) for layer in m]
    assert kinds.count(nn.BatchNorm1d) == 2 and kinds.count(nn.Dropout) == 2
    assert m(torch.randn(4, 2, 5)).shape == (4, 3)
    with pytest.raises(ValueError, match="hidden_sizes"):
        MLP(num_classes=3, input_shape=(4,), hidden_sizes=[0])


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_small_cnn_on_several_inputs(shape: tuple[int, ...]) -> None:
    m = SmallCNN(num_classes=7, input_shape=shape, channels=[8, 16, 32], hidden=20)
    assert m(torch.randn(2, *shape)).shape == (2, 7)


def test_check_model_output_names_the_role_and_count() -> None:
    model = MLP(num_classes=5, input_shape=(1, 8, 8))
    check_model_output(model, 5, (1, 8, 8), "student")
    with pytest.raises(ValueError, match=r"student.*10 classes.*num_classes=10"):
        check_model_output(model, 10, (1, 8, 8), "student")
    with pytest.raises(ValueError, match=r"teacher model cannot take inputs of shape \(3, 8, 8\)"):
        check_model_output(model, 5, (3, 8, 8), "teacher")
    assert model.training  # mode preserved


def test_measurements() -> None:
    m = MLP(num_classes=10, input_shape=(1, 8, 8), hidden_sizes=[16])
    raw = sum(p.numel() * 4 for p in m.parameters())
    assert raw <= state_dict_bytes(m) < raw + 4096  # tensors plus pickle overhead
    assert latency_ms(m, (1, 8, 8), batch_size=4, warmup=1, repeats=3) > 0
    out = measure_model(m, (1, 8, 8), batch_size=4, warmup=0, repeats=2)
    assert set(out) == {"params", "size_bytes", "latency_ms"}
    assert m.training  # measuring used a copy
    with pytest.raises(ValueError, match="repeats"):
        latency_ms(m, (1, 8, 8), repeats=0)


def small() -> nn.Module:
    return MLP(num_classes=3, input_shape=(4,), hidden_sizes=[5])


def test_load_plain_state_dict_and_lightning_prefixes(tmp_path: Path) -> None:
    src = small()
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "lit.ckpt")  # fmt: skip
    for name in ("plain.pt", "lit.ckpt"):
        dst = load_weights(small(), tmp_path / name, role="teacher")
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v)
    assert set(read_state_dict(tmp_path / "lit.ckpt")) == set(src.state_dict())


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_weights(small(), tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_weights(small(), tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_weights(small(), tmp_path / "list.pt")
    other = MLP(num_classes=4, input_shape=(4,), hidden_sizes=[5, 6])
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as err:
        load_weights(small(), tmp_path / "other.pt", role="teacher")
    msg = str(err.value)
    assert "unexpected keys: 5.bias, 5.weight" in msg
    assert "shape mismatches: 3.bias: checkpoint (6,) vs model (3,)" in msg


class RunsCode:
    """Unpickling it writes a file: what a hostile checkpoint could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.path, "code ran while loading a checkpoint"))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"0.weight": RunsCode(marker)}}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="holds more than tensors and plain values"):
        load_weights(small(), tmp_path / "evil.ckpt", role="teacher")
    assert not marker.exists()
    # a whole pickled module is code as well: only its state dict is accepted
    torch.save(small(), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match=r"torch.save\(model.state_dict\(\), path\)"):
        load_weights(small(), tmp_path / "module.pt")
