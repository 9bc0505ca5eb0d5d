"""The functional losses of other KD methods (DKD, DIST, logit standardization, FitNets, AT,
RKD, PKT, CRD) against explicit float64 re-computations written as Python loops over samples,
classes, pairs and triplets, from the papers' definitions (not from the vectorized code)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kdlightning.distill.functional import (
    attention_loss,
    crd_loss,
    dist_loss,
    dkd_loss,
    dkd_warmup,
    hint_loss,
    kd_loss,
    nce_loss,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    standardize_logits,
)

REL = 1e-4  # float32 function vs float64 reference


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(seed: int, *shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed)) * scale


# ---------------------------------------------------------------------------------------------
# float64 references: plain Python on lists
# ---------------------------------------------------------------------------------------------


def _softmax(row: list[float], temperature: float) -> list[float]:
    z = [v / temperature for v in row]
    m = max(z)
    ex = [math.exp(v - m) for v in z]
    total = math.fsum(ex)
    return [v / total for v in ex]


def _kl(p: list[float], q: list[float]) -> float:
    return math.fsum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = _mean(a), _mean(b)
    cov = math.fsum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = math.fsum((x - ma) ** 2 for x in a)
    vb = math.fsum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def _norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def _sub(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def ref_dkd(s: Tensor, t: Tensor, y: Tensor, alpha: float, beta: float, temp: float) -> float:
    """Probability space, as the paper writes it: b = (p_y, 1 - p_y), p̂_k = p_k / (1 - p_y)."""
    tckd, nckd = [], []
    rows = zip(s.double().tolist(), t.double().tolist(), y.tolist(), strict=True)
    for s_row, t_row, target in rows:
        ps, pt = _softmax(s_row, temp), _softmax(t_row, temp)
        bs, bt = [ps[target], 1.0 - ps[target]], [pt[target], 1.0 - pt[target]]
        tckd.append(_kl(bt, bs))
        others = [k for k in range(len(s_row)) if k != target]
        hat_s = [ps[k] / (1.0 - ps[target]) for k in others]
        hat_t = [pt[k] / (1.0 - pt[target]) for k in others]
        nckd.append(_kl(hat_t, hat_s))
    return temp**2 * (alpha * _mean(tckd) + beta * _mean(nckd))


def ref_dist(s: Tensor, t: Tensor, beta: float, gamma: float, temp: float) -> float:
    ys = [_softmax(row, temp) for row in s.double().tolist()]
    yt = [_softmax(row, temp) for row in t.double().tolist()]
    n, c = len(ys), len(ys[0])
    inter = 1.0 - _mean([_pearson(ys[i], yt[i]) for i in range(n)])
    if gamma == 0:
        return temp**2 * beta * inter
    columns = [
        _pearson([ys[i][k] for i in range(n)], [yt[i][k] for i in range(n)]) for k in range(c)
    ]
    intra = 1.0 - _mean(columns)
    return temp**2 * (beta * inter + gamma * intra)


def ref_standardize(x: Tensor, eps: float, correction: int = 0) -> list[list[float]]:
    out = []
    for row in x.double().tolist():
        m = _mean(row)
        std = math.sqrt(math.fsum((v - m) ** 2 for v in row) / (len(row) - correction))
        out.append([(v - m) / (std + eps) for v in row])
    return out


def ref_attention(fs: Tensor, ft: Tensor, p: float) -> float:
    def attention_maps(f: Tensor) -> list[list[float]]:
        maps = []
        for sample in f.double().tolist():  # sample: [channel][h][w]
            channels = len(sample)
            flat = [
                math.fsum(abs(sample[c][h][w]) ** p for c in range(channels)) / channels
                for h in range(len(sample[0]))
                for w in range(len(sample[0][0]))
            ]
            norm = _norm(flat)
            maps.append([v / norm for v in flat])
        return maps

    qs, qt = attention_maps(fs), attention_maps(ft)
    total = math.fsum(
        (a - b) ** 2 for q_s, q_t in zip(qs, qt, strict=True) for a, b in zip(q_s, q_t, strict=True)
    )
    return total / (len(qs) * len(qs[0]))


def ref_rkd_distance(s: Tensor, t: Tensor) -> float:
    def psi(e: list[list[float]]) -> list[float]:
        d = [_norm(_sub(e[i], e[j])) for i in range(len(e)) for j in range(len(e)) if i != j]
        mu = _mean(d)
        return [v / mu for v in d]

    ps = psi(s.double().reshape(len(s), -1).tolist())
    pt = psi(t.double().reshape(len(t), -1).tolist())
    return _mean([_huber(a - b) for a, b in zip(ps, pt, strict=True)])


def ref_rkd_angle(s: Tensor, t: Tensor) -> float:
    def cosines(e: list[list[float]]) -> list[float]:
        out = []
        n = len(e)
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    if len({i, j, k}) < 3:
                        continue
                    u, v = _sub(e[i], e[j]), _sub(e[k], e[j])
                    out.append(_dot(u, v) / (_norm(u) * _norm(v)))
        return out

    cs = cosines(s.double().reshape(len(s), -1).tolist())
    ct = cosines(t.double().reshape(len(t), -1).tolist())
    return _mean([_huber(a - b) for a, b in zip(cs, ct, strict=True)])


def ref_pkt(s: Tensor, t: Tensor, eps: float) -> float:
    def probs(e: list[list[float]]) -> list[list[float]]:
        unit = [[x / (_norm(v) + eps) for x in v] for v in e]
        rows = []
        for i in range(len(e)):
            k = [(_dot(unit[i], unit[j]) + 1.0) / 2.0 for j in range(len(e))]
            total = math.fsum(k)
            rows.append([v / total for v in k])
        return rows

    ps = probs(s.double().reshape(len(s), -1).tolist())
    pt = probs(t.double().reshape(len(t), -1).tolist())
    n = len(ps)
    return (
        math.fsum(
            pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps))
            for i in range(n)
            for j in range(n)
        )
        / n**2
    )


# ---------------------------------------------------------------------------------------------
# Against the references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "beta", "temp"), [(1.0, 8.0, 4.0), (0.5, 0.5, 1.0), (2.0, 0.0, 2.0)]
)
def test_dkd_matches_reference(alpha: float, beta: float, temp: float) -> None:
    s, t = _randn(0, 6, 5, scale=3.0), _randn(1, 6, 5, scale=3.0)
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    got = dkd_loss(s, t, y, alpha=alpha, beta=beta, temperature=temp)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(ref_dkd(s, t, y, alpha, beta, temp), rel=REL)


def test_dkd_defaults_are_the_papers_cifar_setting() -> None:
    s, t = _randn(2, 4, 7), _randn(3, 4, 7)
    y = torch.tensor([6, 0, 3, 3])
    assert dkd_loss(s, t, y).item() == pytest.approx(ref_dkd(s, t, y, 1.0, 8.0, 4.0), rel=REL)


def test_dkd_one_sample_reassembles_kd() -> None:
    # The paper's decomposition: KD = TCKD + (1 - p_t[y]) * NCKD. With one sample (a batch of
    # one is defined for DKD), beta = 1 - p_t[y] turns DKD back into kd_loss.
    s, t, y = _randn(4, 1, 6, scale=2.0), _randn(5, 1, 6, scale=2.0), torch.tensor([2])
    temp = 3.0
    p_target = _softmax(t.double()[0].tolist(), temp)[2]
    got = dkd_loss(s, t, y, alpha=1.0, beta=1.0 - p_target, temperature=temp)
    assert got.item() == pytest.approx(kd_loss(s, t, temp).item(), rel=REL)
    assert got.item() == pytest.approx(ref_dkd(s, t, y, 1.0, 1.0 - p_target, temp), rel=REL)


def test_dkd_with_a_dominant_class() -> None:
    s, t = _randn(6, 4, 5), _randn(7, 4, 5)
    y = torch.tensor([1, 1, 0, 4])
    t[:, 1] += 12.0  # teacher confident in class 1 (p ~ 0.95 at T=4): the reference stays exact
    got = dkd_loss(s, t, y).item()
    assert got == pytest.approx(ref_dkd(s, t, y, 1.0, 8.0, 4.0), rel=REL)

    # p_y == 1 in float32 for both (logit 1e4): log(1 - p_y) comes from a log-sum-exp, so the
    # loss and its gradient stay finite (log of the masked probabilities would give -inf / NaN).
    s = s.clone().requires_grad_(True)
    big_s = s + F.one_hot(y, 5) * 1e4
    big_t = t + F.one_hot(y, 5) * 1e4
    loss = dkd_loss(big_s, big_t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    # Equal target logits dominate both: TCKD ~ 0, NCKD is that of the non-target logits, which
    # the offset does not touch.
    nckd_only = dkd_loss(s.detach(), t, y, alpha=0.0, beta=8.0).item()
    assert loss.item() == pytest.approx(nckd_only, rel=REL)


def test_dkd_with_masked_teacher_classes_is_finite_and_exact() -> None:
    # -inf teacher logits on non-target classes (masked classes): probability 0, contribution 0
    s, t = _randn(30, 4, 6), _randn(31, 4, 6)
    y = torch.tensor([0, 2, 5, 1])
    t[0, [3, 4]] = -math.inf
    t[2, 0] = -math.inf
    s = s.clone().requires_grad_(True)
    loss = dkd_loss(s, t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx(ref_dkd(s.detach(), t, y, 1.0, 8.0, 4.0), rel=REL)


def test_dkd_flattens_leading_dimensions() -> None:
    s, t = _randn(8, 2, 3, 4), _randn(9, 2, 3, 4)
    y = torch.tensor([[0, 1, 2], [3, 0, 1]])
    flat = dkd_loss(s.reshape(6, 4), t.reshape(6, 4), y.reshape(6))
    assert dkd_loss(s, t, y).item() == pytest.approx(flat.item(), rel=1e-6)


def test_dkd_warmup_is_linear_then_one() -> None:
    assert dkd_warmup(0) == 0.0
    assert dkd_warmup(1) == pytest.approx(1 / 20)
    assert dkd_warmup(10) == pytest.approx(0.5)
    assert dkd_warmup(20) == 1.0 and dkd_warmup(240) == 1.0
    assert dkd_warmup(2.5, warmup_epochs=5) == pytest.approx(0.5)
    assert dkd_warmup(0, warmup_epochs=0) == 1.0
    assert isinstance(dkd_warmup(3), float)


@pytest.mark.parametrize(
    ("beta", "gamma", "temp"), [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (1.0, 0.0, 2.0)]
)
def test_dist_matches_reference(beta: float, gamma: float, temp: float) -> None:
    s, t = _randn(10, 7, 5, scale=2.0), _randn(11, 7, 5, scale=2.0)
    got = dist_loss(s, t, beta=beta, gamma=gamma, temperature=temp)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(ref_dist(s, t, beta, gamma, temp), rel=REL)


def test_dist_with_a_dominant_class() -> None:
    # One sample's class 3 saturates (p == 1 in float32): its row is one-hot, and class 3's
    # column still varies across the batch, so every correlation stays defined.
    s, t = _randn(12, 5, 6), _randn(13, 5, 6)
    s[0, 3] += 60.0
    t[0, 3] += 60.0
    got = dist_loss(s, t).item()
    assert math.isfinite(got)
    assert got == pytest.approx(ref_dist(s, t, 1.0, 1.0, 1.0), rel=REL)


def test_dist_one_sample_needs_gamma_zero() -> None:
    s, t = _randn(14, 1, 5), _randn(15, 1, 5)
    got = dist_loss(s, t, gamma=0.0)
    assert got.item() == pytest.approx(ref_dist(s, t, 1.0, 0.0, 1.0), rel=REL)
    with pytest.raises(ValueError, match=r"student_logits.*at least 2 samples"):
        dist_loss(s, t)


@pytest.mark.parametrize("correction", [0, 1])
def test_standardize_logits_matches_reference(correction: int) -> None:
    x = _randn(17, 4, 6, scale=5.0) + 3.0
    got = standardize_logits(x, correction=correction)
    assert got.dtype == torch.float32 and got.shape == x.shape
    expected = torch.tensor(ref_standardize(x, 1e-7, correction), dtype=torch.float64)
    torch.testing.assert_close(got.double(), expected, rtol=REL, atol=1e-6)
    # z-scores: zero mean, unit std (with the same correction) per sample
    torch.testing.assert_close(got.mean(-1), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(got.std(-1, correction=correction), torch.ones(4), atol=1e-5, rtol=0)


def _authors_normalize(logit: Tensor) -> Tensor:
    """The logit-standardization authors' ``normalize`` (and torchdistill's LogitStdKDLoss's
    ``standardize``): ``torch.std``'s default, Bessel's correction."""
    mean = logit.mean(dim=-1, keepdim=True)
    return (logit - mean) / (1e-7 + logit.std(dim=-1, keepdim=True))


@pytest.mark.parametrize("num_classes", [2, 10])
def test_standardize_default_is_the_authors_bessel_std(num_classes: int) -> None:
    s = _randn(40, 256, num_classes, scale=3.0)
    t = _randn(41, 256, num_classes, scale=3.0)
    default = kd_loss(standardize_logits(s), standardize_logits(t), 2.0)
    authors = kd_loss(_authors_normalize(s), _authors_normalize(t), 2.0)
    assert default.item() == pytest.approx(authors.item(), rel=1e-5)
    torch.testing.assert_close(standardize_logits(s), standardize_logits(s, correction=1))
    # correction=0 (population std; the default before issue 19) stays available: z-scores
    # sqrt(K / (K - 1)) times larger, a lower effective temperature, a larger loss
    k = num_classes
    torch.testing.assert_close(
        standardize_logits(s, correction=0),
        standardize_logits(s) * math.sqrt(k / (k - 1)),
        rtol=1e-5,
        atol=1e-6,
    )
    population = kd_loss(
        standardize_logits(s, correction=0), standardize_logits(t, correction=0), 2.0
    )
    ratio = population.item() / default.item()
    # measured: 1.92 with 2 classes (the loss nearly doubles), 1.11 with 10 (11% larger);
    # about K / (K - 1), the squared rescale, when the KL is small
    expected = {2: 1.92, 10: 1.11}[k]
    assert ratio == pytest.approx(expected, abs=0.03)


def test_standardized_kd_ignores_logit_scale_and_shift() -> None:
    # The paper's motivation: after the Z-score, a student with the teacher's logit relations
    # but another range and offset matches it exactly.
    t = _randn(18, 5, 10, scale=4.0)
    s = 0.25 * t - 7.0
    assert kd_loss(s, t, 2.0).item() > 0.1
    z_s, z_t = standardize_logits(s), standardize_logits(t)
    assert kd_loss(z_s, z_t, temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)
    y = torch.tensor([0, 1, 2, 3, 4])
    assert dkd_loss(z_s, z_t, y, temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)


def test_standardize_constant_logits_are_zero_with_finite_gradient() -> None:
    x = torch.full((2, 5), 3.0, requires_grad=True)
    z = standardize_logits(x)
    torch.testing.assert_close(z, torch.zeros(2, 5))
    kd_loss(z, torch.randn(2, 5), 2.0).backward()
    assert torch.isfinite(x.grad).all()


def test_hint_loss_matches_reference() -> None:
    s, t = _randn(19, 3, 4, 2, 2), _randn(20, 3, 4, 2, 2)
    flat_s, flat_t = s.double().flatten().tolist(), t.double().flatten().tolist()
    expected = _mean([(a - b) ** 2 for a, b in zip(flat_s, flat_t, strict=True)])
    got = hint_loss(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_attention_loss_matches_reference(p: float) -> None:
    # Channels differ (6 vs 3): attention maps are channel-aggregated, only HW must match.
    fs, ft = _randn(21, 3, 6, 4, 5), _randn(22, 3, 3, 4, 5)
    got = attention_loss(fs, ft, p=p)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(ref_attention(fs, ft, p), rel=REL)


def test_attention_loss_default_is_p2() -> None:
    fs, ft = _randn(23, 2, 4, 3, 3), _randn(24, 2, 4, 3, 3)
    assert attention_loss(fs, ft).item() == pytest.approx(ref_attention(fs, ft, 2.0), rel=REL)


def test_rkd_distance_matches_reference() -> None:
    s, t = _randn(25, 6, 4), _randn(26, 6, 9)  # dims differ: relations only
    got = rkd_distance_loss(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_rkd_distance(s, t), rel=REL)


def test_rkd_distance_huber_linear_regime_and_scale_invariance() -> None:
    s = _randn(27, 5, 3)
    t = _randn(28, 5, 3)
    t[0] += 40.0  # a teacher outlier: normalized distance differences beyond Huber's delta = 1
    ref = ref_rkd_distance(s, t)
    assert rkd_distance_loss(s, t).item() == pytest.approx(ref, rel=REL)
    # distances are normalized by their mean: scaling either embedding changes nothing
    assert rkd_distance_loss(10.0 * s, 0.1 * t).item() == pytest.approx(ref, rel=REL)


def test_rkd_angle_matches_reference() -> None:
    s, t = _randn(29, 5, 2, 2), _randn(30, 5, 7)  # (batch, ...) flattened; dims differ
    got = rkd_angle_loss(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_rkd_angle(s, t), rel=REL)


def test_rkd_three_samples_is_the_smallest_angle_batch() -> None:
    s, t = _randn(31, 3, 4), _randn(32, 3, 5)
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref_rkd_angle(s, t), rel=REL)
    s2, t2 = s[:2], t[:2]
    assert rkd_distance_loss(s2, t2).item() == pytest.approx(0.0, abs=1e-7)  # one pair: psi = 1
    with pytest.raises(ValueError, match=r"student_emb.*at least 3 samples"):
        rkd_angle_loss(s2, t2)
    with pytest.raises(ValueError, match=r"student_emb.*at least 2 samples"):
        rkd_distance_loss(s[:1], t[:1])


@pytest.mark.parametrize("eps", [1e-7, 1e-3])
def test_pkt_matches_reference(eps: float) -> None:
    s, t = _randn(33, 6, 5), _randn(34, 6, 3, 2)
    got = pkt_loss(s, t, eps=eps)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_pkt(s, t, eps), rel=REL)


def test_pkt_batch_of_one_is_zero() -> None:
    assert pkt_loss(_randn(35, 1, 4), _randn(36, 1, 8)).item() == pytest.approx(0.0, abs=1e-7)


def ref_crd(
    s: Tensor, t: Tensor, s_bank: Tensor, t_bank: Tensor, index: Tensor, temp: float,
    z: tuple[float, float] | None, eps: float = 1e-7,
) -> tuple[float, float, float]:  # fmt: skip
    """CRD from the paper's eq. 18 (RepDistiller's ContrastLoss), a sample and a row at a time:
    each anchor against the other side's bank rows ``index[i]`` (its own first), ``P = exp(<row,
    anchor> / T) / Z``, ``-[log P_0 / (P_0 + K/N) + sum_k log (K/N) / (P_k + K/N)]`` averaged
    over the batch, the student's and the teacher's terms added; ``Z = N * mean exp`` when not
    given; ``N`` the banks' rows."""
    sides = ((s.double().tolist(), t_bank.double().tolist()),
             (t.double().tolist(), s_bank.double().tolist()))  # fmt: skip
    rows = index.tolist()
    total, zs = 0.0, []
    for side, (anchors, bank) in enumerate(sides):
        b, k, n = len(anchors), len(rows[0]) - 1, len(bank)
        scores = [[math.exp(_dot(bank[j], anchors[i]) / temp) for j in rows[i]] for i in range(b)]
        zs.append(z[side] if z else n * _mean([v for r in scores for v in r]))
        noise, terms = k / n, []
        for i in range(b):
            p = [v / zs[side] for v in scores[i]]
            negatives = math.fsum(math.log(noise / (pk + noise + eps)) for pk in p[1:])
            terms.append(math.log(p[0] / (p[0] + noise + eps)) + negatives)
        total += -math.fsum(terms) / b
    return total, zs[0], zs[1]


