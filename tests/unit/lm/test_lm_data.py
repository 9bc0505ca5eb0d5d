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
    # block_size 8: the test split (one answer, 13 tokens) must hold a block
    dm = TextFilesDataModule(paths=[str(tmp_path)], block_size=8, batch_size=2, seed=0,
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


# Text a user will have: other encodings, broken JSONL lines, lines that are not objects


def _three_docs(folder, name="doc"):
    for i in range(3):
        (folder / f"{name}{i}.txt").write_text(f"document number {i} " * 5, encoding="utf-8")


def test_a_latin1_txt_names_the_file_the_line_and_data_encoding(tmp_path):
    _three_docs(tmp_path)
    bad = tmp_path / "notes.txt"
    bad.write_bytes("first line\nsecond: café crème\n".encode("latin-1"))
    dm = TextFilesDataModule(paths=[str(tmp_path)])
    with pytest.raises(ValueError) as err:
        dm.documents()
    message = str(err.value)
    assert str(bad) in message and "line 2" in message and "0xe9" in message
    assert "data.encoding=" in message
    assert not isinstance(err.value, UnicodeDecodeError) and err.value.__cause__ is None
    # the fix works: read as latin-1, the text is the same characters (UTF-8 bytes for tokens)
    docs = TextFilesDataModule(paths=[str(bad)], encoding="latin-1").documents()
    assert bytes(docs[0].tokens.tolist()).decode("utf-8") == "first line\nsecond: café crème\n"


def test_a_latin1_jsonl_names_the_line_and_both_fixes(tmp_path):
    rows = [{"text": "plain ascii"}, {"text": "naïve résumé"}]
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode("latin-1") + b"\n"
    )
    with pytest.raises(ValueError) as err:
        TextFilesDataModule(paths=[str(path)]).documents()
    message = str(err.value)
    assert f"{path}, line 2" in message
    assert "data.encoding=" in message and "data.skip_bad_lines=true" in message
    docs = TextFilesDataModule(paths=[str(path)], encoding="latin-1").documents()
    assert [bytes(d.tokens.tolist()).decode() for d in docs] == ["plain ascii", "naïve résumé"]


def test_an_invalid_jsonl_line_stops_or_is_skipped_and_counted(tmp_path, caplog):
    lines = ['{"text": "one"}', '{"text": "two",}', "", '{"text": "three"}', "not json at all"]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        TextFilesDataModule(paths=[str(path)]).documents()
    message = str(err.value)
    assert f"{path}, line 2 is not valid JSON" in message
    assert "data.skip_bad_lines=true" in message
    assert not isinstance(err.value, json.JSONDecodeError)

    with caplog.at_level("WARNING", logger="kdlightning.lm.data"):
        docs = TextFilesDataModule(paths=[str(path)], skip_bad_lines=True).documents()
    assert [bytes(d.tokens.tolist()).decode() for d in docs] == ["one", "three"]
    warning = caplog.text
    assert "skipped 2 bad line(s) of 4" in warning and str(path) in warning
    # a file where nothing survives is a mistake (wrong encoding or keys), not data to skip
    (tmp_path / "all_bad.jsonl").write_text("nope\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"every line of .*all_bad\.jsonl is bad \(2 line"):
        TextFilesDataModule(
            paths=[str(tmp_path / "all_bad.jsonl")], skip_bad_lines=True
        ).documents()


def test_skip_bad_lines_also_skips_lines_that_do_not_decode(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "good"}\n{"text": "caf\xe9"}\n{"text": "also good"}\n')
    with caplog.at_level("WARNING", logger="kdlightning.lm.data"):
        docs = TextFilesDataModule(paths=[str(path)], skip_bad_lines=True).documents()
    assert len(docs) == 2 and "skipped 1 bad line(s) of 3" in caplog.text


def test_jsonl_lines_that_are_not_objects_name_the_expected_fields(tmp_path):
    path = tmp_path / "strings.jsonl"
    path.write_text('"just a string"\n"another"\n', encoding="utf-8")
    with pytest.raises(ValueError) as err:
        TextFilesDataModule(paths=[str(path)]).documents()
    message = str(err.value)
    assert f"{path}, line 1 is a JSON string" in message
    assert "'text'" in message and "'prompt'" in message and "'response'" in message
    assert "string indices" not in message
    # the same for other fields, with the names the user configured
    (tmp_path / "nums.jsonl").write_text('{"body": "x"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 2 is a JSON array .*'body'"):
        TextFilesDataModule(paths=[str(tmp_path / "nums.jsonl")], text_key="body").documents()
    (tmp_path / "null.jsonl").write_text('{"text": null}\n')
    with pytest.raises(ValueError, match=r"null\.jsonl, line 1: field 'text' is null, not a str"):
        TextFilesDataModule(paths=[str(tmp_path / "null.jsonl")]).documents()


def test_crlf_lines_a_bom_and_a_line_separator_inside_a_string_are_read(tmp_path):
    rows = [{"text": "a\u2028b"}, {"prompt": "Q? ", "response": "A."}]
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    (tmp_path / "win.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    docs = TextFilesDataModule(paths=[str(tmp_path / "win.jsonl")]).documents()
    assert bytes(docs[0].tokens.tolist()).decode() == "a\u2028b"
    assert bytes(docs[1].tokens[docs[1].scored].tolist()) == b"A."
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    docs = TextFilesDataModule(paths=[str(tmp_path / "bom.txt")]).documents()
    assert bytes(docs[0].tokens.tolist()) == b"hello"


def test_an_unknown_encoding_is_refused_at_creation():
    with pytest.raises(ValueError, match=r"data\.encoding='utf-9' is not an encoding"):
        TextFilesDataModule(paths=["x.txt"], encoding="utf-9")


def test_a_block_longer_than_a_split_is_refused_at_setup_with_its_length(tmp_path):
    dm = PyDocsDataModule(block_size=200_000, batch_size=4, seed=0, max_documents=12)
    with pytest.raises(ValueError) as err:
        dm.setup()
    message = str(err.value)
    docs = dm.documents()
    split = split_documents(len(docs), 0.1, 0.1, 0)
    lengths = {s: sum(len(docs[i]) for i in split[s]) for s in ("train", "val", "test")}
    shortest = min(lengths, key=lengths.get)
    assert f"data.block_size=200000 is longer than the {shortest} split" in message
    assert f"holds {lengths[shortest]} tokens" in message
    assert f"at most {lengths[shortest]}" in message
    assert not dm.sets  # refused before any block was built
    # a block as long as the shortest split is fine
    ok = PyDocsDataModule(block_size=lengths[shortest], batch_size=4, seed=0, max_documents=12)
    ok.setup()
    # text files: the same check
    _three_docs(tmp_path)
    files = TextFilesDataModule(paths=[str(tmp_path)], block_size=5000)
    with pytest.raises(ValueError, match=r"holds 90 tokens in 1 document"):
        files.setup()


def test_the_text_files_config_passes_encoding_and_skip_bad_lines(tmp_path):
    from conftest import compose
    from hydra.utils import instantiate

    _three_docs(tmp_path)
    cfg = compose(["data=text_files", f"data.paths=[{tmp_path}]"])
    assert cfg.data.encoding == "utf-8" and cfg.data.skip_bad_lines is False
    overrides = ["data.encoding=latin-1", "data.skip_bad_lines=true"]
    dm = instantiate(compose(["data=text_files", f"data.paths=[{tmp_path}]", *overrides]).data)
    assert (dm.encoding, dm.skip_bad_lines) == ("latin-1", True)
