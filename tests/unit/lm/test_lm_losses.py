"""Token-level LM losses: each against an explicit loop over tokens, masking, chunking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdlightning.lm.losses import (
    forward_kl,
    generalized_jsd,
    next_token_ce,
    reverse_kl,
)
from kdlightning.lm.methods import token_method

B, L, V = 3, 7, 11


def lm_divergence(name, beta, temperature=1.0, chunk_size=None):
    """The divergence the job trains with for ``kd=<name>`` (kdlightning.lm.methods)."""
    method = token_method(name, temperature=temperature, alpha=0.5, beta=beta,
                          chunk_size=chunk_size, on_policy=0.0, prompt_tokens=1)  # fmt: skip
    return method.divergence


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, L, V, generator=g) * 2
    t = torch.randn(B, L, V, generator=g) * 2
    y = torch.randint(0, V, (B, L), generator=g)
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0, 0] = True
    return s, t, y, mask


def _loop(fn, s, t, mask, temperature):
    """The reference: one token at a time with plain probabilities, averaged over the mask."""
    total, n = 0.0, 0
    for b in range(B):
        for i in range(L):
            if not mask[b, i]:
                continue
            p_s = torch.softmax(s[b, i].double() / temperature, -1)
            p_t = torch.softmax(t[b, i].double() / temperature, -1)
            total += fn(p_s, p_t).item()
            n += 1
    return total / n * temperature**2


def _kl(p, q):
    return (p * (p.log() - q.log())).sum()


def _jsd(beta):
    def fn(p_s, p_t):
        m = beta * p_t + (1 - beta) * p_s
        return beta * _kl(p_t, m) + (1 - beta) * _kl(p_s, m)

    return fn


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize(
    ("loss", "ref"),
    [
        (forward_kl, lambda p_s, p_t: _kl(p_t, p_s)),
        (reverse_kl, lambda p_s, p_t: _kl(p_s, p_t)),
        (lambda s, t, m, T: generalized_jsd(s, t, m, 0.3, T), _jsd(0.3)),
        (lambda s, t, m, T: generalized_jsd(s, t, m, 0.5, T), _jsd(0.5)),
    ],
    ids=["forward_kl", "reverse_kl", "jsd0.3", "jsd0.5"],
)
def test_divergences_match_a_loop_over_tokens(loss, ref, temperature):
    s, t, _, mask = _data()
    got = loss(s, t, mask, temperature)
    assert got.item() == pytest.approx(_loop(ref, s, t, mask, temperature), rel=1e-5)


def test_jsd_ends_are_forward_and_reverse_kl():
    s, t, _, mask = _data(1)
    assert generalized_jsd(s, t, mask, 0.0) == forward_kl(s, t, mask)
    assert generalized_jsd(s, t, mask, 1.0) == reverse_kl(s, t, mask)


def test_next_token_ce_matches_a_loop():
    s, _, y, mask = _data(2)
    ref = [F.cross_entropy(s[b, i][None], y[b, i][None]).item()
           for b in range(B) for i in range(L) if mask[b, i]]  # fmt: skip
    assert next_token_ce(s, y, mask).item() == pytest.approx(sum(ref) / len(ref), rel=1e-5)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "ce"])
def test_padding_and_prompt_tokens_change_nothing(name):
    """Masked positions may hold anything (even inf); the per-token mean ignores their count."""
    s, t, y, mask = _data(3)

    def loss(s, t, y, m):
        if name == "ce":
            return next_token_ce(s, y, m)
        return lm_divergence(name, 0.5, 2.0)(s, t, m)

    base = loss(s, t, y, mask)
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = 1e4, -1e4  # garbage where the mask is false
    assert torch.isfinite(loss(s2, t2, y, mask))
    assert loss(s2, t2, y, mask).item() == pytest.approx(base.item(), rel=1e-6)
    pad = 5  # more padding at the end of every row: same mean
    s3 = torch.cat([s, torch.randn(B, pad, V)], 1)
    t3 = torch.cat([t, torch.randn(B, pad, V)], 1)
    y3 = torch.cat([y, torch.zeros(B, pad, dtype=torch.long)], 1)
    m3 = torch.cat([mask, torch.zeros(B, pad, dtype=torch.bool)], 1)
    assert loss(s3, t3, y3, m3).item() == pytest.approx(base.item(), rel=1e-6)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd", "ce"])
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_equals_unchunked_values_and_gradients(name, chunk):
    s, t, y, mask = _data(4)

    def value_and_grad(chunk_size):
        x = s.clone().requires_grad_(True)
        if name == "ce":
            out = next_token_ce(x, y, mask, chunk_size=chunk_size)
        else:
            out = lm_divergence(name, 0.4, 1.5, chunk_size)(x, t, mask)
        out.backward()
        return out.detach(), x.grad

    v0, g0 = value_and_grad(None)
    v1, g1 = value_and_grad(chunk)
    torch.testing.assert_close(v1, v0, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g1, g0, rtol=1e-5, atol=1e-7)


def test_all_masked_is_zero_and_identical_is_zero():
    s, t, y, mask = _data(5)
    none = torch.zeros_like(mask)
    assert forward_kl(s, t, none).item() == 0.0
    assert next_token_ce(s, y, none).item() == 0.0
    assert forward_kl(s, s, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert generalized_jsd(s, s, mask, 0.5).item() == pytest.approx(0.0, abs=1e-6)


def test_bad_arguments_name_the_fix():
    s, t, _, mask = _data()
    with pytest.raises(ValueError, match="share the vocabulary"):
        forward_kl(s, t[..., :5], mask)
    with pytest.raises(ValueError, match="beta must lie in"):
        generalized_jsd(s, t, mask, 1.5)
    with pytest.raises(ValueError, match="kd=forward_kl"):
        token_method("dkd")
    with pytest.raises(ValueError, match="mask must be"):
        forward_kl(s, t, mask[:, :3])
    with pytest.raises(ValueError, match="temperature"):
        forward_kl(s, t, mask, temperature=0.0)
    assert math.isfinite(forward_kl(s.half(), t.half(), mask).item())  # computed in float32


# -inf logits: a masked vocabulary entry has probability 0 and contributes 0 (0 * log 0 = 0)


def _live_probs(z, temperature):
    """{entry: probability} over the finite entries of one token's logits (float64, autograd)."""
    live = [k for k in range(z.shape[0]) if math.isfinite(z[k].item())]
    total = sum(torch.exp(z[k] / temperature) for k in live)
    return {k: torch.exp(z[k] / temperature) / total for k in live}


