"""Text data: the seeded split by document, blocks and masks, pydocs and local text files."""

from __future__ import annotations

import json

import pytest
import torch

from kdlightning.lm.blocks import PAD_ID, Document, make_blocks, split_documents
from kdlightning.lm.data import PyDocsDataModule, TextFilesDataModule, bits_per_byte


def test_split_by_document_is_seeded_disjoint_and_complete():
    a = split_documents(79, 0.1, 0.1, seed=0)
    assert a == split_documents(79, 0.1, 0.1, seed=0)
    assert a != split_documents(79, 0.1, 0.1, seed=1)
    everything = a["train"] + a["val"] + a["test"]
    assert sorted(everything) == list(range(79))  # complete and disjoint
    assert len(a["val"]) == len(a["test"]) == 8
    with pytest.raises(ValueError, match="at least 3"):
        split_documents(2, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        split_documents(10, 1.5, 0.1, 0)


def test_blocks_shift_pad_and_mask():
    docs = [Document.of(range(1, 8)), Document.of([9, 10])]
    x, y, mask = make_blocks(docs, block_size=4)
    # doc 1 (7 tokens): windows [1..5] and [5..7]+pad; doc 2: [9, 10]+pad
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, 7, PAD_ID], [9, 10, PAD_ID, PAD_ID]]
    assert y.tolist() == [[2, 3, 4, 5], [6, 7, PAD_ID, PAD_ID], [10, PAD_ID, PAD_ID, PAD_ID]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]]
    # every token but each document's first is a scored target exactly once
    assert int(mask.sum()) == (7 - 1) + (2 - 1)


def test_prompt_tokens_are_not_scored():
    doc = Document.prompt_response(b"Q:", b"yes")
    _, y, mask = make_blocks([doc], block_size=8)
    scored = y[mask].tolist()
    assert bytes(scored) == b"yes"  # the prompt is context only


def test_pydocs_split_blocks_and_batches():
    dm = PyDocsDataModule(block_size=32, batch_size=4, seed=0, max_documents=12)
    dm.setup()
    assert dm.vocab_size == 256 and dm.bytes_per_token == 1.0
    texts = {s: {bytes(d.tokens.tolist()) for d in dm.split_docs[s]} for s in dm.split_docs}
    assert not (texts["train"] & texts["val"]) and not (texts["train"] & texts["test"])
    x, y, mask, index = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == mask.shape == (4, 32) and index.shape == (4,)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    again = PyDocsDataModule(block_size=32, batch_size=4, seed=0, max_documents=12)
    again.setup()
    assert torch.equal(next(iter(again.train_dataloader()))[0], x)  # same seed, same order


def test_text_files_txt_and_jsonl_with_prompt_response(tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"document number {i} " * 5)
    rows = [{"prompt": f"Q{i}? ", "response": f"answer {i}."} for i in range(4)]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dm = TextFilesDataModule(paths=[str(tmp_path)], block_size=16, batch_size=2, seed=0,
                             val_fraction=0.2, test_fraction=0.2)  # fmt: skip
    docs = dm.documents()
    assert len(docs) == 7
    qa = [d for d in docs if not d.scored.all()]
    assert len(qa) == 4
    assert bytes(qa[0].tokens[qa[0].scored].tolist()) == b"answer 0."
    dm.setup()
    assert sum(len(dm.split(s)) for s in ("train", "val", "test")) > 0


def test_text_files_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"data\.paths"):
        TextFilesDataModule().documents()
    with pytest.raises(FileNotFoundError, match=r"matches no \.txt"):
        TextFilesDataModule(paths=[str(tmp_path / "nope")]).documents()
    (tmp_path / "bad.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"data\.text_key"):
        TextFilesDataModule(paths=[str(tmp_path / "bad.jsonl")]).documents()


def test_bits_per_byte():
    assert bits_per_byte(torch.log(torch.tensor(2.0)).item(), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / 0.6931471805599453 / 4.0)


def test_text_files_with_a_local_hugging_face_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["alpha", "beta", "gamma", "[UNK]"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )
    for i in range(3):
        (tmp_path / f"d{i}.txt").write_text("alpha beta gamma " * 4)
    dm = TextFilesDataModule(paths=[str(tmp_path / "*.txt")], tokenizer=str(tmp_path / "tok"),
                             block_size=4, batch_size=2)  # fmt: skip
    dm.setup()
    assert dm.vocab_size == 4
    assert dm.documents()[0].tokens[:3].tolist() == [0, 1, 2]
    # decoded "alpha beta gamma ..." joins tokens with spaces: 5 or 4 letters + a space each
    assert 4.0 < dm.bytes_per_token < 7.0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextFilesDataModule(paths=["x.txt"], tokenizer=str(tmp_path / "missing"))
