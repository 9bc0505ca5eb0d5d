"""Hugging Face data sets of text (``data=hf_text``; ``pip install 'kdlightning[lm]'``).

    python -m kdlightning.train experiment=lm_pydocs data=hf_text data.path=my_dataset/ ...
    python -m kdlightning.train experiment=lm_pydocs data=hf_text data.name=json \\
        data.data_files=qa.jsonl ...

    from kdlightning.lm.hf_data import HFTextDataModule
    dm = HFTextDataModule(path="my_dataset/", tokenizer="/models/teacher", block_size=256)
    dm = HFTextDataModule(name="wikitext", config_name="wikitext-2-raw-v1", cache_dir="data/hf")

``path``: a folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``: the
``split`` is taken), read with ``load_from_disk``. ``name``: ``datasets.load_dataset(name,
config_name, split=split, data_files=data_files, cache_dir=cache_dir)`` - a hub data set
(downloaded once into ``cache_dir``; ``HF_DATASETS_OFFLINE=1`` allows only the cache) or a
packaged builder over local files (``json``, ``text``, ``csv``, ``parquet``). Each row is one
document: its ``text_key`` column, or ``prompt_key`` + ``response_key`` (only the response is
scored), as in ``data=text_files`` (:class:`~kdlightning.lm.data.TextFilesDataModule`, whose
row checks and messages this shares). The rows are split into train/val/test by document with
the seed. The job's cache keys cover what the data set's files hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdlightning.lm.blocks import Document
from kdlightning.lm.data import TextFilesDataModule


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "data=hf_text needs the datasets package: pip install 'kdlightning[lm]'"
        ) from err
    return datasets


class HFTextDataModule(TextFilesDataModule):
    """One split of a Hugging Face data set, by ``name`` (``load_dataset``) or ``path``
    (``load_from_disk``); ``max_documents`` keeps its first N rows."""

    def __init__(
        self,
        *args: Any,
        name: str | None = None,
        path: str | None = None,
        config_name: str | None = None,
        data_files: str | Sequence[str] | dict[str, Any] | None = None,
        split: str = "train",
        cache_dir: str | None = None,
        max_documents: int | None = None,
        **kwargs: Any,
    ) -> None:
        if name is not None and path is not None:
            raise ValueError(self._which(name, path))
        if path is not None and not Path(path).expanduser().is_dir():
            raise FileNotFoundError(
                f"data.path={path!r} is not a folder; give one written by "
                "Dataset.save_to_disk, or a data set's name as data.name"
            )
        super().__init__(*args, **kwargs)
        self.name, self.path, self.config_name = name, path, config_name
        self.data_files, self.hf_split = data_files, str(split)
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser())
        self.max_documents = None if max_documents is None else int(max_documents)
        self._rows: Any = None

    @staticmethod
    def _which(name: Any, path: Any) -> str:
        return (
            "data=hf_text needs exactly one of data.name (a data set for datasets' "
            "load_dataset, e.g. wikitext, or json with data.data_files=FILE) and data.path "
            f"(a folder written by save_to_disk); got name={name!r}, path={path!r}"
        )

    @property
    def source(self) -> str:
        """How the data set is named in messages."""
        return f"data.path={self.path}" if self.path else f"data.name={self.name}"

    def dataset(self) -> Any:
        """The split's rows (a ``datasets.Dataset``), loaded once."""
        if self._rows is not None:
            return self._rows
        if self.name is None and self.path is None:  # the job reads the data at start-up
            raise ValueError(self._which(None, None))
        datasets = _datasets()
        if self.path is not None:
            rows = datasets.load_from_disk(str(Path(self.path).expanduser()))
        else:
            rows = datasets.load_dataset(
                self.name, self.config_name, split=self.hf_split, data_files=self.data_files,
                cache_dir=self.cache_dir,
            )  # fmt: skip
        if isinstance(rows, datasets.DatasetDict):
            if self.hf_split not in rows:
                raise ValueError(
                    f"{self.source} has the splits {', '.join(rows)}, not "
                    f"data.split={self.hf_split!r}; set data.split to one of them"
                )
            rows = rows[self.hf_split]
        if self.max_documents is not None:
            rows = rows.select(range(min(self.max_documents, len(rows))))
        self._rows = rows
        return rows

    def source_files(self) -> list[Path]:
        if self.path is not None:  # every file of the saved folder
            return sorted(p for p in Path(self.path).expanduser().rglob("*") if p.is_file())
        # a loaded data set: the Arrow files datasets prepared in its cache
        return sorted({Path(f["filename"]) for f in self.dataset().cache_files})

    def documents(self) -> list[Document]:
        rows = self.dataset()
        return [self._record(dict(row), f"{self.source} row {i}") for i, row in enumerate(rows)]
