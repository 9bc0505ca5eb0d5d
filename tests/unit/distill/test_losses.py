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


# ---------------------------------------------------------------------------------------------
# -inf logits (a masked class): the true, finite loss and gradient
# ---------------------------------------------------------------------------------------------

INF = math.inf


def test_masked_teacher_classes_match_torchdistill_figure() -> None:
    # torchdistill's KDLoss (alpha=None) returns nn.KLDivLoss(reduction="batchmean")(
    # log_softmax(s/T), softmax(t/T)): no T^2 factor. Here T=1 (T^2 = 1) and the batch holds one
    # sample (batchmean = the sum over classes), so its 1.2092 is directly our kd_loss's value.
    s = torch.tensor([[0.3, -1.2, 0.8, 0.1]], requires_grad=True)
    t = torch.tensor([[1.0, 0.5, -INF, -INF]])
    got = kd_loss(s, t, temperature=1.0)
    assert got.item() == pytest.approx(1.2092, abs=5e-5)
    # by hand: only classes 0 and 1 have teacher mass
    p_s = [math.exp(v) / sum(math.exp(u) for u in (0.3, -1.2, 0.8, 0.1)) for v in (0.3, -1.2)]
    q_t = [math.exp(v) / (math.exp(1.0) + math.exp(0.5)) for v in (1.0, 0.5)]
    exact = math.fsum(q * math.log(q / p) for q, p in zip(q_t, p_s, strict=True))
    assert got.item() == pytest.approx(exact, rel=1e-6)  # 1.209248...
    got.backward()
    assert torch.isfinite(s.grad).all()
    # At another T, ours is torchdistill's soft loss times T^2 (batchmean in both).
    theirs = torch.nn.KLDivLoss(reduction="batchmean")(
        torch.log_softmax(s.detach() / 4.0, dim=1), torch.softmax(t / 4.0, dim=1)
    )
    assert kd_loss(s.detach(), t, 4.0).item() == pytest.approx(16.0 * theirs.item(), rel=1e-6)


def _masked_kd_reference(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over rows of sum_k p_t[k] * log(p_t[k] / p_s[k]), float64, one row and one
    class at a time; a -inf logit is left out of its softmax and a class with p_t = 0 out of
    the sum."""
    rows = []
    for i in range(s.shape[0]):
        live_s = [k for k in range(s.shape[1]) if math.isfinite(s[i, k].item())]
        live_t = [k for k in range(t.shape[1]) if math.isfinite(t[i, k].item())]
        z_s = sum(torch.exp(s[i, k] / temperature) for k in live_s)
        z_t = sum(torch.exp(t[i, k] / temperature) for k in live_t)
        terms = []
        for k in live_t:
            p_t = torch.exp(t[i, k] / temperature) / z_t
            p_s = torch.exp(s[i, k] / temperature) / z_s  # k must be live for the student too
            terms.append(p_t * torch.log(p_t / p_s))
        rows.append(sum(terms))
    return temperature**2 * sum(rows) / len(rows)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_masked_classes_match_a_float64_loop_values_and_gradients(temperature: float) -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    t = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    teacher_masked = torch.zeros(5, 7, dtype=torch.bool)
    teacher_masked[0, [2, 5]] = True
    teacher_masked[1, 0] = True
    teacher_masked[3, [1, 2, 3, 4, 6]] = True  # two classes left
    both_masked = torch.zeros(5, 7, dtype=torch.bool)
    both_masked[1, 0] = True  # masked for the student too: 0 * log(0 / 0) = 0
    both_masked[3, 6] = True
    t = t.masked_fill(teacher_masked, -INF)
    s = s.masked_fill(both_masked, -INF)

    s_ref = s.clone().requires_grad_(True)
    expected = _masked_kd_reference(s_ref, t, temperature)
    (grad_ref,) = torch.autograd.grad(expected, s_ref)

    s32 = s.float().requires_grad_(True)
    got = kd_loss(s32, t.float(), temperature)
    got.backward()
    assert torch.isfinite(got) and torch.isfinite(s32.grad).all()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(s32.grad.double(), grad_ref, rtol=1e-4, atol=1e-7)
    # the masked student classes get no gradient; the unmasked ones T * (p_s - p_t) / N
    assert (s32.grad[both_masked] == 0).all()


def test_masked_classes_change_nothing_else() -> None:
    # A teacher class at -inf is the limit of a very negative logit: same loss as -1e4.
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    t_inf, t_low = t.clone(), t.clone()
    t_inf[:, 0], t_low[:, 0] = -INF, -1e4
    assert kd_loss(s, t_inf, 2.0).item() == pytest.approx(kd_loss(s, t_low, 2.0).item(), rel=1e-6)
    # a student at -inf where the teacher has mass: the KL really is infinite
    s_inf = s.clone()
    s_inf[0, 1] = -INF
    assert kd_loss(s_inf, t, 2.0).item() == INF
