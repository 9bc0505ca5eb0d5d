"""Model factories. Each takes ``num_classes`` and ``input_shape`` as keyword arguments."""

from kdlightning.models.cifar import CIFAR_MODELS, cifar_model
from kdlightning.models.conv1d import CNN1D
from kdlightning.models.hub import timm_model, torchvision_model
from kdlightning.models.small import MLP, SmallCNN
from kdlightning.models.utils import check_model_output

__all__ = [
    "CIFAR_MODELS",
    "CNN1D",
    "MLP",
    "SmallCNN",
    "check_model_output",
    "cifar_model",
    "timm_model",
    "torchvision_model",
]
