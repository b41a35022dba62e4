"""Writing a PASCAL VOC 2012 test-server submission (docs/method.md §7); its layout and reading it are in
:mod:`eval.submission`.

:func:`write_submission` checks every prediction first (errors name the file and what was
expected), writes the folder layout and the tarball, both atomically per file. The tarball is
deterministic (members sorted, fixed mtime, owner and gzip header), so a rerun on the same
predictions is byte-identical, and is validated after writing.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from sharpen_core.errors import DatasetError
from data.io import encode_palette_png
from sharpen_core.io import atomic_path, write_bytes_atomic
from data.voc import VOCSegmentation
from eval.prediction_files import check_prediction, decode_label_png
from eval.submission import SUBMISSION_SUBDIR, subdir_parents, image_size, validate_submission

TAR_MTIME = 1_325_376_000  # 2012-01-01 00:00:00 UTC: a fixed member time, so the tarball is reproducible


def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = 0 if directory else size
    info.mtime = TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_submission(files: Iterable[tuple[str, bytes]], out_path: str | Path) -> Path:
    """Write ``(id, png bytes)`` as a deterministic ``.tar.gz`` of ``SUBMISSION_SUBDIR/<id>.png``, atomically."""
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for d in subdir_parents(SUBMISSION_SUBDIR):
                tar.addfile(_tar_info(d, directory=True))
            for image_id, payload in sorted(files):
                tar.addfile(_tar_info(f"{SUBMISSION_SUBDIR}/{image_id}.png", len(payload)), io.BytesIO(payload))
    return out_path


def write_submission(pred_dir: str | Path, dataset: VOCSegmentation, out_dir: str | Path, name: str = "results",
                     progress: bool = False) -> Path:
    """Write the test-server layout of ``pred_dir/<id>.png`` for every image of ``dataset``; return the tarball.

    Writes ``out_dir/results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` (re-encoded as VOC
    palette PNGs; stale PNGs of other ids there are removed) and ``out_dir/<name>.tar.gz`` of the
    same. Every image of the split must have its prediction, the image's size, values 0-20 and no
    255, else DatasetError naming the file; nothing is written then.
    """
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    if not pred_dir.is_dir():
        raise DatasetError(pred_dir, "prediction folder not found; expected one <id>.png per image of the split")
    payloads: list[tuple[str, bytes]] = []
    for image_id in tqdm(dataset.ids, desc=f"check {dataset.split} predictions", disable=not progress, leave=False):
        f = pred_dir / f"{image_id}.png"
        if not f.is_file():
            raise DatasetError(f, f"prediction missing; expected one <id>.png per image of split {dataset.split!r} "
                                  f"({len(dataset)} images)")
        pred = check_prediction(decode_label_png(f, f), image_size(dataset, image_id), dataset.num_classes, f)
        payloads.append((image_id, encode_palette_png(pred)))
    folder = out_dir / SUBMISSION_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {i for i, _ in payloads}
    for stale in folder.glob("*.png"):
        if stale.stem not in wanted:
            stale.unlink()
    for image_id, payload in payloads:
        target = folder / f"{image_id}.png"
        if not (target.is_file() and target.read_bytes() == payload):
            write_bytes_atomic(target, payload)
    tarball = pack_submission(payloads, out_dir / f"{name}.tar.gz")
    validate_submission(tarball, dataset)
    return tarball
