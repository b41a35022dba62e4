"""One writer per output folder (sharpen_core.lock): a second writer is refused at once with a message
naming the holder, the kernel frees the lock when the holder dies, cue shards lock side by side.

The unit tests hold a lock in a small helper process; the ``slow`` ones start real ``sharpen`` runs.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from runs import copy_finished_stages, report_rows, run_args, wait_for

from sharpen_core.errors import UserError
from pipeline.cli import main
from sharpen_core import lock as lockmod
from sharpen_core.lock import LOCK_NAME, FolderLockedError, folder_lock, shard_lock_name

REPO = Path(__file__).resolve().parent.parent
SHARPEN = str(Path(sys.executable).parent / "sharpen")
HOLDER = """\
import os, sys, time
from sharpen_core.lock import folder_lock
shard = tuple(int(v) for v in sys.argv[2].split("/")) if sys.argv[2:] and sys.argv[2] != "fork" else None
with folder_lock(sys.argv[1], shard=shard):
    if "fork" in sys.argv:  # a child that outlives the holder (e.g. a CRF process)
        child = os.fork()
        if child == 0:  # written by the child once it runs, i.e. after its at-fork handlers (no race)
            open(sys.argv[1] + ".child.tmp", "w").write(str(os.getpid()))
            os.replace(sys.argv[1] + ".child.tmp", sys.argv[1] + ".child")
            time.sleep(600)
            os._exit(0)
        while not os.path.exists(sys.argv[1] + ".child"):
            time.sleep(0.01)
    print("held", flush=True)
    time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture
