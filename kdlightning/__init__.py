"""kdlightning: knowledge distillation as PyTorch Lightning modules, configured with Hydra.

from kdlightning import DistillationModule, distillation_loss

The package is split by concern (README: Code map): ``distill/`` the distillation core (never
imports Hydra or the job layer), ``job/`` the Hydra job, ``deploy/`` measure and export,
``data/``, ``models/``, ``lm/`` (text), ``report/``, ``figures/``. Module paths from before
that split still import (``kdlightning._aliases``).
"""

from kdlightning import _aliases

_aliases.install()

from typing import Any  # noqa: E402

__all__ = ["ClassifierModule", "DistillationModule", "distillation_loss", "kd_loss"]
__version__ = "0.1.0"

# The public names load torch and Lightning (about 10 s) on first use, not at `import
# kdlightning`: the command line checks its config and answers tab completion without them.
_LAZY = {
    "distillation_loss": "kdlightning.distill.functional",
    "kd_loss": "kdlightning.distill.functional",
    "ClassifierModule": "kdlightning.distill.modules",
    "DistillationModule": "kdlightning.distill.modules",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