def _crd_inputs(seed: int, b: int = 5, k: int = 4, d: int = 3, n: int = 20) -> tuple[Tensor, ...]:
    s, t = F.normalize(_randn(seed, b, d), dim=1), F.normalize(_randn(seed + 1, b, d), dim=1)
    s_bank = F.normalize(_randn(seed + 2, n, d), dim=1)
    t_bank = F.normalize(_randn(seed + 3, n, d), dim=1)
    index = torch.randint(0, n, (b, k + 1), generator=_gen(seed + 4))
    return s, t, s_bank, t_bank, index


@pytest.mark.parametrize(("temp", "z"), [(0.07, (30.0, 45.0)), (0.5, (9.0, 11.0)), (0.07, None)])
def test_crd_matches_reference(temp: float, z: tuple[float, float] | None) -> None:
    inputs = _crd_inputs(60)
    out = crd_loss(*inputs, temp, None if z is None else torch.tensor(z))
    want, z_s, z_t = ref_crd(*inputs, temp, z)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(want, rel=REL)
    assert out.normalizers.tolist() == pytest.approx([z_s, z_t], rel=REL)


def test_crd_estimates_only_the_normalizers_not_yet_set() -> None:
    inputs = _crd_inputs(61)
    _, z_s, _ = ref_crd(*inputs, 0.1, None)
    out = crd_loss(*inputs, 0.1, torch.tensor([-1.0, 7.0]))
    assert out.normalizers.tolist() == pytest.approx([z_s, 7.0], rel=REL)
    assert out.loss.item() == pytest.approx(ref_crd(*inputs, 0.1, (z_s, 7.0))[0], rel=REL)


