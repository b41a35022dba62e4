"""A stage's output folder, filled one file per image and resumable (cue maps, predictions).

The folder's record (``extract.json``, ``predict.json``) holds the parameters its outputs were made
with: a rerun with other parameters is refused rather than mixed in, and so are outputs without a
record (a folder of something else). A killed run leaves at most a temp file per image
(:func:`sharpen_core.io.atomic_path` names them ``.<name>.*.tmp``), removed before the image is
redone. The images are read in loader workers of one thread each; a batch is the list of its samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from .errors import DatasetError
from .records import refuse_changed

T = TypeVar("T")


def claim_folder(folder: Path, record: Path, params: Mapping[str, Any],
                 read_params: Callable[[Path], Mapping[str, Any]], what: str, outputs: Sequence[Path],
                 pattern: str, ignore: Iterable[str] = ()) -> bool:
    """May ``folder`` take outputs made with ``params``? True: it has no ``record`` yet (the caller writes one).

    False: its ``record`` holds these parameters (keys of ``ignore`` are not compared). Refused (a
    ValueError naming the file): a record with other parameters, or ``outputs`` subfolders holding
    files matching ``pattern`` without a record.
    """
    # outputs looked for first: a shard job beside this one writes the record before its first output
    stray = next((sub for sub in outputs if any(sub.glob(pattern))), None)
    if record.is_file():
        refuse_changed(record, what, read_params(record), params, ignore=ignore, folder=folder)
        return False
    if stray is not None:
        raise DatasetError(stray, f"{what} without {record.name}; use another --out, or delete {folder} "
                                  "to start fresh")
    return True


def remove_partial(path: Path) -> None:
    """Remove the temp files a killed run left of ``path`` (``.<name>.*.tmp`` beside it)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def as_list(samples: list[T]) -> list[T]:
    """The loader's collate function: a batch is the list of its samples (images of different sizes)."""
    return samples


def one_thread(_: int) -> None:
    """A loader worker's init: one torch thread (the workers run beside the main process's threads)."""
    torch.set_num_threads(1)


def sample_loader(items: torch.utils.data.Dataset, batch_size: int, num_workers: int
                  ) -> tuple[torch.utils.data.DataLoader, int]:
    """Batches (lists) of ``items`` in order, and the workers used: ``num_workers`` for more than one batch, else 0."""
    workers = int(num_workers) if len(items) > batch_size else 0  # type: ignore[arg-type]
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=as_list, worker_init_fn=one_thread if workers else None)
    return loader, workers
