"""kdlightning: knowledge distillation as PyTorch Lightning modules, configured with Hydra.

from kdlightning import DistillationModule, distillation_loss

The package is split by concern (README: Code map): ``distill/`` the distillation core (never
imports Hydra or the job layer), ``job/`` the Hydra job, ``deploy/`` measure and export,
``data/``, ``models/``, ``lm/`` (text), ``report/``, ``figures/``. Module paths from before
that split still import (``kdlightning._aliases``).
"""

from kdlightning import _aliases

_aliases.install()

from kdlightning.distill.functional import distillation_loss, kd_loss  # noqa: E402
from kdlightning.distill.modules import ClassifierModule, DistillationModule  # noqa: E402

__all__ = ["ClassifierModule", "DistillationModule", "distillation_loss", "kd_loss"]
__version__ = "0.1.0"
