"""kdlightning: knowledge distillation as PyTorch Lightning modules, configured with Hydra.

from kdlightning import DistillationModule, distillation_loss
"""

from kdlightning.losses import distillation_loss, kd_loss
from kdlightning.module import ClassifierModule, DistillationModule

__all__ = ["ClassifierModule", "DistillationModule", "distillation_loss", "kd_loss"]
__version__ = "0.1.0"
