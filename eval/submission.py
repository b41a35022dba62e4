"""PASCAL VOC 2012 test-server submissions (docs/method.md §7): the layout, validating and reading one.

Layout: ``results/VOC2012/Segmentation/comp6_test_cls/<image id>.png``, one palette PNG per
image of the split, the image's size, values 0-20 only (no 255: the server wants a class at
every pixel), packed as a ``.tar.gz`` of ``results/`` ("comp6": trained with data beyond VOC,
e.g. ImageNet weights).

:func:`validate_submission` and :func:`read_submission` accept the tarball or a folder holding
``results/``; a malformed one raises DatasetError naming the member. Writing one is stage 3's
job (:mod:`segment.submission`).
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from data.classes import NUM_CLASSES
from sharpen_core.errors import DatasetError
from data.voc import VOCSegmentation

from .prediction_files import check_prediction, decode_label_png

SUBMISSION_SUBDIR = "results/VOC2012/Segmentation/comp6_test_cls"
"""Where the PNGs go, relative to the folder that is packed."""

MAX_MEMBER_BYTES = 64 << 20  # a PNG label map of a VOC image is a few KiB; refuse absurd members


def subdir_parents(subdir: str) -> list[str]:
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"


def _one_line(e: BaseException) -> str:
    """An exception's text on one line (tarfile's "could not be opened" lists one line per method)."""
    return "; ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__


def _gzip_problem(path: Path) -> str | None:
    """Why a gzip file does not decompress (truncated, corrupt), or None when it does."""
    try:
        with gzip.open(path, "rb") as g:
            while g.read(1 << 20):
                pass
    except EOFError:
        return "a truncated gzip file (it ends before its end-of-stream marker), not a whole tar archive"
    except (OSError, zlib.error) as e:
        return f"a corrupt gzip file ({_one_line(e)})"
    return None


def not_a_tarball(path: str | Path) -> str:
    """What a file that tarfile cannot open is instead, in a few words (from its first bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file, not a tar archive"
    if head.startswith(PNG_SIGNATURE):
        return "a PNG image, not a tar archive"
    if head.startswith(GZIP_MAGIC):
        return _gzip_problem(path) or "a gzip file whose content is not a tar archive"
    return "not a tar archive (unrecognised content)"


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
    allowed_dirs = set(subdir_parents(SUBMISSION_SUBDIR))
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        raise DatasetError(path, f"{not_a_tarball(path)}; expected the .tar.gz of {SUBMISSION_SUBDIR}/<id>.png "
                                 "written by `sharpen segment predict --submission`") from None
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
            problem = (_gzip_problem(path) if tar.fileobj is not None and isinstance(e, (EOFError, zlib.error, OSError))
                       else None) or f"corrupt tar archive ({_one_line(e)})"
            raise DatasetError(path, f"{problem}; expected the .tar.gz of {SUBMISSION_SUBDIR}/<id>.png") from None


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
