"""PASCAL VOC 2012 test-server submissions (SPEC §7): write, validate, read.

Layout: ``results/VOC2012/Segmentation/comp6_test_cls/<image id>.png``, one palette PNG per
image of the split, the image's size, values 0-20 only (no 255: the server wants a class at
every pixel), packed as a ``.tar.gz`` of ``results/`` ("comp6": trained with data beyond VOC,
e.g. ImageNet weights).

:func:`write_submission` checks every prediction first (errors name the file and what was
expected), writes the folder layout and the tarball, both atomically per file. The tarball is
deterministic (members sorted, fixed mtime, owner and gzip header), so a rerun on the same
predictions is byte-identical. :func:`validate_submission` and :func:`read_submission` accept the
tarball or a folder holding ``results/``; a malformed one raises DatasetError naming the member.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.classes import NUM_CLASSES
from data.errors import DatasetError
from data.io import atomic_path, encode_palette_png, write_bytes_atomic
from data.voc import VOCSegmentation
from eval.predictions import check_prediction, decode_label_png

SUBMISSION_SUBDIR = "results/VOC2012/Segmentation/comp6_test_cls"
"""Where the PNGs go, relative to the folder that is packed."""

TAR_MTIME = 1_325_376_000  # 2012-01-01 00:00:00 UTC: a fixed member time, so the tarball is reproducible
MAX_MEMBER_BYTES = 64 << 20  # a PNG label map of a VOC image is a few KiB; refuse absurd members


def _parents(subdir: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b", "a/b/c"]``: the directory members of the tarball."""
    parts = PurePosixPath(subdir).parts
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def image_size(dataset: VOCSegmentation, image_id: str) -> tuple[int, int]:
    """(H, W) of an image of ``dataset``, from the file header (no decoding)."""
    path = dataset.image_path(image_id)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(path, f"corrupt or unreadable image ({e})") from None
    return h, w


# --------------------------------------------------------------------------- reading

def _folder_root(path: Path) -> Path:
    """The ``comp6_test_cls`` folder of a submission folder (``path`` holds ``results/``, or is it)."""
    if (path / SUBMISSION_SUBDIR).is_dir():
        return path / SUBMISSION_SUBDIR
    if path.name == PurePosixPath(SUBMISSION_SUBDIR).name and path.is_dir():
        return path
    raise DatasetError(path, f"not a submission folder; expected {SUBMISSION_SUBDIR}/<id>.png inside it")


def iter_submission(path: str | Path) -> Iterator[tuple[str, np.ndarray, Path, str | None]]:
    """Each image of a submission: ``(id, labels (H, W) uint8, file, member)``, decoded but not yet checked.

    ``path`` is the tarball or a folder; ``member`` is the name inside the tarball (None for a
    folder, where ``file`` is the PNG itself). Anything but ``SUBMISSION_SUBDIR/<id>.png`` files
    (and the directories above them) is an error naming it, as is an id given twice.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(path, "submission not found; expected a .tar.gz or a folder holding results/")
    seen: set[str] = set()
    if path.is_dir():
        folder = _folder_root(path)
        for f in sorted(folder.iterdir()):
            if not (f.is_file() and f.suffix == ".png" and not f.name.startswith(".")):
                raise DatasetError(f, f"unexpected entry in the submission; expected only <id>.png files in "
                                      f"{SUBMISSION_SUBDIR}/")
            yield f.stem, decode_label_png(f, f), f, None
        return
    allowed_dirs = set(_parents(SUBMISSION_SUBDIR))
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(path, f"not a readable tar archive ({e}); expected the .tar.gz of {SUBMISSION_SUBDIR}/"
                                 f"<id>.png written by `sharpen segment predict --submission`") from None
    with tar:
        try:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                name = name.rstrip("/")
                if member.isdir() and (name in allowed_dirs or name in ("", ".")):
                    continue
                rel = PurePosixPath(name)
                if not member.isfile() or str(rel.parent) != SUBMISSION_SUBDIR or rel.suffix != ".png":
                    raise DatasetError(path, f"member {member.name}: unexpected entry; expected only "
                                             f"{SUBMISSION_SUBDIR}/<id>.png files (and their folders)")
                if member.size > MAX_MEMBER_BYTES:
                    raise DatasetError(path, f"member {member.name}: {member.size} bytes; expected a label PNG "
                                             f"of at most {MAX_MEMBER_BYTES} bytes")
                image_id = rel.stem
                if image_id in seen:
                    raise DatasetError(path, f"member {member.name}: image id {image_id!r} appears twice")
                seen.add(image_id)
                fobj = tar.extractfile(member)
                data = fobj.read() if fobj is not None else b""
                yield image_id, decode_label_png(data, path, member.name), path, member.name
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DatasetError(path, f"corrupt tar archive ({e}); expected the .tar.gz of {SUBMISSION_SUBDIR}/"
                                     "<id>.png") from None


def scan_submission(path: str | Path, ids: Sequence[str], shape_of: Callable[[str], tuple[int, int]],
                    num_classes: int = NUM_CLASSES, split: str = "test") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(id, labels)`` of a submission, each checked against the split as the server would.

    Every member must be an image of ``ids`` (an extra id is an error), of size ``shape_of(id)``,
    with values ``0..num_classes-1`` only; after the last one, a missing id is an error.
    """
    path = Path(path)
    known = set(ids)
    seen: set[str] = set()
    for image_id, pred, where, member in iter_submission(path):
        if image_id not in known:
            raise DatasetError(where, (f"member {member}: " if member else "") +
                               f"image id {image_id!r} is not in split {split!r}; expected only its {len(known)} "
                               "images")
        seen.add(image_id)
        yield image_id, check_prediction(pred, shape_of(image_id), num_classes, where, member)
    missing = [i for i in ids if i not in seen]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(path, f"{SUBMISSION_SUBDIR}/{missing[0]}.png missing: {len(missing)} of the "
                                 f"{len(ids)} images of split {split!r} have no prediction ({shown}); expected "
                                 "one PNG per image")


def validate_submission(path: str | Path, dataset: VOCSegmentation) -> dict[str, int | str]:
    """Check a submission (tarball or folder) against ``dataset``'s split; return ``{"path", "split", "images"}``."""
    count = 0
    for _ in scan_submission(path, dataset.ids, lambda i: image_size(dataset, i), dataset.num_classes,
                             dataset.split):
        count += 1
    return {"path": str(path), "split": dataset.split, "images": count}


def read_submission(path: str | Path) -> dict[str, np.ndarray]:
    """Every prediction of a submission (tarball or folder), by image id (structure checked, sizes not)."""
    return {image_id: pred for image_id, pred, _, _ in iter_submission(path)}


# --------------------------------------------------------------------------- writing

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
            for d in _parents(SUBMISSION_SUBDIR):
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
