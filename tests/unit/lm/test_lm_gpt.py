"""The small GPT: shapes, causality, tied head, generation, argument checks."""

from __future__ import annotations

import pytest
import torch

from kdlightning.lm.gpt import GPT


def _tiny(**kw):
    torch.manual_seed(0)
    return GPT(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16, **kw).eval()


def test_shapes_and_tied_head():
    model = _tiny()
    out = model(torch.randint(0, 32, (3, 10)))
    assert out.shape == (3, 10, 32)
    assert model.head.weight is model.tok.weight


def test_causal_a_future_token_changes_no_earlier_logit():
    model = _tiny()
    ids = torch.randint(0, 32, (1, 12))
    changed = ids.clone()
    changed[0, 7] = (ids[0, 7] + 1) % 32
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_generate_appends_tokens_and_crops_context():
    model = _tiny()
    prompt = torch.randint(0, 32, (1, 14))
    out = model.generate(prompt, 8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 22) and torch.equal(out[:, :14], prompt)
    greedy = model.generate(prompt, 4, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 4, temperature=0))


def test_bad_sizes_name_the_fix():
    with pytest.raises(ValueError, match=r"multiple of model\.n_head"):
        GPT(vocab_size=32, block_size=8, n_head=3, n_embd=16)
    with pytest.raises(ValueError, match="longer than block_size"):
        _tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_hf_causal_lm_from_a_config_returns_logits():
    pytest.importorskip("transformers")
    from kdlightning.lm.hf import hf_causal_lm

    config = {"model_type": "gpt2", "n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 16}
    model = hf_causal_lm(vocab_size=256, block_size=16, config=config).eval()
    assert model.vocab_size == 256
    assert model(torch.randint(0, 256, (2, 16))).shape == (2, 16, 256)
    # a path that does not exist is an error, not a hub id to download
    with pytest.raises(FileNotFoundError, match="is not a folder; give a local folder"):
        hf_causal_lm(256, 16, path="/nonexistent/model")
    with pytest.raises(ValueError, match=r"model\.name_or_path, model\.config or both"):
        hf_causal_lm(256, 16)
    with pytest.raises(ValueError, match=r"model\.dtype='fp8' is not a dtype"):
        hf_causal_lm(256, 16, config=config, dtype="fp8")


def test_fsdp_strategy_wraps_gpt_blocks():
    from kdlightning.lm.gpt import Block, fsdp_strategy

    strategy = fsdp_strategy()  # constructs on the CPU; Lightning only runs FSDP on GPUs
    assert strategy.kwargs["use_orig_params"] is True
    assert Block in strategy.kwargs["auto_wrap_policy"]._module_classes


def test_a_name_is_a_folder_a_hub_id_or_an_error(tmp_path):
    from kdlightning.lm.hf import resolve_source

    assert resolve_source(str(tmp_path)) == (str(tmp_path), True)
    assert resolve_source("Qwen/Qwen2.5-0.5B") == ("Qwen/Qwen2.5-0.5B", False)  # not fetched here
    for bad in (str(tmp_path / "missing"), "./models/x", "~/m", "a/b/c"):
        with pytest.raises(FileNotFoundError, match="is not a folder"):
            resolve_source(bad)
