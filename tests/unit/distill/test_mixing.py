"""kd.mix: function matching on mixed images (kdlightning.distill.mixing, DistillationModule),
and its start-up checks (kd.mix with cached teacher logits is refused)."""

from __future__ import annotations

import pytest
import torch
from conftest import compose
from torch import nn

from kdlightning import DistillationModule
from kdlightning.distill.functional import kd_loss
from kdlightning.distill.mixing import check_mix, cutmix, mix_batch, mixup
from kdlightning.job.config import ConfigError, check_config


def test_mixup_is_the_convex_combination_per_image() -> None:
    x = torch.randn(4, 1, 3, 3)
    lam, perm = torch.tensor([1.0, 0.0, 0.25, 0.5]), torch.tensor([1, 2, 3, 0])
    out = mixup(x, lam, perm)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[2])
    assert torch.allclose(out[2], 0.25 * x[2] + 0.75 * x[3])
    assert torch.allclose(out[3], 0.5 * x[3] + 0.5 * x[0])


def test_cutmix_pastes_a_box_of_the_partner_image() -> None:
    x = torch.zeros(2, 1, 8, 8)
    x[1] = 1.0
    perm = torch.tensor([1, 0])
    # lam 0.75: a box of side sqrt(0.25) * 8 = 4 around the center (0.5, 0.5): rows/cols 2..5
    out = cutmix(x, torch.tensor([0.75, 1.0]), perm, torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1.0
    assert torch.equal(out[0, 0], expected)
    assert torch.equal(out[1], x[1])  # lam 1: nothing pasted
    # a box centered at a corner is clipped there: a quarter of it remains
    corner = cutmix(x, torch.tensor([0.75, 1.0]), perm, torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert int(corner[0].sum()) == 4 and torch.equal(corner[0, 0, :2, :2], torch.ones(2, 2))


def test_mix_batch_draws_per_image_from_its_generator() -> None:
    x = torch.randn(64, 1, 6, 6)
    for mode in ("mixup", "cutmix"):
        a = mix_batch(x, mode, 1.0, torch.Generator().manual_seed(1))
        b = mix_batch(x, mode, 1.0, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and not torch.equal(a, x)
    cut = mix_batch(x, "cutmix", 1.0, torch.Generator().manual_seed(2))
    # every pixel of a cutmix image is the image's own or another image's pixel at that place
    from_some = (cut[:, None] == x[None]).any(1)
    assert bool(from_some.all())
    assert torch.equal(mix_batch(x, "none"), x)
    with pytest.raises(ValueError, match=r"kd\.mix=cutmix pastes boxes"):
        mix_batch(torch.randn(4, 10), "cutmix")


def test_bad_mix_settings_are_refused_with_the_fix() -> None:
    assert check_mix(None) == ("none", 1.0)
    with pytest.raises(ValueError, match=r"kd.mix='mixupp' is not a mixing mode; use one of"):
        check_mix("mixupp")
    for bad in (0, -1.0, "x", float("inf"), True):
        with pytest.raises(ValueError, match=r"kd\.mix_alpha="):
            check_mix("mixup", bad)


class Recorder(nn.Module):
    """A linear model that keeps the inputs of its last forward."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.net(x)


# the step is called outside a Trainer: its self.log calls warn that none is attached
@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_mixed_step_teaches_on_the_mixed_images_with_the_kd_term_only() -> None:
    teacher, student = Recorder(0), Recorder(1)
    module = DistillationModule(teacher, student, temperature=2.0, alpha=0.7, mix="mixup")
    module.mix_generator.manual_seed(5)
    x, y = torch.randn(8, 1, 4, 4), torch.randint(0, 3, (8,))
    loss = module.training_step((x, y, torch.arange(8)), 0)
    expected_x = mix_batch(x, "mixup", 1.0, torch.Generator().manual_seed(5))
    # the teacher and the student saw the same mixed batch, not the served one
    assert torch.equal(teacher.seen, expected_x) and torch.equal(student.seen, expected_x)
    with torch.no_grad():
        t = teacher.net(expected_x)
    s = student.net(expected_x)
    # no label on a mixed image: alpha * T^2 KL alone, no cross-entropy term
    assert torch.allclose(loss, 0.7 * kd_loss(s, t, 2.0))


def test_mix_with_cached_teacher_logits_is_refused() -> None:
    with pytest.raises(ValueError, match=r"kd.mix=cutmix needs the teacher's outputs"):
        DistillationModule(Recorder(0), Recorder(1), mix="cutmix",
                           teacher_logits={"train": torch.zeros(8, 3)})  # fmt: skip
    # ... and at start-up, before any stage trains
    with pytest.raises(ConfigError, match=r"kd.mix=mixup with kd.teacher_logits=cached"):
        check_config(compose(["kd.mix=mixup", "kd.teacher_logits=cached"]))
    with pytest.raises(ConfigError, match=r"kd.mix='blend' is not a mixing mode"):
        check_config(compose(["kd=dkd", "kd.mix=blend"]))
    check_config(compose(["kd=dist", "kd.mix=cutmix"]))  # online (auto): accepted
