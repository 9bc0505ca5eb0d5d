"""Hugging Face models and data sets by name (teacher=hf, student=hf, data=hf_text), end to end:
a tiny random-weight Llama-style teacher and GPT-2-style student, a tokenizer and data sets
built here and saved to disk (nothing is downloaded), distilled; vocabulary and dtype checks."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import exception_chain, run_job

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

WORDS = ["the", "cat", "dog", "fox", "bird", "sees", "eats", "likes", "chases", "a", "red",
         "small", "quick", "lazy", "old"]  # fmt: skip


def _documents(n: int, seed: int = 0) -> list[str]:
    """Sentences from a tiny grammar: word order a model can learn in a few steps."""
    rng = random.Random(seed)
    nouns, verbs, adjs = WORDS[1:5], WORDS[5:9], WORDS[10:15]
    out = []
    for _ in range(n):
        sentences = [
            f"the {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)}."
            for _ in range(rng.randint(3, 6))
        ]
        out.append(" ".join(sentences))
    return out


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A byte-level BPE tokenizer trained on the documents, a Llama-style teacher (with the
    tokenizer in its folder), a GPT-2-style student, another student with 8 more tokens, the
    documents as a saved data set and as a JSONL file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("hf")
    docs = _documents(120)
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # every byte: no text is out of vocabulary
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet)
    raw.train_from_iterator(docs, trainer)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=raw)
    vocab = len(tok)
    transformers.set_seed(0)  # the random weights, hence the figures the docs quote, repeat
    teacher = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))  # fmt: skip
    teacher.save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    for name, size in (("gpt2", vocab), ("gpt2_wide_vocab", vocab + 8)):
        config = transformers.GPT2Config(vocab_size=size, n_layer=2, n_embd=16, n_head=2,
                                         n_positions=64)  # fmt: skip
        transformers.GPT2LMHeadModel(config).save_pretrained(root / name)
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(root / "saved"))
    lines = [f'{{"prompt": "q{i}:", "response": "{d}"}}' for i, d in enumerate(docs[:20])]
    (root / "qa.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "llama": root / "llama", "gpt2": root / "gpt2",
            "wide": root / "gpt2_wide_vocab", "saved": root / "saved", "jsonl": root / "qa.jsonl",
            "vocab": vocab}  # fmt: skip


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _overrides(files: dict[str, Path]) -> list[str]:
    return [
        "experiment=lm_pydocs", "data=hf_text", f"data.path={files['saved']}",
        "data.block_size=32", "data.batch_size=8",
        "teacher=hf", f"teacher.model.name_or_path={files['llama']}",
        "student=hf", f"student.model.name_or_path={files['gpt2']}",
    ]  # fmt: skip


@pytest.mark.slow
def test_llama_teacher_distilled_into_gpt2_student_end_to_end(hf_files, tmp_path, capsys):
    """About 20 distillation steps; the student's bits per token fall from its random start."""
    import csv
    import time

    from kdlightning.deploy.evaluate import evaluate_run, lm_loss, lm_metrics
    from kdlightning.lm.hf import hf_causal_lm
    from kdlightning.lm.hf_data import HFTextDataModule

    start = time.perf_counter()
    results, out = run_job(
        tmp_path, *_overrides(hf_files), "teacher.pretrained=false", "baseline=false",
        "trainer.max_epochs=2", "trainer.limit_train_batches=10", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0",  # as kdl-eval scores
    )  # fmt: skip
    seconds = time.perf_counter() - start
    teacher, distilled = results["teacher"], results["distilled"]
    # the tokenizer is the teacher's (data.tokenizer defaulted to teacher.model.name_or_path)
    dm = HFTextDataModule(path=str(hf_files["saved"]), tokenizer=str(hf_files["llama"]),
                          block_size=32, batch_size=8)  # fmt: skip
    dm.setup()
    assert dm.vocab_size == hf_files["vocab"] and dm.bytes_per_token > 1.5  # BPE merges bytes
    before = hf_causal_lm(dm.vocab_size, 32, name_or_path=str(hf_files["gpt2"])).eval()
    before_bpt = lm_metrics(lm_loss(before, dm.test_dataloader()), dm.bytes_per_token, "test")
    steps = [
        float(row["train/loss_step"])
        for row in csv.DictReader((out / "logs/distilled/metrics.csv").open())
        if row.get("train/loss_step")
    ]
    assert len(steps) == 20 and sum(steps[-5:]) / 5 < sum(steps[:5]) / 5  # the loss falls
    assert distilled["test/bpt"] < before_bpt["test/bpt"]
    assert distilled["test/bpt"] == pytest.approx(distilled["test/loss"] / 0.6931471805599453)
    assert distilled["test/bpb"] == pytest.approx(distilled["test/bpt"] / dm.bytes_per_token,
                                                  rel=1e-4)  # fmt: skip
    assert teacher["params"] > 2 * distilled["params"]
    table = (out / "comparison.md").read_text()
    assert "test bits/token" in table and "distilled student" in table
    # kdl-eval rebuilds the student from the run (its folder, then student.pt) and agrees
    again = evaluate_run(out)
    assert again["test/bpt"] == pytest.approx(distilled["test/bpt"], rel=1e-5)
    with capsys.disabled():
        print(f"\nHF end to end ({seconds:.1f} s): teacher LlamaForCausalLM "
              f"{teacher['params']:,} params, test {teacher['test/bpt']:.3f} bits/token; "
              f"student GPT2LMHeadModel {distilled['params']:,} params, test bits/token "
              f"{before_bpt['test/bpt']:.3f} before -> {distilled['test/bpt']:.3f} after "
              f"distillation; train loss {steps[0]:.3f} -> {steps[-1]:.3f} over "
              f"{len(steps)} steps")  # fmt: skip