def hold(tmp_path):
    """``hold(folder, shard=None)``: a helper process holding the folder's lock until the test ends."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    procs: list[subprocess.Popen] = []

    def start(folder: Path, shard: str | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), str(folder), *([shard] if shard else [])],
                                stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_writer_is_refused_at_once_naming_the_holder(hold, tmp_path):
    folder = tmp_path / "out"
    holder = hold(folder)
    t0 = time.perf_counter()
    with pytest.raises(FolderLockedError) as info:
        with folder_lock(folder, hint="--run-dir"):
            pytest.fail("a second writer got the lock")
    assert time.perf_counter() - t0 < 5.0  # refused, not waiting for the holder
    message = str(info.value)
    assert isinstance(info.value, UserError)  # the CLI's exit status 2, one line
    assert "\n" not in message
    assert message.startswith(f"{folder}: another process is writing this folder (pid {holder.pid} on ")
    assert f"`holder.py {folder}`" in message and ", started 20" in message and " UTC)" in message
    assert message.endswith("wait for it to finish, or use another --run-dir")
    assert info.value.holders[0]["pid"] == holder.pid


def test_lock_is_freed_when_the_holder_is_killed(hold, tmp_path):
    folder = tmp_path / "out"
    holder = hold(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with folder_lock(folder) as held:  # at once: no stale lock
        assert held
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert (folder / LOCK_NAME).read_text() == ""  # no holder recorded after a clean end
    with folder_lock(folder) as held:  # released at the end of the block
        assert held


def test_children_of_a_killed_holder_do_not_keep_its_lock(hold, tmp_path):
    folder = tmp_path / "out"
    holder = hold(folder, "fork")
    child = int(Path(f"{folder}.child").read_text())
    try:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the forked child still runs ...
        with folder_lock(folder) as held:  # ... and does not hold the folder
            assert held
    finally:
        os.kill(child, signal.SIGKILL)


def test_shards_lock_side_by_side(hold, tmp_path):
    folder = tmp_path / "maps"
    shard0 = hold(folder, "0/2")
    with folder_lock(folder, shard=(1, 2)) as held:  # the other shard of the same folder: runs
        assert held
        assert (folder / shard_lock_name(1, 2)).is_file()
    with pytest.raises(FolderLockedError, match=f"writing shard 0/2 of this folder \\(pid {shard0.pid} "):
        with folder_lock(folder, shard=(0, 2)):  # the same shard twice
            pass
    with pytest.raises(FolderLockedError, match=f"writing this folder \\(pid {shard0.pid} "):
        with folder_lock(folder):  # an unsharded writer: refused, naming the shard job
            pass
    whole = hold(tmp_path / "maps2")  # and a shard job into a folder an unsharded writer holds
    with pytest.raises(FolderLockedError, match=f"pid {whole.pid} "):
        with folder_lock(tmp_path / "maps2", shard=(1, 2)):
            pass


def test_torchrun_ranks_other_than_zero_do_not_lock(hold, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    hold(folder)
    monkeypatch.setenv("RANK", "1")  # rank 0 of the same job holds the folder
    with folder_lock(folder) as held:
        assert held is False
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(FolderLockedError):
        with folder_lock(folder):
            pass


def test_file_system_without_locks_warns_once_and_goes_on(tmp_path, monkeypatch, capsys):
    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lockmod.fcntl, "flock", no_locks)
    for _ in range(2):
        with folder_lock(tmp_path / "nfs") as held:
            assert held is False
    err = capsys.readouterr().err
    assert err.count("does not support locks (ENOLCK)") == 1 and str(tmp_path / "nfs") in err


def test_every_writing_command_refuses_a_held_folder(hold, tmp_path, capsys):
    """classify train, segment train, segment predict, cues extract and run: exit 2, one line, the hint."""
    folder = tmp_path / "busy"
    holder = hold(folder)
    config = ["--config", str(REPO / "configs" / "quick.toml"), "--quiet"]
    commands = {
        "--out": [["classify", "train", *config, "--variant", "baseline", "--out", str(folder)],
                  ["segment", "train", *config, "--cues", str(tmp_path / "sec"), "--out", str(folder)],
                  ["segment", "predict", *config, "--checkpoint", str(tmp_path / "c.pt"), "--out", str(folder)]],
        "--out (or another --shard)": [["cues", "extract", *config, "--checkpoint", str(tmp_path / "c.pt"),
                                        "--mechanism", "gradcam", "--out", str(folder)]],
        "--run-dir": [["run", *config, "--run-dir", str(folder)]],
    }
    for hint, argvs in commands.items():
        for argv in argvs:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert err.startswith(f"error: {folder}: another process is writing this folder (pid {holder.pid} ")
            assert err.endswith(f"or use another {hint}\n"), err
    # a shard job is refused by its own shard's holder only
    shard = hold(tmp_path / "maps", "1/2")
    extract = ["cues", "extract", *config, "--checkpoint", str(tmp_path / "c.pt"), "--mechanism", "gradcam",
               "--out", str(tmp_path / "maps")]
    assert main([*extract, "--shard", "1/2"]) == 2
    assert f"writing shard 1/2 of this folder (pid {shard.pid} " in capsys.readouterr().err
    assert main([*extract, "--shard", "0/2"]) == 2  # gets past the lock, then misses its checkpoint
    assert "another process" not in capsys.readouterr().err


def test_a_writer_inside_a_held_folder_is_refused(hold, tmp_path, capsys):
    """The folders above an output folder count: a stage writing into a run another process holds is refused,
    with no folder or lock file made; a folder this process holds itself (`sharpen run` calling a stage) is not."""
    run = tmp_path / "runs" / "demo"
    holder = hold(run)
    inner = run / "segment" / "x"
    with pytest.raises(FolderLockedError) as info:
        with folder_lock(inner):
            pytest.fail("a writer inside a held folder got its lock")
    assert info.value.path == inner and info.value.held == run and info.value.holders[0]["pid"] == holder.pid
    assert not (run / "segment").exists()  # refused before anything was made
    assert not (tmp_path / "runs" / LOCK_NAME).exists()  # no lock files made in the folders above
    config = ["--config", str(REPO / "configs" / "quick.toml"), "--quiet"]
    assert main(["segment", "train", *config, "--supervision", "full", "--out", str(inner)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {inner}: inside {run}, which another process is writing (pid {holder.pid} on ")
    assert err.endswith("; wait for it to finish, or use another --out\n"), err
    # beside the held folder (not inside): not refused
    with folder_lock(tmp_path / "runs" / "other" / "x") as held:
        assert held
    # a shard job's folder counts for the folders inside it too (cues sec writes MAPS/sec)
    shard = hold(tmp_path / "maps", "0/2")
    with pytest.raises(FolderLockedError, match=f"inside {tmp_path / 'maps'}, which another process is writing "
                                                f"\\(pid {shard.pid} "):
        with folder_lock(tmp_path / "maps" / "sec"):
            pass


def test_a_folder_held_by_this_process_does_not_refuse_its_own_stages(tmp_path):
    run = tmp_path / "run"
    with folder_lock(run, hint="--run-dir") as outer:  # as `sharpen run` does, then calls a stage in-process
        assert outer
        with folder_lock(run / "classify" / "baseline") as inner:
            assert inner
        lockmod.refuse_if_held(run / "classify" / "icasc")
        lockmod.refuse_file_if_held(run / "report.json", hint="--json")


def test_every_command_that_writes_takes_the_lock(hold, tmp_path, capsys, tiny_voc):
    """data build, cues sec, cues evaluate, report: the folder they write; --json / show --out files: the
    folder the file goes to. A reader of a held folder that writes elsewhere runs."""
    busy = tmp_path / "busy"
    holder = hold(busy)
    config = ["--config", str(REPO / "configs" / "quick.toml"), "--quiet"]
    own = f"error: {busy}: another process is writing this folder (pid {holder.pid} "
    inside = f"which another process is writing (pid {holder.pid} "
    commands = [
        (["data", "build", "--out", str(busy), "--size", "small", "--quiet"], own, "--out"),
        (["cues", "sec", *config, "--maps", str(busy)], f"error: {busy / 'sec'}: inside {busy}, " + inside, "--out"),
        (["cues", "evaluate", *config, "--maps", str(busy)], f"error: {busy / 'quality'}: inside {busy}, " + inside,
         "--out"),
        (["report", "--run-dir", str(busy)], own, "--run-dir"),
        (["data", "stats", "--root", str(tiny_voc), "--json", str(busy / "s.json"), "--quiet"],
         f"error: {busy / 's.json'}: inside {busy}, " + inside, "--json"),
        (["data", "check", "--root", str(tiny_voc), "--json", str(busy / "c.json"), "--quiet"],
         f"error: {busy / 'c.json'}: inside {busy}, " + inside, "--json"),
        (["eval", "segmentation", "--pred", str(tmp_path), "--root", str(tiny_voc), "--json",
          str(busy / "e.json"), "--quiet"], f"error: {busy / 'e.json'}: inside {busy}, " + inside, "--json"),
        (["cues", "evaluate", *config, "--maps", str(tmp_path), "--json", str(busy / "q.json")],
         f"error: {busy / 'q.json'}: inside {busy}, " + inside, "--json"),
        (["cues", "show", *config, "--maps", str(tmp_path), "--out", str(busy / "grid.png")],
         f"error: {busy / 'grid.png'}: inside {busy}, " + inside, "--out"),
        (["classify", "evaluate", *config, "--checkpoint", str(busy / "checkpoint.pt")],
         f"error: {busy / 'evaluation_val.json'}: inside {busy}, " + inside, "--json"),
    ]
    for argv, start, hint in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1, (argv, err)
        assert err.startswith(start), (argv, err)
        assert err.endswith(f"; wait for it to finish, or use another {hint}\n"), (argv, err)
    assert sorted(p.name for p in busy.iterdir()) == [LOCK_NAME]  # none of them wrote anything
    # readers of the held folder that write elsewhere (or nothing) are not refused
    data = tmp_path / "data"
    hold(data)
    import shutil

    shutil.copytree(tiny_voc, data, dirs_exist_ok=True)
    assert main(["data", "stats", "--root", str(data), "--json", str(tmp_path / "stats.json"), "--quiet"]) == 0
    assert (tmp_path / "stats.json").is_file()
    assert main(["data", "check", "--root", str(data), "--quiet"]) == 0
    capsys.readouterr()


# --------------------------------------------------------------------------- real runs (slow)

def _holder_pid(folder: Path) -> int | None:
    try:
        return json.loads((folder / LOCK_NAME).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def _wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.perf_counter()
    while _holder_pid(folder) != proc.pid:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before it took the lock"
        assert time.perf_counter() - t0 < timeout, f"no lock in {folder} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_second_run_on_a_folder_is_refused_and_the_first_finishes_as_alone(quick_run, tmp_path):
    ref_dir, data_root, _ = quick_run
    run_dir = tmp_path / "run"
    copy_finished_stages(ref_dir, run_dir, "segment")  # the first run has predict and report left to do
    first = subprocess.Popen([SHARPEN, *run_args(run_dir, data_root)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO, start_new_session=True)
    try:
        _wait_for_lock(run_dir, first)
        t0 = time.perf_counter()
        second = subprocess.run([SHARPEN, *run_args(run_dir, data_root)], capture_output=True, text=True,
                                env=_env(), cwd=REPO, timeout=120)
        seconds = time.perf_counter() - t0
        assert first.poll() is None, "the first run ended before the second was refused"
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    print(f"second run refused after {seconds:.1f} s: {second.stderr.strip()}")
    assert second.returncode == 2 and second.stdout == ""
    assert second.stderr.count("\n") == 1
    assert second.stderr.startswith(f"error: {run_dir}: another process is writing this folder "
                                     f"(pid {first.pid} on ")
    assert "`sharpen run --config configs/quick.toml" in second.stderr
    assert second.stderr.endswith("wait for it to finish, or use another --run-dir\n")
    assert seconds < 60  # the time to start Python and import the command line; nothing waits for the lock
    assert first.returncode == 0, err[-3000:]
    assert "[5/6] predict\n" in out and "[6/6] report\n" in out  # the first run did the work
    ref = json.loads((ref_dir / "report.json").read_text())
    got = json.loads((run_dir / "report.json").read_text())
    assert report_rows(got) == report_rows(ref)
    assert got["full_supervision_miou_crf"] == ref["full_supervision_miou_crf"]
    assert got["submission"]["test_miou"] == ref["submission"]["test_miou"]


@pytest.mark.slow
def test_killed_holder_leaves_no_lock_and_the_next_run_resumes(quick_run, tmp_path):
    ref_dir, data_root, _ = quick_run
    run_dir = tmp_path / "run"
    copy_finished_stages(ref_dir, run_dir, "segment")
    first = subprocess.Popen([SHARPEN, *run_args(run_dir, data_root)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=_env(), cwd=REPO, start_new_session=True)
    val = run_dir / "predict" / "baseline-gradcam" / "val"
    try:  # kill -9 in the middle of the predict stage: some images of the first segmenter predicted
        _wait_for_lock(run_dir, first)
        wait_for((val / "pred_crf", "*.png"), first, 1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (run_dir / "stages" / "predict.json").exists()
    # images with both outputs are done (with and without CRF); a resumed run keeps them
    done = [p.name for p in (val / "pred_crf").glob("*.png") if (val / "pred" / p.name).is_file()]
    kept = {f"{sub}/{n}": (val / sub / n).stat().st_mtime_ns for n in done for sub in ("pred", "pred_crf")}
    assert kept
    assert main(run_args(run_dir, data_root)) == 0  # not refused: the kernel dropped the killed run's lock
    assert {k: (val / k).stat().st_mtime_ns for k in kept} == kept  # resumed, not redone
    ref = json.loads((ref_dir / "report.json").read_text())
    got = json.loads((run_dir / "report.json").read_text())
    assert report_rows(got) == report_rows(ref)
    assert got["submission"]["test_miou"] == ref["submission"]["test_miou"]


@pytest.mark.slow
def test_two_cue_shards_side_by_side_equal_one_extraction(builtin_small, tmp_path):
    import torch

    from sharpen_attention.classifiers import build_classifier
    from cues.extract import load_maps

    torch.manual_seed(0)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"arch": "resnet18", "num_classes": 20, "variant": "baseline",
                "model": build_classifier("resnet18", 20).state_dict()}, checkpoint)
    args = ["cues", "extract", "--config", str(REPO / "configs" / "quick.toml"), "--checkpoint", str(checkpoint),
            "--mechanism", "gradcampp", "--split", "val", "--quiet", "--set", f"data.root={builtin_small[0]}",
            "--set", "run.device=cpu"]
    sharded = tmp_path / "sharded"
    jobs = [subprocess.Popen([SHARPEN, *args, "--out", str(sharded), "--shard", f"{i}/2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO) for i in range(2)]
    results = [job.communicate(timeout=300) for job in jobs]
    for job, (_, err) in zip(jobs, results):
        assert job.returncode == 0, err[-3000:]
    # the whole extraction in a process set up as the shards' (one torch thread): this process's thread
    # count depends on the tests that ran before, and float16 maps can differ in the last bit across it
    whole = subprocess.run([SHARPEN, *args, "--out", str(tmp_path / "whole")], capture_output=True, text=True,
                           env=_env(), cwd=REPO, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    for i in range(2):
        record = json.loads((sharded / f"extract_run.shard-{i}-of-2.json").read_text())
        assert record["images_in_shard"] == record["extracted"] == 24  # 48 val images, none done twice
    files = sorted(p.name for p in (sharded / "maps").glob("*.npz"))
    assert files == sorted(p.name for p in (tmp_path / "whole" / "maps").glob("*.npz")) and len(files) == 48
    for name in files:
        a, b = load_maps(sharded / "maps" / name), load_maps(tmp_path / "whole" / "maps" / name)
        assert np.array_equal(a["maps"], b["maps"]) and np.array_equal(a["classes"], b["classes"]), name
