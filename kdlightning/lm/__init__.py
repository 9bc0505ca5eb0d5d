"""Distilling causal language models: the same job, sweeps, cache and report as for images.

    python -m kdlightning.train experiment=lm_pydocs                       # GPT -> small GPT
    python -m kdlightning.train -m experiment=lm_pydocs kd=forward_kl,reverse_kl,jsd seed=0,1,2
    python -m kdlightning.report logs/distill/multiruns/<date>_<time>_<id> --by-role  # bits/byte

FSDP (GPUs): ``trainer=fsdp trainer.strategy='{_target_: kdlightning.lm.gpt.fsdp_strategy}'``
shards every GPT block, the frozen teacher's included (it is a submodule of the module).

Modules, in the order data flows:

    tokenize.py  bytes (vocabulary 256) or a local Hugging Face tokenizer
    blocks.py    documents -> seeded split by document -> fixed-length blocks with a loss mask
    data.py      PyDocsDataModule (data=pydocs, embedded), TextFilesDataModule (data=text_files)
    gpt.py       a small GPT (nanoGPT-style) with generate()
    hf.py        transformers causal LMs by local path or config (pip install 'kdlightning[lm]')
    losses.py    masked, chunked forward KL, reverse KL, generalized JSD, next-token CE
    cached.py    kd.teacher_logits=cached: the teacher's top-k logits per token, stored once
    on_policy.py kd.on_policy (GKD's lambda): batches the student samples, scored by the teacher
    module.py    LMModule (teacher, student alone), LMDistillationModule (frozen teacher)
    compare.py   costs (params, size, tokens/s, a sample) and the comparison table

No stages here: the job runs the same stages for text as for images, with the language-model
task (:mod:`kdlightning.job.tasks.text`) supplying what differs.
"""
