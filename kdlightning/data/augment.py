"""Random crops with padding and horizontal flips as whole-batch tensor operations.

    x = torch.randn(256, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    y = random_hflip(random_crop(x, padding=2, fill=-0.81, generator=g), generator=g)

The in-memory data sets (Fashion-MNIST, MNIST) serve a whole batch per ``__getitems__`` call;
:class:`AugmentedTensors` augments that batch in one go: per image, a random offset of a
``padding``-pixel zero-padded copy, and a coin flip for the mirror image. A per-image
torchvision transform would cost a Python call per image, more than the small models' forward.

The augmentation happens in the data loader, before the batch reaches the LightningModule: on
the online distillation path the teacher and the student see the same augmented view (the
"consistent teaching" of Beyer et al. 2022). Stored teacher logits would not match a random
view, so a data module that augments says so (``augments``) and cached logits are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlightning.data.base import IndexedTensors


def random_crop(
    x: Tensor, padding: int, fill: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Each image of ``x`` (N, C, H, W) padded by ``padding`` pixels of ``fill`` on every side,
    then cropped back to H x W at an offset drawn uniformly per image (0..2*padding each way)."""
    if padding < 0:
        raise ValueError(f"data.crop_padding must be >= 0, got {padding!r}")
    if padding == 0 or len(x) == 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, value=float(fill))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    picked = padded[torch.arange(n)[:, None, None], :, rows, cols]  # (N, H, W, C)
    return picked.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Each image of ``x`` (N, C, H, W) mirrored left-right with probability ``p``."""
    flip = torch.rand(len(x), generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class AugmentedTensors(IndexedTensors):
    """:class:`IndexedTensors` whose batches are randomly cropped (``crop_padding`` pixels of
    ``fill``, the value an empty pixel has after normalization) and mirrored (``hflip``).

    The random draws come from a generator seeded with ``seed``: every stage of a job (teacher,
    student alone, distilled student) that builds its loader afresh sees the same sequence of
    views, so the student alone and the distilled student are paired on augmentation too.
    With ``num_workers > 0`` each worker holds a copy of the generator (views repeat across
    workers); the in-memory data sets need no workers.
    """

    augmented = True

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        positions: Tensor | None = None,
        *,
        crop_padding: int = 2,
        hflip: bool = True,
        fill: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(inputs, targets, positions)
        if int(crop_padding) < 0:
            raise ValueError(f"data.crop_padding must be >= 0, got {crop_padding!r}")
        self.crop_padding, self.hflip, self.fill = int(crop_padding), bool(hflip), float(fill)
        self.generator = torch.Generator().manual_seed(int(seed))

    def augment(self, x: Tensor) -> Tensor:
        x = random_crop(x, self.crop_padding, self.fill, self.generator)
        return random_hflip(x, self.generator) if self.hflip else x

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        x, y, pos = super().__getitem__(i)
        return self.augment(x[None])[0], y, pos

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        x, y, pos = super().__getitems__(indices)
        return self.augment(x), y, pos