def _kl_live(p, q):
    return sum(p[k] * torch.log(p[k] / q[k]) for k in p)  # q[k] missing: an infinite KL


def _masked_loop(name, s, t, mask, temperature, beta=0.5):
    total, n = 0.0, 0
    for b in range(B):
        for i in range(L):
            if not mask[b, i]:
                continue
            p_s, p_t = _live_probs(s[b, i], temperature), _live_probs(t[b, i], temperature)
            if name == "forward_kl":
                total = total + _kl_live(p_t, p_s)
            elif name == "reverse_kl":
                total = total + _kl_live(p_s, p_t)
            else:
                keys = set(p_s) | set(p_t)
                m = {k: beta * p_t.get(k, 0.0) + (1 - beta) * p_s.get(k, 0.0) for k in keys}
                total = total + beta * _kl_live(p_t, m) + (1 - beta) * _kl_live(p_s, m)
            n += 1
    return total / n * temperature**2


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "jsd"])
def test_masked_vocabulary_entries_match_a_float64_loop(name, temperature, chunk):
    s, t, _, mask = _data(6)
    s, t = s.double(), t.double()
    g = torch.Generator().manual_seed(7)
    teacher_masked = torch.rand(B, L, V, generator=g) < 0.4
    teacher_masked[..., 0] = False  # every token keeps some teacher mass
    if name == "forward_kl":  # the student masked on part of the teacher's masked entries
        student_masked = teacher_masked & (torch.rand(B, L, V, generator=g) < 0.5)
    elif name == "reverse_kl":  # both sides -inf on the same entries: finite, NaN before
        student_masked = teacher_masked
    else:  # JSD is finite whatever is masked, as long as each side keeps some mass
        student_masked = torch.rand(B, L, V, generator=g) < 0.4
        student_masked[..., 1] = False
    t = t.masked_fill(teacher_masked, -math.inf)
    s = s.masked_fill(student_masked, -math.inf)

    s_ref = s.clone().requires_grad_(True)
    expected = _masked_loop(name, s_ref, t, mask, temperature, beta=0.3)
    (grad_ref,) = torch.autograd.grad(expected, s_ref)

    x = s.float().requires_grad_(True)
    got = lm_divergence(name, 0.3, temperature, chunk)(x, t.float(), mask)
    got.backward()
    assert torch.isfinite(got) and torch.isfinite(x.grad).all()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(x.grad.double(), grad_ref, rtol=1e-4, atol=1e-8)
    assert (x.grad[student_masked] == 0).all()


def test_the_issues_example_through_each_token_loss():
    # torchdistill's KDLoss gives 1.2092 for this teacher-student pair at T=1 (one token, so the
    # per-token mean is the KL itself)
    s = torch.tensor([[[0.3, -1.2, 0.8, 0.1]]])
    t = torch.tensor([[[1.0, 0.5, -math.inf, -math.inf]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    assert forward_kl(s, t, mask).item() == pytest.approx(1.2092, abs=5e-5)
    assert math.isfinite(generalized_jsd(s, t, mask, 0.5).item())
    both = t.clone().requires_grad_(True)
    student = torch.tensor([[[0.2, 0.9, -math.inf, -math.inf]]], requires_grad=True)
    value = reverse_kl(student, both, mask)
    value.backward()
    assert math.isfinite(value.item())
    assert torch.isfinite(student.grad).all() and torch.isfinite(both.grad).all()


@pytest.mark.parametrize(("k", "temperature", "chunk"), [(1, 1.0, None), (5, 2.0, 3), (16, 1.0, 4)])
def test_topk_forward_kl_equals_forward_kl_on_the_dense_truncated_teacher(
    k: int, temperature: float, chunk: int | None
) -> None:
    from kdlightning.lm.cached import dense_from_topk
    from kdlightning.lm.losses import topk_forward_kl

    g = torch.Generator().manual_seed(k)
    s = torch.randn(2, 7, 16, generator=g, requires_grad=True)
    top = (3 * torch.randn(2, 7, 16, generator=g)).topk(k, dim=-1)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False  # padding never counts
    sparse = topk_forward_kl(s, top.values, top.indices, mask, temperature, chunk)
    (g_sparse,) = torch.autograd.grad(sparse, s)
    dense = forward_kl(s, dense_from_topk(top.values, top.indices, 16), mask, temperature, chunk)
    (g_dense,) = torch.autograd.grad(dense, s)
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(g_sparse, g_dense, atol=1e-6)
    # written out for one token: q renormalized over the k kept ids, the rest dropped
    q = torch.softmax(top.values[0, 0] / temperature, dim=-1)
    log_p_s = torch.log_softmax(s[0, 0].detach() / temperature, dim=-1)[top.indices[0, 0]]
    one = topk_forward_kl(s[:1, :1].detach(), top.values[:1, :1], top.indices[:1, :1],
                          mask[:1, :1], temperature)  # fmt: skip
    want = temperature**2 * (q * (q.log() - log_p_s)).sum()
    assert one.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
