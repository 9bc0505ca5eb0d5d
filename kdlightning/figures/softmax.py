"""What the temperature does: a teacher's softened outputs for one test image at several T.

    from kdlightning.figures import softmax_figure, plot_softmax_temperatures, softmax_at
    fig = softmax_figure(teacher, dm, temperatures=(1, 4, 10))   # a real test image, named classes
    fig.savefig("softmax.png")
    fig = plot_softmax_temperatures(logits_of_one_image, [1, 2, 4, 8], class_names)

``softmax(z / T)`` flattens as T grows, which shows how the teacher ranks the *wrong* classes:
the "dark knowledge" of Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from kdlightning.data.base import ClassificationDataModule
from kdlightning.distill.functional import check_temperature

# Beyond this many classes the bars are unreadable: show the teacher's top classes only.
MAX_BARS = 12
TOP_BARS = 10
# The default image is chosen among this many test images (one forward pass, any data set).
CANDIDATES = 256


def softmax_at(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` over the last dimension, in float32."""
    return torch.softmax(logits.float() / check_temperature(temperature), dim=-1)


def _check_one_sample(logits: Tensor, class_names: Sequence[str] | None) -> list[str]:
    if logits.ndim != 1:
        raise ValueError(
            f"give the logits of one sample (shape (classes,)), got {tuple(logits.shape)}"
        )
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(logits))]
    if len(names) != len(logits):
        raise ValueError(f"{len(names)} class names for {len(logits)} logits")
    return names


def _bars(
    ax: Axes, probs: Tensor, names: list[str], shown: list[int], highlight: int | None
) -> None:
    colors = ["tab:green" if i == highlight else "tab:blue" for i in shown]
    # Numeric positions, names as tick labels: names like "0".."9" must stay categories.
    ax.bar(range(len(shown)), probs[shown].numpy(), color=colors)
    long = max(len(names[i]) for i in shown) > 2  # long names ("Ankle boot") would overlap
    ax.set_xticks(range(len(shown)), [names[i] for i in shown], rotation=60 if long else 0)
    ax.set_ylim(0, 1)


def plot_softmax_temperatures(
    logits: Tensor,
    temperatures: Sequence[float] = (1, 2, 4, 8),
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    highlight: int | None = None,
) -> Figure:
    """One bar chart per temperature of ``softmax(logits / T)`` for a single sample's logits;
    the ``highlight`` class (e.g. the true one) in green."""
    names = _check_one_sample(logits, class_names)
    # The object-oriented API (no pyplot): no GUI backend, no global figure state to leak.
    fig = Figure(figsize=(3.2 * len(temperatures), 2.8), layout="constrained")
    axes = fig.subplots(1, len(temperatures), sharey=True, squeeze=False)[0]
    _draw(list(axes), logits, temperatures, names, highlight)
    axes[0].set_ylabel("probability")
    if title:
        fig.suptitle(title)
    return fig


def _draw(
    axes: list[Axes], logits: Tensor, temperatures: Sequence[float], names: list[str],
    highlight: int | None,
) -> None:  # fmt: skip
    shown = list(range(len(names)))
    if len(names) > MAX_BARS:  # the same classes in every panel: softmax keeps the ranking
        shown = logits.topk(TOP_BARS).indices.tolist()
    for ax, t in zip(axes, temperatures, strict=True):
        _bars(ax, softmax_at(logits, t), names, shown, highlight)
        ax.set_title(f"T = {t:g}")
        ax.set_xlabel("class" if len(shown) == len(names) else f"top {len(shown)} classes")


@torch.no_grad()
def pick_test_image(
    teacher: nn.Module, dm: ClassificationDataModule, index: int | None = None
) -> tuple[int, Tensor, int, Tensor]:
    """``(index, image, label, teacher logits)`` of one test image of ``dm``.

    ``index=None`` picks, among the first :data:`CANDIDATES` test images, one the teacher
    classifies right and confidently (top probability >= 0.9 at T = 1) while giving the most
    mass to a wrong class: the image where the dark knowledge is easiest to see.
    """
    dm.setup("test")
    test_set = dm.test_set
    if test_set is None:
        raise ValueError(f"{type(dm).__name__} has no test set after setup('test')")
    n = len(test_set)
    if index is not None and not 0 <= index < n:
        raise ValueError(f"index={index} is outside the test set (0..{n - 1})")
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    try:
        positions = [index] if index is not None else list(range(min(n, CANDIDATES)))
        samples = [test_set[i] for i in positions]
        x = torch.stack([torch.as_tensor(s[0]) for s in samples])
        y = torch.as_tensor([int(s[1]) for s in samples])
        logits = teacher(x.to(device)).float().cpu()
    finally:
        teacher.train(was_training)
    if logits.ndim != 2:
        raise ValueError(
            f"the teacher's output has shape {tuple(logits.shape)}, not (batch, classes)"
        )
    pick = 0
    if index is None:
        probs = logits.softmax(-1)
        top2 = probs.topk(min(2, probs.shape[1]), dim=-1).values
        right = probs.argmax(-1) == y
        score = top2[:, -1].where(right & (top2[:, 0] >= 0.9), torch.tensor(-1.0))
        if score.max() < 0:  # no confident right answer: any right one, else the first image
            score = top2[:, -1].where(right, torch.tensor(-1.0))
        pick = int(score.argmax()) if score.max() >= 0 else 0
    return positions[pick], x[pick], int(y[pick]), logits[pick]


def _show_input(ax: Axes, image: Tensor) -> None:
    """The model's input as a picture: grey or colour images, 1-D signals as a line."""
    img = image.float()
    if img.ndim == 3 and img.shape[0] in (1, 3):
        # Inputs are normalized: rescale to [0, 1] for display only.
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
        if img.shape[0] == 1:
            # 8x8 digits dark on light, as scikit-learn shows them; 28x28 (Fashion-)MNIST as stored
            ax.imshow(img[0].numpy(), cmap="gray_r" if img.shape[-1] <= 16 else "gray")
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.plot(img.flatten().numpy(), color="black")
        ax.set_yticks([])


def softmax_figure(
    teacher: nn.Module,
    dm: ClassificationDataModule,
    temperatures: Sequence[float] = (1, 4, 10),
    index: int | None = None,
) -> Figure:
    """The input image and the teacher's ``softmax(z / T)`` at each temperature, bars named
    with ``dm.class_names``, the true class in green.

    ``dm``: a data module with ``test_set`` (and ``class_names``, else the class indices);
    ``index``: which test image (default: see :func:`pick_test_image`).
    """
    for t in temperatures:
        check_temperature(t)
    position, image, label, logits = pick_test_image(teacher, dm, index)
    names = list(getattr(dm, "class_names", None) or [str(i) for i in range(len(logits))])
    names = _check_one_sample(logits, names)
    fig = Figure(figsize=(2.6 + 3.2 * len(temperatures), 3.0), layout="constrained")
    widths = [0.7] + [1.0] * len(temperatures)
    axes = fig.subplots(1, 1 + len(temperatures), width_ratios=widths)
    _show_input(axes[0], image)
    axes[0].set_title(f"test image {position}\ntrue class: {names[label]}")
    for ax in axes[2:]:
        ax.sharey(axes[1])
    _draw(list(axes[1:]), logits, temperatures, names, label)
    axes[1].set_ylabel("teacher probability")
    fig.suptitle("The teacher's outputs softened by the temperature: softmax(logits / T)")
    return fig
