"""Data modules: one LightningDataModule per data set, each reporting classes and input shape."""

from kdlightning.data.base import ClassificationDataModule
from kdlightning.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from kdlightning.data.digits import DigitsDataModule
from kdlightning.data.imagefolder import ImageFolderDataModule
from kdlightning.data.mnist import FashionMNISTDataModule, MNISTDataModule
from kdlightning.data.mnist1d import MNIST1DDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNIST1DDataModule",
    "MNISTDataModule",
]