def test_crd_gradient_reaches_the_embeddings_not_the_banks() -> None:
    s, t, s_bank, t_bank, index = _crd_inputs(62)
    s, t, s_bank, t_bank = (x.requires_grad_(True) for x in (s, t, s_bank, t_bank))
    out = crd_loss(s, t, s_bank, t_bank, index, 0.07)
    out.loss.backward()
    assert not out.normalizers.requires_grad
    for x in (s, t):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert s_bank.grad is None and t_bank.grad is None


def test_nce_loss_rewards_a_positive_that_stands_out() -> None:
    flat = torch.full((4, 9), 0.01)
    peaked = flat.clone()
    peaked[:, 0] = 10.0  # the positive pair far more probable than noise
    assert nce_loss(peaked, 100).item() < nce_loss(flat, 100).item()


# ---------------------------------------------------------------------------------------------
# Properties shared by every loss
# ---------------------------------------------------------------------------------------------

Y8 = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])

# name -> (loss of (student, teacher), student shape, teacher shape)
LOSSES: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], tuple[int, ...], tuple[int, ...]]] = {
    "dkd": (lambda s, t: dkd_loss(s, t, Y8), (8, 6), (8, 6)),
    "dist": (lambda s, t: dist_loss(s, t, temperature=4.0), (8, 6), (8, 6)),
    "standardized_kd": (
        lambda s, t: kd_loss(standardize_logits(s), standardize_logits(t), 2.0),
        (8, 6),
        (8, 6),
    ),
    "hint": (hint_loss, (8, 4, 3, 3), (8, 4, 3, 3)),
    "attention": (attention_loss, (8, 4, 3, 3), (8, 5, 3, 3)),
    "rkd_distance": (rkd_distance_loss, (8, 6), (8, 10)),
    "rkd_angle": (rkd_angle_loss, (8, 6), (8, 10)),
    "pkt": (pkt_loss, (8, 6), (8, 10)),
}
# crd_loss takes bank rows besides the two embeddings: its reference test above, its own checks
# below.


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_identical_student_and_teacher_give_zero(name: str) -> None:
    loss, shape, _ = LOSSES[name]
    x = _randn(40, *shape, scale=2.0)
    # DIST's correlations divide by |a| |b| + 1e-8: 1 - |a|^2 / (|a|^2 + 1e-8) per vector, times
    # T^2 = 16, with centered softened probabilities of norm ~0.1 at T = 4: ~1e-5, not 0.
    tolerance = 1e-4 if name == "dist" else 1e-7
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=tolerance)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_reaches_the_student_only(name: str) -> None:
    loss, s_shape, t_shape = LOSSES[name]
    s = _randn(41, *s_shape).requires_grad_(True)
    t = _randn(42, *t_shape).requires_grad_(True)
    value = loss(s, t.detach())
    value.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bfloat16_inputs_are_computed_in_float32(name: str) -> None:
    loss, s_shape, t_shape = LOSSES[name]
    s, t = _randn(43, *s_shape), _randn(44, *t_shape)
    low = loss(s.bfloat16(), t.bfloat16())
    assert low.dtype == torch.float32
    # only the rounding of the inputs differs: float32 math on the rounded inputs
    ref = loss(s.bfloat16().float(), t.bfloat16().float())
    assert low.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: hint_loss(_randn(0, 1, 3), _randn(1, 1, 3)),
        lambda: attention_loss(_randn(0, 1, 2, 3, 3), _randn(1, 1, 4, 3, 3)),
        lambda: dkd_loss(_randn(0, 1, 4), _randn(1, 1, 4), torch.tensor([3])),
        lambda: standardize_logits(_randn(0, 1, 4)),
    ],
    ids=["hint", "attention", "dkd", "standardize"],
)
def test_a_batch_of_one_is_defined(call: Callable[[], Tensor]) -> None:
    assert torch.isfinite(call()).all()


