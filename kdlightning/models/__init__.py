"""Model factories. Each takes ``num_classes`` and ``input_shape`` as keyword arguments."""

from kdlightning.models.small import MLP, SmallCNN
from kdlightning.models.utils import check_model_output

__all__ = ["MLP", "SmallCNN", "check_model_output"]
