"""Dense-CRF refinement (pydensecrf2) and a process pool for it (SPEC §5).

- Unary ``−log p`` over the selected label planes only (SPEC §5: "run it only over the labels
  present in the image"; ``labels=None`` uses all of them). The selected planes are renormalised to
  sum to 1 per pixel and floored at ``UNARY_FLOOR`` before the log (a pixel where every selected
  plane is 0 becomes uniform over them). The planes of the other labels are 0 in the output; a
  single selected label gets probability 1 everywhere (no CRF is run).
- Pairwise terms: a bilateral kernel (weight 10, ``sxy = 80/s``, ``srgb = 13``) and a Gaussian
  kernel (weight 3, ``sxy = 3/s``), Potts compatibility; 10 mean-field iterations. ``s`` = how much
  the image was shrunk (12 for 321 → 41 in SEC training, 1 on the full image at test time).
- pydensecrf holds the GIL while it runs (two threads take as long as one after the other), so
  :class:`CRFPool` parallelises over images with processes. The workers are started with the
  ``forkserver`` method (``spawn`` where it is unavailable), never ``fork``: the callers have torch
  (and its thread pools) loaded, and forking a multi-threaded process can deadlock its children.
  Startup is paid once per pool (the pool is created once and reused); see benchmarks/crf.py for
  the measured startup of each method.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

UNARY_FLOOR = 1e-5  # smallest probability entering −log p (a unary of at most 11.5)


@dataclass
class CRFParams:
    """Dense-CRF settings (SPEC §5); spatial standard deviations are for an unshrunk image (s = 1)."""

    bilateral_weight: float = 10.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    gaussian_weight: float = 3.0
    gaussian_sxy: float = 3.0
    iterations: int = 10

    @classmethod
    def from_config(cls, seg_cfg: Any) -> "CRFParams":
        """From a SegmentConfig's ``crf_*`` keys (``crf_bilateral_weight`` → ``bilateral_weight``, …)."""
        return cls(**{f.name: getattr(seg_cfg, "crf_" + f.name) for f in fields(cls)})


def _check_labels(labels: Sequence[int] | None, num_labels: int) -> list[int]:
    if labels is None:
        return list(range(num_labels))
    out = [int(c) for c in np.asarray(labels, dtype=np.int64).reshape(-1)]
    if not out:
        raise ValueError("labels is empty; expected at least one label (or None for all)")
    if min(out) < 0 or max(out) >= num_labels:
        raise ValueError(f"labels {out} outside 0..{num_labels - 1} (probs have {num_labels} planes)")
    if len(set(out)) != len(out):
        raise ValueError(f"labels {out} repeat a label; expected distinct labels")
    return out


def _check_inputs(image: np.ndarray, probs: np.ndarray, labels: Sequence[int] | None,
                  scale: float) -> list[int]:
    """Validate one CRF input; return the selected labels as a list."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} of shape {np.shape(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(f"probs of shape {probs.shape} do not match image of shape {image.shape}; "
                         f"expected (L, {image.shape[0]}, {image.shape[1]})")
    if probs.shape[0] == 0:
        raise ValueError(f"probs of shape {probs.shape} have no label plane")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale}")
    return _check_labels(labels, probs.shape[0])


def _dense_crf(image: np.ndarray, probs: np.ndarray, labels: list[int], scale: float,
               params: CRFParams) -> np.ndarray:
    """The CRF on validated inputs (runs in the pool's workers too)."""
    import pydensecrf.densecrf as dcrf

    num_labels, height, width = probs.shape
    out = np.zeros((num_labels, height, width), dtype=np.float32)
    if len(labels) == 1:
        out[labels[0]] = 1.0
        return out
    sel = np.asarray(probs, dtype=np.float32)[labels]
    total = sel.sum(axis=0, keepdims=True)
    sel = np.where(total > 0, sel / np.where(total > 0, total, 1.0), np.float32(1.0 / len(labels)))
    unary = -np.log(np.clip(sel, UNARY_FLOOR, 1.0)).reshape(len(labels), -1)
    crf = dcrf.DenseCRF2D(width, height, len(labels))
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy / scale, compat=params.gaussian_weight)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy / scale, srgb=params.bilateral_srgb,
                             rgbim=np.ascontiguousarray(image), compat=params.bilateral_weight)
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    out[labels] = q.reshape(len(labels), height, width)
    return out