# ---------------------------------------------------------------------------------------------
# Bad arguments raise ValueErrors that name them
# ---------------------------------------------------------------------------------------------

S, T = _randn(0, 4, 5), _randn(1, 4, 5)
Y = torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: dkd_loss(S, _randn(1, 4, 6), Y), r"student_logits.*\(4, 5\).*\(4, 6\)"),
        (lambda: dkd_loss(S[:, :1], T[:, :1], Y), r"student_logits.*at least 2 classes"),
        (lambda: dkd_loss(S[0], T[0], Y[:1]), r"student_logits must be \(batch, classes\)"),
        (lambda: dkd_loss(S, T, Y[:3]), r"targets.*one class index per sample \(4\)"),
        (lambda: dkd_loss(S, T, Y.float()), r"targets.*integer"),
        (lambda: dkd_loss(S, T, torch.tensor([0, 1, 5, 2])), r"targets must lie in \[0, 5\)"),
        (lambda: dkd_loss(S, T, torch.tensor([0, -1, 2, 2])), r"targets must lie in"),
        (lambda: dkd_loss(S, T, Y, alpha=-1.0), r"alpha"),
        (lambda: dkd_loss(S, T, Y, beta=float("nan")), r"beta"),
        (lambda: dkd_loss(S, T, Y, temperature=0.0), r"temperature"),
        (lambda: dkd_warmup(-1), r"epoch"),
        (lambda: dkd_warmup(3, warmup_epochs=-5), r"warmup_epochs"),
        (lambda: dist_loss(S, T[:3]), r"student_logits.*teacher_logits"),
        (lambda: dist_loss(S, T, gamma=-0.5), r"gamma"),
        (lambda: dist_loss(S, T, beta=float("inf")), r"beta"),
        (lambda: dist_loss(S, T, temperature=-2.0), r"temperature"),
        (lambda: standardize_logits(S[:, :1]), r"logits.*at least 2 classes"),
        (lambda: standardize_logits(S, eps=-1.0), r"eps"),
        (lambda: hint_loss(_randn(0, 4, 8), _randn(1, 4, 6)), r"student_features.*connector"),
        (lambda: attention_loss(S, T), r"student_features must be \(batch, channels"),
        (
            lambda: attention_loss(_randn(0, 2, 3, 4, 4), _randn(1, 2, 3, 8, 8)),
            r"spatial size.*interpolate",
        ),
        (
            lambda: attention_loss(_randn(0, 2, 3, 4, 4), _randn(1, 3, 3, 4, 4)),
            r"student_features and teacher_features.*batch size",
        ),
        (lambda: attention_loss(_randn(0, 2, 3, 4, 4), _randn(1, 2, 3, 4, 4), p=0), r"\bp must"),
        (lambda: rkd_distance_loss(S, T[:3]), r"student_emb and teacher_emb.*batch size"),
        (lambda: rkd_angle_loss(S, T[:3]), r"student_emb and teacher_emb.*batch size"),
        (lambda: pkt_loss(S, T[:3]), r"student_emb and teacher_emb.*batch size"),
        (lambda: pkt_loss(S, T, eps=-1e-7), r"eps"),
        (lambda: pkt_loss(S[:, :0], T), r"student_emb has an empty embedding"),
        (
            lambda: crd_loss(*_crd_inputs(0)[:2], *_crd_inputs(0, d=4)[2:], 0.07),
            r"student_emb must be \(batch, d\).*\(5, 3\).*\(20, 4\)",
        ),
        (lambda: crd_loss(*_crd_inputs(0), 0.0), r"temperature must be > 0"),
        (lambda: crd_loss(*_crd_inputs(0, k=0), 0.07), r"probs.*K >= 1 negatives"),
        (lambda: crd_loss(*_crd_inputs(0, n=1), 0.07), r"num_data must be >= 2"),
        (
            lambda: crd_loss(*_crd_inputs(0)[:4], torch.zeros(3, 5, dtype=torch.long), 0.07),
            r"contrast_index must be \(batch, 1 \+ K\)",
        ),
    ],
)
def test_bad_arguments_raise_naming_them(call: Callable[[], Tensor], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_existing_kd_loss_is_unchanged_by_the_additions() -> None:
    # Sanity: the module's original API still computes Hinton's KD.
    s, t = _randn(50, 3, 4), _randn(51, 3, 4)
    p_t, log_p_s = F.softmax(t / 2.0, 1), F.log_softmax(s / 2.0, 1)
    expected = 4.0 * (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dkd_checks_its_targets_without_a_host_sync_off_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Off the CPU the range check is a device-side assert (no host sync per training step): run
    # it on "meta" tensors, which have a device but no values a host check could read.
    from kdlightning.distill import functional

    asserted: list[str] = []
    monkeypatch.setattr(functional.torch, "_assert_async", lambda c, msg="": asserted.append(msg))
    meta = torch.device("meta")
    s, t = torch.randn(4, 5, device=meta), torch.randn(4, 5, device=meta)
    loss = functional.dkd_loss(s, t, torch.zeros(4, dtype=torch.long, device=meta), 1.0, 1.0, 4.0)
    assert loss.device.type == "meta" and len(asserted) == 1
    # on the CPU: an ordinary error naming the range
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 5\)"):
        functional.dkd_loss(torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 9]))
