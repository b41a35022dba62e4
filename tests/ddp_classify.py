"""``sharpen classify train`` under torchrun, reporting what each rank holds and writes (a test helper of
tests/test_classify.py, not a test).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_classify.py REPORT_DIR ARGS...

runs ``pipeline.cli.main(ARGS)`` in every process unchanged, watching two things from outside: the
training state each rank built (``classify.train.set_up_training``'s result, whose model the run trains
in place) and every file a rank renamed into place (``os.replace``: the project's atomic writes). Each
rank then saves ``REPORT_DIR/rank<r>.pt``: its rank and world size as the run saw them, its final
weights, and the files it wrote.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    import torch
    import torch.distributed as dist

    import classify.train
    from pipeline.cli import main as sharpen
    from sharpen_core.checkpoints import unwrap

    report_dir, argv = Path(sys.argv[1]), sys.argv[2:]
    seen: dict = {}
    written: list[str] = []
    set_up, replace = classify.train.set_up_training, os.replace

    def watched_set_up(*args, **kwargs):
        seen["training"] = set_up(*args, **kwargs)
        return seen["training"]

    def watched_replace(src, dst, *args, **kwargs):
        written.append(str(Path(dst).resolve()))
        return replace(src, dst, *args, **kwargs)

    classify.train.set_up_training = watched_set_up
    os.replace = watched_replace
    try:
        rc = sharpen(argv)
    finally:
        os.replace, classify.train.set_up_training = replace, set_up
    t = seen["training"]
    report_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"rank": t.dist_info.rank, "world_size": t.dist_info.world_size, "rc": rc, "written": written,
                "weights": {k: v.detach().cpu() for k, v in unwrap(t.model).state_dict().items()}},
               report_dir / f"rank{t.dist_info.rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()
    return rc


if __name__ == "__main__":
    sys.exit(main())
