"""OmegaConf resolvers that conf/ uses; :func:`register_resolvers` must run before Hydra
composes the config (``kdlightning.train`` calls it at import, before ``@hydra.main``).

``${kdl.run_id:}``
    A short random id (6 hex digits) appended to the run and sweep folders
    (conf/hydra/default.yaml), so that two jobs started in the same second do not share one.
    Cached per composed config: every use within a job, and every job of a multirun (Hydra
    copies the resolver cache into each job's config, and pickles it for submitit), sees the
    same id.
"""

from __future__ import annotations

import secrets

from omegaconf import OmegaConf

RUN_ID = "kdl.run_id"


def run_id() -> str:
    """A fresh random id: 6 lowercase hex digits."""
    return secrets.token_hex(3)


def register_resolvers() -> None:
    """Register the resolvers above with OmegaConf; calling it again changes nothing."""
    if not OmegaConf.has_resolver(RUN_ID):
        OmegaConf.register_new_resolver(RUN_ID, run_id, use_cache=True)
