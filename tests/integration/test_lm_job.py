"""The language-model job end to end (tiny GPTs, a few steps), its module and start-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose, exception_chain, read_json, run_job

from kdlightning.job.tasks.text import check_vocabularies
from kdlightning.lm.gpt import GPT
from kdlightning.lm.module import LMDistillationModule

# Tiny and quick: 12 topics, 32-token blocks, one-layer models, 3 batches per epoch (debug=fast).
TINY = [
    "experiment=lm_pydocs", "data.max_documents=12", "data.block_size=32", "data.batch_size=8",
    "teacher.model.n_layer=1", "teacher.model.n_embd=32", "teacher.model.n_head=2",
    "student.model.n_layer=1", "student.model.n_embd=16", "student.model.n_head=2",
]  # fmt: skip


def test_few_step_job_writes_the_lm_table(tmp_path):
    results, out = run_job(tmp_path, *TINY, "kd=jsd", "kd.temperature=2")
    for role in ("teacher", "baseline", "distilled"):
        r = results[role]
        assert r["val/bpb"] == pytest.approx(r["val/loss"] / 0.6931471805599453, rel=1e-5)
        assert r["test/ppl"] == pytest.approx(torch.tensor(r["test/loss"]).exp().item(), rel=1e-4)
        assert r["tokens_per_s"] > 0 and r["sample"]["continuation"]
    assert results["distilled"]["params"] < results["teacher"]["params"]
    assert results["summary"]["method"] == "jsd"
    table = (out / "comparison.md").read_text()
    assert "test bpb" in table and "distilled student" in table and "Samples" in table
    assert read_json(out / "results.json")["summary"]["temperature"] == 2.0
    student = torch.load(out / "student.pt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in student)
    # the checkpoint callback kept the epoch with the lowest validation loss, not val/acc
    best = torch.load(out / "distilled/checkpoints/best.ckpt", weights_only=True)
    callback = next(v for k, v in best["callbacks"].items() if "ModelCheckpoint" in k)
    assert callback["monitor"] == "val/loss" and not any(
        k.startswith("teacher.") for k in best["state_dict"]
    )
    # another loss, same teacher and student configs: both come from the cache, unchanged
    again, _ = run_job(tmp_path, *TINY, "kd=reverse_kl", name="again")
    assert again["teacher"]["cache"]["hit"] and again["baseline"]["cache"]["hit"]
    assert again["teacher"]["test/bpb"] == pytest.approx(results["teacher"]["test/bpb"])
    assert again["summary"]["method"] == "reverse_kl"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer here
def test_teacher_stays_frozen_and_out_of_the_optimizer():
    torch.manual_seed(0)
    teacher = GPT(256, 16, n_layer=1, n_head=2, n_embd=16, dropout=0.5)
    student = GPT(256, 16, n_layer=1, n_head=2, n_embd=8)
    module = LMDistillationModule(teacher, student, vocab_size=256, method="reverse_kl")
    module.train()
    assert not teacher.training and student.training
    params = {id(p) for g in module.configure_optimizers().param_groups for p in g["params"]}
    assert params == {id(p) for p in student.parameters()}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randint(0, 256, (2, 16))
    loss = module.training_step((x, x, torch.ones_like(x, dtype=torch.bool), torch.arange(2)), 0)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_vocabulary_mismatch_fails_with_a_clear_message():
    class Data:
        vocab_size = 256

    with pytest.raises(ValueError, match="teacher vocabulary 300, student vocabulary 256"):
        check_vocabularies(GPT(300, 8, 1, 1, 8), GPT(256, 8, 1, 1, 8), Data())


def test_vocabulary_mismatch_stops_the_job_before_training(tmp_path):
    pytest.importorskip("transformers")
    config = "{model_type: gpt2, vocab_size: 300, n_layer: 1, n_embd: 8, n_head: 2}"
    student = f"+student.model={{_target_: kdlightning.lm.hf.hf_causal_lm, config: {config}}}"
    with pytest.raises(ValueError, match="student vocabulary 300") as info:
        run_job(tmp_path, *TINY, "~student.model", student)
    assert "same model family" in str(info.value)
    assert not (tmp_path / "job" / "teacher" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([*TINY, "kd=dkd"], "image-classification method"),
        (
            [*TINY, "kd=reverse_kl", "kd.teacher_logits=cached", "kd.teacher_topk=32"],
            "infinite cost",
        ),
        (["kd=forward_kl"], "is not text"),
    ],
    ids=["image-method-on-text", "cached-logits", "lm-method-on-images"],
)
def test_wrong_combinations_stop_at_start_up(tmp_path, overrides, message):
    with pytest.raises(Exception) as info:  # the chain is checked below
        run_job(tmp_path, *overrides)
    assert any(message in str(e) for e in exception_chain(info.value)), info.value
    assert not (tmp_path / "job" / "teacher" / "checkpoints").exists()  # nothing trained


def test_experiment_composes_with_each_lm_loss():
    for name in ("forward_kl", "reverse_kl", "jsd"):
        cfg = compose(["experiment=lm_pydocs", f"kd={name}"])
        assert cfg.kd.method == name and cfg.callbacks.model_checkpoint.mode == "min"
    # FSDP for GPU users: each GPT block (teacher's too) its own shard unit
    fsdp = ["trainer=fsdp", "trainer.strategy={_target_: kdlightning.lm.gpt.fsdp_strategy}"]
    cfg = compose(["experiment=lm_pydocs", *fsdp])
    assert cfg.trainer.strategy._target_ == "kdlightning.lm.gpt.fsdp_strategy"


def test_by_role_report_shows_bits_per_byte_for_lm_runs():
    from kdlightning.report.aggregate import by_role
    from kdlightning.report.collect import SweepJob
    from kdlightning.report.render import seed_table

    def job(seed, alone, kd):
        metrics = {"teacher": {"test/bpb": 2.0, "val/bpb": 2.1, "params": 500},
                   "baseline": {"test/bpb": alone, "val/bpb": alone, "params": 50},
                   "distilled": {"test/bpb": kd, "val/bpb": kd, "params": 50}}  # fmt: skip
        return SweepJob(seed, f"/x/{seed}", [], 1.0, 0.5, seed, "ok", metrics)

    (table,) = by_role([job(0, 3.0, 2.9), job(1, 3.1, 2.95), job(2, 3.0, 3.05)])
    assert table["gain"]["metric"] == "test/bpb" and table["gain"]["wins"] == 2
    assert table["gain"]["mean"] == pytest.approx((0.1 + 0.15 - 0.05) / 3)
    text = seed_table(table)
    assert "test bpb" in text and "better in 2 of 3 seeds" in text and "2.9667 ± " in text


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """The LM job under trainer=ddp on 2 CPU processes (gloo), the progress bar on (debug=fast
    keeps it): every stage's collectives, which once hung with the bar reading a metric on rank
    0 only. ``ddp_fork`` forks this process for each fit/validate/test, so nothing is
    re-imported (the CLI and its DDP re-launch are tested for the image job in
    tests/e2e/test_ddp.py)."""
    ddp = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
           "trainer.precision=32-true", "trainer.strategy=ddp_fork"]  # fmt: skip
    _, out = run_job(tmp_path, *TINY, *ddp, "baseline=false", "logger=none", name="ddp")
    results = read_json(out / "results.json")
    assert results["distilled"]["val/bpb"] > 0 and results["teacher"]["val/bpb"] > 0
    assert results["distilled"]["test/bpb"] > 0
    assert (out / "student.pt").is_file()


def test_hugging_face_teacher_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=256, n_layer=1, n_embd=16, n_head=2, n_positions=32)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "hf_teacher")
    teacher = (
        f"+teacher.model={{_target_: kdlightning.lm.hf.hf_causal_lm, path: {tmp_path}/hf_teacher}}"
    )
    results, _ = run_job(tmp_path, *TINY, "~teacher.model", teacher, "+teacher.pretrained=true")
    assert results["teacher"]["params"] == sum(
        p.numel() for p in transformers.GPT2LMHeadModel(config).parameters()
    )
    assert results["teacher"].get("fit_seconds") is None  # loaded as it is, not trained
    assert results["distilled"]["test/bpb"] > 0


def test_a_context_shorter_than_the_block_fails_at_build_time():
    pytest.importorskip("transformers")
    from omegaconf import OmegaConf

    from kdlightning.job.tasks.text import build_lm

    class Data:
        vocab_size, block_size = 256, 32

    config = {"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 16}
    model_cfg = OmegaConf.create({"_target_": "kdlightning.lm.hf.hf_causal_lm", "config": config})
    with pytest.raises(ValueError, match=r"cannot take a block of 32 tokens.*data\.block_size"):
        build_lm(model_cfg, Data(), "student")


def test_cached_top_k_logits_match_the_online_teacher(tmp_path):
    online, _ = run_job(tmp_path, *TINY, name="online")
    exact, _ = run_job(tmp_path, *TINY, "kd.teacher_logits=cached", "kd.teacher_topk=256",
                       name="exact")  # fmt: skip
    assert exact["teacher"]["cache"]["hit"]  # the same teacher, read back from the cache
    info = exact["distilled"]["teacher_logits"]
    assert info["mode"] == "cached" and info["topk"] == 256
    # stored as safetensors, read memory-mapped (no pickle; one copy of the pages per node)
    entry = Path(info["cache"]["entry"])
    assert [p.name for p in entry.glob("tensors.*")] == ["tensors.safetensors"]
    # every logit kept: the same training as with the teacher run on every batch
    for key in ("val/loss", "val/kd_loss", "test/bpb"):
        assert exact["distilled"][key] == pytest.approx(online["distilled"][key], rel=1e-4)
    top4, _ = run_job(tmp_path, *TINY, "kd.teacher_logits=cached", "kd.teacher_topk=4",
                      name="top4")  # fmt: skip
    assert top4["distilled"]["teacher_logits"]["topk"] == 4
    assert top4["distilled"]["val/kd_loss"] != pytest.approx(online["distilled"]["val/kd_loss"])


def test_on_policy_batches_are_the_students_own_continuations():
    from kdlightning.lm.on_policy import student_batch

    torch.manual_seed(0)
    student = GPT(256, 16, n_layer=1, n_head=2, n_embd=8).train()
    x = torch.randint(0, 256, (3, 16))
    batch = (x, x, torch.ones_like(x, dtype=torch.bool), torch.arange(3))
    gx, gy, mask = student_batch(student, batch, 5, torch.Generator().manual_seed(0))
    assert gx.shape == gy.shape == mask.shape == (3, 16) and student.training
    assert torch.equal(gx[:, :5], x[:, :5]) and torch.equal(gx[:, 1:], gy[:, :-1])
    assert mask[:, 4:].all() and not mask[:, :4].any()  # only generated tokens are scored


def test_on_policy_job_and_its_start_up_check(tmp_path):
    results, out = run_job(tmp_path, *TINY, "kd=reverse_kl", "kd.on_policy=0.5")
    assert results["distilled"]["val/bpb"] > 0
    # some of its 6 steps (seeded draws) trained on the student's samples
    assert "train/on_policy_kd_loss_epoch" in (out / "logs/distilled/metrics.csv").read_text()
    with pytest.raises(ValueError, match="needs the teacher online"):
        run_job(tmp_path, *TINY, "kd.on_policy=0.5", "kd.teacher_logits=cached", name="bad")