def dense_crf(image: np.ndarray, probs: np.ndarray, labels: Sequence[int] | None = None,
              scale: float = 1.0, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refine ``probs`` (L, H, W) with a dense CRF on ``image`` (H, W, 3) uint8 (SPEC §5).

    Only the planes in ``labels`` (None: all L) take part; the others are 0 in the returned
    float32 (L, H, W) probabilities, which sum to 1 per pixel over ``labels``. ``scale`` is the
    shrink factor ``s``: the spatial standard deviations are divided by it. Raises ValueError on a
    non-uint8 image, mismatched shapes (naming both) or labels out of range.
    """
    selected = _check_inputs(image, probs, labels, scale)
    return _dense_crf(image, np.asarray(probs), selected, float(scale), params)


def _crf_task(task: tuple[np.ndarray, np.ndarray, list[int], float, CRFParams]) -> np.ndarray:
    return _dense_crf(*task)


def pool_context() -> mp.context.BaseContext:
    """The multiprocessing context of :class:`CRFPool`: forkserver, else spawn (never fork, see module doc)."""
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


class _Ready:
    """A finished result with the ``.get()`` of multiprocessing's AsyncResult (the inline path)."""

    def __init__(self, value: list[np.ndarray]):
        self._value = value

    def get(self, timeout: float | None = None) -> list[np.ndarray]:
        return self._value

    def ready(self) -> bool:
        return True


class CRFPool:
    """Dense CRFs of many images over ``processes`` worker processes, created once and reused.

    ``processes <= 1`` runs every CRF inline in the calling process (no pool). Results are the
    same arrays as :func:`dense_crf` gives (same code, same inputs). Inputs are validated in the
    caller, so a bad input raises ValueError at ``map``/``map_async`` time on either path. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, processes: int = 2, params: CRFParams = CRFParams()):
        self.processes = max(1, int(processes))
        self.params = params
        self._pool = pool_context().Pool(self.processes) if self.processes > 1 else None
        self._closed = False

    def _tasks(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
               labels: Sequence[Sequence[int] | None] | None, scale: float) -> list[tuple]:
        if self._closed:
            raise ValueError("CRFPool is closed")
        if labels is None:
            labels = [None] * len(images)
        if not len(images) == len(probs) == len(labels):
            raise ValueError(f"{len(images)} images, {len(probs)} probability maps and {len(labels)} label lists; "
                             "expected one of each per image")
        tasks = []
        for i, (image, prob, lab) in enumerate(zip(images, probs, labels)):
            try:
                selected = _check_inputs(image, prob, lab, scale)
            except ValueError as e:
                raise ValueError(f"image {i} of the batch: {e}") from None
            tasks.append((image, np.asarray(prob, dtype=np.float32), selected, float(scale), self.params))
        return tasks

    def _chunksize(self, n: int) -> int:
        return max(1, -(-n // (2 * self.processes)))  # two chunks per worker: balance against IPC overhead

    def map(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
            labels: Sequence[Sequence[int] | None] | None = None, scale: float = 1.0) -> list[np.ndarray]:
        """:func:`dense_crf` of each (image, probs, labels) triple, in order."""
        return self.map_async(images, probs, labels, scale).get()

    def map_async(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                  labels: Sequence[Sequence[int] | None] | None = None, scale: float = 1.0) -> Any:
        """Like :meth:`map`, returning at once an object whose ``.get()`` gives the list (inline: computed now)."""
        tasks = self._tasks(images, probs, labels, scale)
        if self._pool is None:
            return _Ready([_crf_task(t) for t in tasks])
        return self._pool.map_async(_crf_task, tasks, chunksize=self._chunksize(len(tasks)))

    def close(self) -> None:
        """Stop the workers (waits for queued work). Idempotent."""
        if self._pool is not None and not self._closed:
            self._pool.close()
            self._pool.join()
        self._closed = True

    def terminate(self) -> None:
        """Stop the workers now, dropping queued work."""
        if self._pool is not None and not self._closed:
            self._pool.terminate()
            self._pool.join()
        self._closed = True

    def __enter__(self) -> "CRFPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()