def test_a_student_with_another_vocabulary_is_refused(hf_files, tmp_path):
    overrides = [*_overrides(hf_files), f"student.model.name_or_path={hf_files['wide']}"]
    with pytest.raises(ValueError, match="same model family") as info:
        run_job(tmp_path, *overrides)
    vocab = hf_files["vocab"]
    assert f"teacher vocabulary {vocab}, student vocabulary {vocab + 8}" in str(info.value)
    assert not (tmp_path / "job" / "teacher" / "checkpoints").exists()  # nothing trained


def test_bad_dtype_and_missing_folder_stop_at_start_up(hf_files, tmp_path):
    with pytest.raises(Exception) as info:
        run_job(tmp_path, *_overrides(hf_files), "student.model.dtype=fp8", name="dtype")
    assert any("student.model.dtype='fp8' is not a dtype" in str(e)
               for e in exception_chain(info.value))  # fmt: skip
    with pytest.raises(Exception) as info:
        run_job(tmp_path, *_overrides(hf_files),
                f"student.model.name_or_path={tmp_path}/nothing", name="missing")  # fmt: skip
    assert any("is not a folder; give a local folder written by save_pretrained" in str(e)
               for e in exception_chain(info.value))  # fmt: skip


def test_from_scratch_student_takes_the_family_config_with_changes(hf_files):
    from kdlightning.lm.hf import hf_causal_lm

    one = hf_causal_lm(10, 32, name_or_path=str(hf_files["gpt2"]), config={"n_layer": 1},
                       dtype="bfloat16")  # fmt: skip
    assert one.model.config.n_layer == 1 and one.vocab_size == hf_files["vocab"]
    assert (
        next(one.parameters()).dtype.is_floating_point
        and str(next(one.parameters()).dtype) == "torch.bfloat16"
    )
    with pytest.raises(ValueError, match="n_layers is not a setting of"):
        hf_causal_lm(10, 32, name_or_path=str(hf_files["gpt2"]), config={"n_layers": 1})


def test_data_by_name_from_local_files_with_prompts_and_a_cache_dir(hf_files, tmp_path):
    from kdlightning.lm.hf_data import HFTextDataModule

    dm = HFTextDataModule(name="json", data_files=str(hf_files["jsonl"]),
                          cache_dir=str(tmp_path / "cache"), tokenizer=str(hf_files["llama"]),
                          block_size=16, batch_size=4, max_documents=12)  # fmt: skip
    docs = dm.documents()
    assert len(docs) == 12 and all(d.scored.any() and not d.scored.all() for d in docs)
    assert (tmp_path / "cache").is_dir() and dm.fingerprint()["files"] >= 1
    with pytest.raises(ValueError, match=r"exactly one of data\.name"):
        HFTextDataModule(name="json", path=str(hf_files["saved"]))
    with pytest.raises(ValueError, match=r"exactly one of data\.name.*name=None, path=None"):
        HFTextDataModule().documents()
    dm = HFTextDataModule(path=str(hf_files["saved"]), text_key="body")
    with pytest.raises(ValueError, match=r"set data\.text_key"):
        dm.documents()


def test_fsdp_shards_each_decoder_layer_of_either_family(hf_files):
    from kdlightning.lm.hf import fsdp_strategy, hf_causal_lm, is_layer

    for name, layer in (("llama", "LlamaDecoderLayer"), ("gpt2", "GPT2Block")):
        model = hf_causal_lm(10, 32, name_or_path=str(hf_files[name]))
        units = {type(m).__name__ for m in model.modules() if is_layer(m)}
        assert units == {layer}, name
    strategy = fsdp_strategy()  # constructed only: FSDP itself needs GPUs
    assert type(strategy).__name__ == "FSDPStrategy"


def test_the_cache_key_covers_what_the_model_folder_holds(hf_files, tmp_path):
    import shutil

    from conftest import compose

    from kdlightning.job.cache import cache_key

    folder = tmp_path / "teacher"
    shutil.copytree(hf_files["llama"], folder)
    cfg = compose([*_overrides(hf_files), f"teacher.model.name_or_path={folder}"])
    before = cache_key(cfg, "teacher")
    assert cache_key(cfg, "teacher") == before
    (folder / "config.json").write_text((folder / "config.json").read_text() + "\n")
    assert cache_key(cfg, "teacher") != before  # new files under the same path: a miss
