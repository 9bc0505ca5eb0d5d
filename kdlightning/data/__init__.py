"""Data modules: one LightningDataModule per data set, each reporting classes and input shape."""

from kdlightning.data.base import ClassificationDataModule
from kdlightning.data.digits import DigitsDataModule

__all__ = ["ClassificationDataModule", "DigitsDataModule"]
