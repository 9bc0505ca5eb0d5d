"""Module paths from before the package was split into ``distill/``, ``job/`` and ``deploy/``.

``import kdlightning.module`` (or ``from kdlightning.losses import kd_loss``) in a user's code or
notebook keeps working: the old name is the new module itself (one object, not a copy), found
by a meta-path finder installed when ``kdlightning`` is imported. New code imports the new
paths; :data:`OLD_TO_NEW` is the whole map.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

OLD_TO_NEW = {
    "kdlightning.losses": "kdlightning.distill.functional",
    "kdlightning.methods": "kdlightning.distill.methods",
    "kdlightning.hooks": "kdlightning.distill.hooks",
    "kdlightning.connectors": "kdlightning.distill.connectors",
    "kdlightning.module": "kdlightning.distill.modules",
    "kdlightning.mutual": "kdlightning.distill.mutual",
    "kdlightning.stages": "kdlightning.job.stages",
    "kdlightning.build": "kdlightning.job.build",
    "kdlightning.validate": "kdlightning.job.config",
    "kdlightning.resolvers": "kdlightning.job.resolvers",
    "kdlightning.cache": "kdlightning.job.cache",
    "kdlightning.results": "kdlightning.job.results",
    "kdlightning.rundir": "kdlightning.job.rundir",
    "kdlightning.distributed": "kdlightning.job.distributed",
    "kdlightning.interrupts": "kdlightning.job.signals",
    "kdlightning.tracking": "kdlightning.job.tracking",
    "kdlightning.measure": "kdlightning.deploy.measure",
    "kdlightning.compare": "kdlightning.deploy.compare",
    "kdlightning.checkpoints": "kdlightning.models.weights",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module ran when it was imported; nothing more to do


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None):
        new = OLD_TO_NEW.get(name)
        if new is None:
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
