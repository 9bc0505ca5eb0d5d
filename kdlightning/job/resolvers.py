"""OmegaConf resolvers that conf/ uses; :func:`register_resolvers` must run before Hydra
composes the config (``kdlightning.job.run`` calls it at import, before ``@hydra.main``).

``${kdl.run_id:}``
    A short random id (6 hex digits) appended to the run and sweep folders
    (conf/hydra/default.yaml), so that two jobs started in the same second do not share one.
    Cached per composed config: every use within a job, and every job of a multirun (Hydra
    copies the resolver cache into each job's config, and pickles it for submitit), sees the
    same id.

``${kdl.cwd:}``
    The working directory the command was started in (``paths.root_dir``: data and logs go under
    it). Hydra's own ``${hydra:runtime.cwd}`` cannot be resolved while Hydra computes
    ``hydra.sweep.dir`` of a multirun (Hydra issues 1786, 2247: every ``-m`` failed with
    "HydraConfig was not set"); this one resolves the same in a single run, a multirun, an
    in-process compose and a DDP child that Lightning starts in the same folder. Cached like the
    run id, so a job that changes directory later keeps the folder it started in.
"""

from __future__ import annotations

import os
import secrets

from omegaconf import OmegaConf

RUN_ID = "kdl.run_id"
CWD = "kdl.cwd"


def run_id() -> str:
    """A fresh random id: 6 lowercase hex digits."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """Register the resolvers above with OmegaConf; calling it again changes nothing."""
    if not OmegaConf.has_resolver(RUN_ID):
        OmegaConf.register_new_resolver(RUN_ID, run_id, use_cache=True)
    if not OmegaConf.has_resolver(CWD):
        OmegaConf.register_new_resolver(CWD, os.getcwd, use_cache=True)
