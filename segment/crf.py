"""Dense-CRF refinement (pydensecrf2) and a process pool for it (docs/method.md §5).

- Unary ``−log p`` over the selected label planes only (docs/method.md §5: "run it only over the labels
  present in the image"; ``labels=None`` uses all of them). The selected planes are renormalised to
  sum to 1 per pixel and floored at ``UNARY_FLOOR`` before the log (a pixel where every selected
  plane is 0 becomes uniform over them). The planes of the other labels are 0 in the output; a
  single selected label gets probability 1 everywhere (no CRF is run). Inputs may be read-only or
  strided views (copied to the writable C-contiguous buffers pydensecrf requires).
- Pairwise terms: a bilateral kernel (weight 10, ``sxy = 80/s``, ``srgb = 13``) and a Gaussian
  kernel (weight 3, ``sxy = 3/s``), Potts compatibility; 10 mean-field iterations. ``s`` = how much
  the image was shrunk (12 for 321 → 41 in SEC training, 1 on the full image at test time).
  :func:`predict_scale` and :func:`train_scale` turn the config's settings into ``s``
  (``segment.crf_predict_scale``: a number or ``"image"``, s = 500 / the image's long side;
  ``segment.crf_train_scale``: a number or ``"grid"``, s = 12 · 41 / the grid side; docs/method.md §5.1).
- pydensecrf holds the GIL while it runs (two threads take as long as one after the other), so
  :class:`CRFPool` parallelises over images with processes, started with ``spawn``, never
  ``fork``: the callers have torch (and its thread pools) loaded, and forking a multi-threaded
  process can deadlock its children. Measured on the shared 2-core machine (benchmarks/crf.py, a
  2-process pool's creation + first map, parent with torch imported): fork 0.06-0.15 s, spawn
  0.3-1.1 s, forkserver 0.3-1.0 s (server start, then a fork per worker), depending on the load;
  when the main module itself imports torch at top level, spawn and forkserver both pay that
  import once (about 2.5 s). The pool is created once and reused, so spawn's one-off cost is
  amortised; forkserver would only pay off for many short-lived pools. Only the selected planes
  travel to the workers and back.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from sharpen_core.config import CRF_SCALE_RULES

UNARY_FLOOR = 1e-5  # smallest probability entering −log p (a unary of at most 11.5)

# The spatial parameters' reference scales (docs/method.md §5.1).
VOC_IMAGE_SIDE = 500  # long side of a typical PASCAL VOC image, the size DeepLab's sxy (80, 3) were set for
SEC_GRID = 41  # SEC's cue / output grid (321 px input)
SEC_TRAIN_SCALE = 12.0  # SEC's shrink factor for the constrain loss's CRF on that grid
PREDICT_SCALE_RULE = CRF_SCALE_RULES["crf_predict_scale"]  # "image": s = VOC_IMAGE_SIDE / the image's long side
TRAIN_SCALE_RULE = CRF_SCALE_RULES["crf_train_scale"]  # "grid": s = SEC_TRAIN_SCALE · SEC_GRID / the grid's side


def _fixed_scale(setting: float | str, rule: str, key: str) -> float | None:
    """A numeric setting as a float (None for ``rule``); ValueError naming ``key`` otherwise."""
    if isinstance(setting, str):
        if setting == rule:
            return None
        raise ValueError(f"{key} = {setting!r}: expected a positive number or {rule!r}")
    if isinstance(setting, bool) or not isinstance(setting, (int, float, np.integer, np.floating)) \
            or not np.isfinite(setting) or setting <= 0:
        raise ValueError(f"{key} = {setting!r}: expected a positive number or {rule!r}")
    return float(setting)


def predict_scale(setting: float | str, height: int, width: int) -> float:
    """The test-time shrink factor ``s`` of an image of ``height`` × ``width`` (docs/method.md §5.1).

    ``setting`` is ``segment.crf_predict_scale``: a positive number is ``s`` itself (1.0: DeepLab's
    VOC values, sxy 80 and 3 pixels); ``"image"`` scales the spatial deviations with the image,
    ``s = VOC_IMAGE_SIDE / max(height, width)`` (a 125 px image: s = 4, bilateral sxy 20 px).
    """
    fixed = _fixed_scale(setting, PREDICT_SCALE_RULE, "segment.crf_predict_scale")
    if fixed is not None:
        return fixed
    return VOC_IMAGE_SIDE / float(max(int(height), int(width)))


def train_scale(setting: float | str, grid: int | Sequence[int]) -> float:
    """The shrink factor ``s`` of the constrain loss's CRF on a ``grid`` (side, or (h, w)) (docs/method.md §5.1).

    ``setting`` is ``segment.crf_train_scale``: a positive number is ``s`` itself (12: SEC's);
    ``"grid"`` keeps SEC's bilateral range as the same fraction of the grid side,
    ``(80 / s) / g = (80 / 12) / 41``, i.e. ``s = 12 · 41 / g`` (g = 41: 12; g = 16: 30.75).
    """
    fixed = _fixed_scale(setting, TRAIN_SCALE_RULE, "segment.crf_train_scale")
    if fixed is not None:
        return fixed
    side = max(int(g) for g in np.atleast_1d(np.asarray(grid)))
    return SEC_TRAIN_SCALE * SEC_GRID / float(side)


@dataclass
class CRFParams:
    """Dense-CRF settings (docs/method.md §5); spatial standard deviations are for an unshrunk image (s = 1)."""

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


def _mean_field(image: np.ndarray, sel: np.ndarray, scale: float, params: CRFParams) -> np.ndarray:
    """The CRF over the selected planes ``sel`` (k ≥ 2, H, W) float32, in order: (k, H, W) float32.

    Runs in the pool's workers too: only the selected planes travel there and back. ``sel`` is
    consumed: a writable C-contiguous float32 array (always a private copy here) is overwritten.
    """
    import pydensecrf.densecrf as dcrf

    k, height, width = sel.shape
    unary = sel
    if not (sel.dtype == np.float32 and sel.flags.c_contiguous and sel.flags.writeable):
        unary = np.array(sel, dtype=np.float32, order="C")
    total = unary.sum(axis=0, keepdims=True)
    if (total > 0).all():
        unary /= total
    else:
        unary = np.where(total > 0, unary / np.where(total > 0, total, 1.0), np.float32(1.0 / k))
    np.clip(unary, UNARY_FLOOR, 1.0, out=unary)
    np.log(unary, out=unary)
    np.negative(unary, out=unary)
    crf = dcrf.DenseCRF2D(width, height, k)
    crf.setUnaryEnergy(unary.reshape(k, -1))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy / scale, compat=params.gaussian_weight)
    if not (image.flags.c_contiguous and image.flags.writeable):
        image = np.array(image, dtype=np.uint8, order="C")  # pydensecrf takes a writable C-contiguous buffer
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy / scale, srgb=params.bilateral_srgb,
                             rgbim=image, compat=params.bilateral_weight)
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    return q.reshape(k, height, width)


def _selected(probs: np.ndarray, labels: list[int]) -> np.ndarray:
    """A private float32 C-contiguous copy of the planes ``labels``, in that order."""
    return np.ascontiguousarray(np.asarray(probs)[labels], dtype=np.float32)


def _scatter(q: np.ndarray | None, labels: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """(L, H, W) float32: the CRF planes at ``labels``, zeros elsewhere (q None: a single certain label)."""
    out = np.zeros(shape, dtype=np.float32)
    if q is None:
        out[labels[0]] = 1.0
    else:
        out[labels] = q
    return out


def dense_crf(image: np.ndarray, probs: np.ndarray, labels: Sequence[int] | None = None,
              scale: float = 1.0, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refine ``probs`` (L, H, W) with a dense CRF on ``image`` (H, W, 3) uint8 (docs/method.md §5).

    Only the planes in ``labels`` (None: all L) take part; the others are 0 in the returned
    float32 (L, H, W) probabilities, which sum to 1 per pixel over ``labels``. ``scale`` is the
    shrink factor ``s``: the spatial standard deviations are divided by it. Raises ValueError on a
    non-uint8 image, mismatched shapes (naming both) or labels out of range.
    """
    selected = _check_inputs(image, probs, labels, scale)
    probs = np.asarray(probs)
    q = None if len(selected) == 1 else _mean_field(image, _selected(probs, selected), float(scale), params)
    return _scatter(q, selected, probs.shape)


def _crf_task(task: tuple[np.ndarray, np.ndarray, float, CRFParams]) -> np.ndarray:
    return _mean_field(*task)


def pool_context() -> mp.context.BaseContext:
    """The multiprocessing context of :class:`CRFPool`: spawn (never fork, see the module doc)."""
    return mp.get_context("spawn")


def _assemble(jobs: list[tuple], results: list[np.ndarray]) -> list[np.ndarray]:
    it = iter(results)
    return [_scatter(None if task is None else next(it), selected, shape) for task, selected, shape in jobs]


class _Pending:
    """The pool's AsyncResult, assembling the full (L, H, W) arrays on ``.get()``."""

    def __init__(self, jobs: list[tuple], result: Any):
        self._jobs = jobs
        self._result = result

    def get(self, timeout: float | None = None) -> list[np.ndarray]:
        return _assemble(self._jobs, self._result.get(timeout))

    def ready(self) -> bool:
        return self._result.ready()


class _Ready(_Pending):
    """A finished result with the same ``.get()`` (the inline path)."""

    def __init__(self, jobs: list[tuple], results: list[np.ndarray]):
        super().__init__(jobs, None)
        self._results = results

    def get(self, timeout: float | None = None) -> list[np.ndarray]:
        return _assemble(self._jobs, self._results)

    def ready(self) -> bool:
        return True


class CRFPool:
    """Dense CRFs of many images over ``processes`` worker processes, created once and reused.

    ``processes <= 1`` runs every CRF inline in the calling process (no pool). Results are the
    same arrays as :func:`dense_crf` gives (same code, same inputs). Inputs are validated in the
    caller, so a bad input raises ValueError at ``map``/``map_async`` time on either path. Use as a
    context manager, or call :meth:`close`. As with any spawn pool, the program's main module must
    keep its work under ``if __name__ == "__main__":`` (the workers import it).
    """

    def __init__(self, processes: int = 2, params: CRFParams = CRFParams()):
        self.processes = max(1, int(processes))
        self.params = params
        self._pool = pool_context().Pool(self.processes) if self.processes > 1 else None
        self._closed = False

    @classmethod
    def from_config(cls, seg_cfg: Any) -> "CRFPool":
        """``CRFPool(seg_cfg.crf_processes, CRFParams.from_config(seg_cfg))``."""
        return cls(seg_cfg.crf_processes, CRFParams.from_config(seg_cfg))

    def _prepare(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                 labels: Sequence[Sequence[int] | None] | None, scale: float | Sequence[float]) -> list[tuple]:
        """Validate every input (ValueError naming the image's index); one job per image."""
        if self._closed:
            raise ValueError("CRFPool is closed")
        if labels is None:
            labels = [None] * len(images)
        scales = [scale] * len(images) if isinstance(scale, (int, float, np.number)) else list(scale)
        if not len(images) == len(probs) == len(labels) == len(scales):
            raise ValueError(f"{len(images)} images, {len(probs)} probability maps, {len(labels)} label lists "
                             f"and {len(scales)} scales; expected one of each per image")
        jobs = []
        for i, (image, prob, lab, s) in enumerate(zip(images, probs, labels, scales)):
            try:
                selected = _check_inputs(image, prob, lab, s)
            except ValueError as e:
                raise ValueError(f"image {i} of the batch: {e}") from None
            prob = np.asarray(prob)
            task = None if len(selected) == 1 else (image, _selected(prob, selected), float(s), self.params)
            jobs.append((task, selected, prob.shape))
        return jobs

    def _chunksize(self, n: int) -> int:
        # One image per task: the IPC of a task (well under a millisecond) is small against one CRF
        # (several ms even on a 32x32 grid), and single tasks balance uneven images best.
        return 1

    def map(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
            labels: Sequence[Sequence[int] | None] | None = None,
            scale: float | Sequence[float] = 1.0) -> list[np.ndarray]:
        """:func:`dense_crf` of each (image, probs, labels) triple, in order; ``scale``: one ``s`` for all, or one per image."""
        return self.map_async(images, probs, labels, scale).get()

    def map_async(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                  labels: Sequence[Sequence[int] | None] | None = None,
                  scale: float | Sequence[float] = 1.0) -> Any:
        """Like :meth:`map`, returning at once an object whose ``.get()`` gives the list (inline: computed now).

        Only the selected planes travel to the workers and back; the full (L, H, W) arrays are
        assembled in the calling process by ``.get()``.
        """
        jobs = self._prepare(images, probs, labels, scale)
        tasks = [task for task, _, _ in jobs if task is not None]
        if self._pool is None:
            return _Ready(jobs, [_crf_task(t) for t in tasks])
        return _Pending(jobs, self._pool.map_async(_crf_task, tasks, chunksize=self._chunksize(len(tasks))))

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty inline), e.g. to account their CPU time."""
        if self._pool is None or self._closed:
            return []
        return [proc.pid for proc in self._pool._pool if proc.pid is not None]  # noqa: SLF001

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
