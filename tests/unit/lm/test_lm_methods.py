"""kdlightning.lm.methods: the token-level methods behind kd=forward_kl|reverse_kl|jsd, each a
class its conf/kd file names, checking its own arguments with the job's message form."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from kdlightning.job.config import ConfigError, check_config
from kdlightning.lm.gpt import GPT
from kdlightning.lm.losses import forward_kl, generalized_jsd, reverse_kl
from kdlightning.lm.methods import JSD, ForwardKL, ReverseKL, token_method
from kdlightning.lm.module import LMDistillationModule

ARGS = {"temperature": 2.0, "alpha": 0.3, "chunk_size": 3, "on_policy": 0.0, "prompt_tokens": 4}


def _logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 7, 11, generator=g), torch.randn(2, 7, 11, generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, :2] = False
    return s, t, mask


@pytest.mark.parametrize(
    ("method", "reference"),
    [
        (ForwardKL(**ARGS), forward_kl),
        (ReverseKL(**ARGS), reverse_kl),
        (JSD(beta=0.25, **ARGS), lambda s, t, m, T, c: generalized_jsd(s, t, m, 0.25, T, c)),
    ],
    ids=["forward_kl", "reverse_kl", "jsd"],
)
def test_each_method_is_its_divergence_at_its_settings(method, reference) -> None:
    s, t, mask = _logits()
    expected = reference(s, t, mask, 2.0, None)  # chunking changes nothing but memory
    torch.testing.assert_close(method.divergence(s, t, mask), expected)


def test_only_forward_kl_takes_a_teacher_truncated_to_its_top_k() -> None:
    assert ForwardKL.allows_truncated_teacher
    assert not ReverseKL.allows_truncated_teacher and not JSD.allows_truncated_teacher


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["kd=jsd", "kd.beta=2"], r"kd\.beta=2: beta must lie in \[0, 1\]"),
        (["kd.on_policy=1.5"], r"kd\.on_policy=1\.5 must lie in \[0, 1\]"),
        (["kd.chunk_size=0"], r"kd\.chunk_size=0 must be a positive integer or null"),
        (["kd=reverse_kl", "kd.prompt_tokens=0"], r"kd\.prompt_tokens=0 must be an integer >= 1"),
        (["kd.temperature=-1"], r"kd\.temperature=-1: temperature must be"),
        (["kd=dkd"], None),  # an image method on text data: the text task says so (test_lm_job)
    ],
)
def test_a_bad_value_stops_the_job_at_start_up_naming_it(overrides, message) -> None:
    cfg = compose(["experiment=lm_pydocs", *overrides])
    if message is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_the_module_takes_a_method_or_builds_one_from_its_name() -> None:
    teacher, student = (GPT(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8)
                        for _ in range(2))  # fmt: skip
    built = LMDistillationModule(teacher, student, vocab_size=16, method="jsd", beta=0.3,
                                 temperature=2.0, alpha=0.4, chunk_size=0)  # fmt: skip
    assert isinstance(built.method, JSD) and built.method.beta == 0.3
    assert (built.temperature, built.alpha, built.chunk_size) == (2.0, 0.4, None)
    given = LMDistillationModule(teacher, student, vocab_size=16, method=ReverseKL(**ARGS))
    assert given.method.name == given.hparams["method"] == "reverse_kl"
    assert given.chunk_size == 3 and given.temperature == 2.0
    with pytest.raises(ValueError, match="kd=forward_kl, kd=reverse_kl or kd=jsd"):
        token_method("dkd")
