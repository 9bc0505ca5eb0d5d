"""kdlightning.distill.functional against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdlightning.distill.functional import distillation_loss, distillation_terms, kd_loss


def test_kd_loss_at_t1_is_plain_kl_by_hand() -> None:
    s = torch.tensor([[0.0, 0.0]])  # p_s = (1/2, 1/2)
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_scales_softened_kl_by_t_squared() -> None:
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 4.0]])
    temperature = 4.0
    p_t = F.softmax(t / temperature, dim=1)
    p_s = F.softmax(s / temperature, dim=1)
    per_sample = (p_t * (p_t.log() - p_s.log())).sum(dim=1)  # sum over classes
    expected = temperature**2 * per_sample.mean()  # mean over samples
    assert kd_loss(s, t, temperature).item() == pytest.approx(expected.item(), rel=1e-5)


def test_identical_logits_give_zero() -> None:
    x = torch.randn(16, 7)
    assert kd_loss(x, x.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_cross_entropy_and_alpha_one_is_kd() -> None:
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = F.cross_entropy(s, y)
    assert distillation_loss(s, t, y, 4.0, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert distillation_loss(s, t, y, 4.0, 1.0).item() == pytest.approx(
        kd_loss(s, t, 4.0).item(), rel=1e-6
    )
    mixed = distillation_loss(s, t, y, 4.0, 0.25).item()
    assert mixed == pytest.approx(0.25 * kd_loss(s, t, 4.0).item() + 0.75 * ce.item(), rel=1e-6)


def test_terms_are_consistent() -> None:
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    terms = distillation_terms(s, t, y, 2.0, 0.7)
    assert terms.loss.ndim == 0
    assert terms.loss.item() == pytest.approx(0.7 * terms.kd.item() + 0.3 * terms.ce.item())


def test_student_gradient_is_t_times_prob_difference_over_n() -> None:
    torch.manual_seed(1)
    n, temperature = 6, 3.0
    s = torch.randn(n, 4, requires_grad=True)
    t = torch.randn(n, 4)
    kd_loss(s, t, temperature).backward()
    expected = temperature * (F.softmax(s / temperature, 1) - F.softmax(t / temperature, 1)) / n
    torch.testing.assert_close(s.grad, expected.detach(), rtol=1e-5, atol=1e-7)


def test_no_gradient_flows_into_a_detached_teacher() -> None:
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t.detach(), 2.0).backward()
    assert t.grad is None and s.grad is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    torch.manual_seed(2)
    s, t = torch.randn(32, 10), torch.randn(32, 10)
    y = torch.randint(0, 10, (32,))
    low = distillation_loss(s.to(dtype), t.to(dtype), y, 4.0, 0.9)
    assert low.dtype == torch.float32
    # Only the rounding of the inputs differs: float32 math on the rounded inputs.
    ref = distillation_loss(s.to(dtype).float(), t.to(dtype).float(), y, 4.0, 0.9)
    assert low.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises_naming_it(bad: float) -> None:
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, s, bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_alpha_raises_naming_it(bad: float) -> None:
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"alpha.*" + str(bad).replace(".", r"\.")):
        distillation_loss(s, s, torch.tensor([0, 1]), 2.0, bad)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4), 2.0)
