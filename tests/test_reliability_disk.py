"""Disk full and read-only indexes: `glb index` stops with one clear line (exit 2), the
unfinished commit is discarded, and the index that was there passes `glb check` and answers
searches exactly as before.

How each condition is made (see docs/RELIABILITY.md):
- disk full: a 1 MiB-free tmpfs (needs root; skipped otherwise), and RLIMIT_FSIZE (works for
  anyone: writes past the limit fail with EFBIG, Python ignores SIGXFSZ);
- read-only from the start: a read-only bind mount (root), and `chmod a-w` with the writer run
  without CAP_DAC_OVERRIDE (`setpriv`, since root ignores permission bits) or as a normal user;
- read-only while writing: `chmod a-w` on the index while the run is between commits (a
  remount is refused while the writer holds files open: "mount point is busy").
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import engine
from conftest import SCENES, SMALL_SCENES
from engine.check import check_index, leftovers
from engine.store.layout import Layout
from hostile.tools import ROOT, diff_states, digest, glb_cmd, read_state, stop

REPORT = os.environ.get("GLB_RELIABILITY_REPORT")
IS_ROOT = os.geteuid() == 0
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable"]
NAIP = sorted((SCENES / "naip").glob("*.tif"))


def _append_report(key, value):
    p = Path(REPORT)
    data = json.loads(p.read_text()) if p.exists() else {}
    data.setdefault("disk", {})[key] = value
    p.write_text(json.dumps(data, indent=1, default=str))


@lru_cache(maxsize=1)
def can_mount() -> bool:
    if not IS_ROOT or shutil.which("mount") is None:
        return False
    import tempfile

    d = tempfile.mkdtemp()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", d], capture_output=True)
        return ok
    finally:
        os.rmdir(d)


def _unprivileged_prefix() -> list[str] | None:
    """How to run the writer so that permission bits apply to it."""
    if not IS_ROOT:
        return []
    if shutil.which("setpriv") and subprocess.run(DROP_DAC + ["true"], capture_output=True).returncode == 0:
        return DROP_DAC
    return None


def _answers(index: Path, state) -> list:
    """Results of a few fixed searches (vector queries: no model needed)."""
    idx = engine.Index(index)
    out = []
    for tid in sorted(state.vectors)[:: max(1, len(state.vectors) // 4)][:4]:
        r = idx.search(vector=state.vectors[tid], k=10)
        out.append((list(r.tile_id), np.round(r.score.to_numpy(), 6).tolist()))
    return out


def _index_run(index: Path, paths, prefix=(), preexec=None, timeout=900, wait_then=None):
    cmd = list(prefix) + glb_cmd("index", *paths, "--index", index, "--quiet", "--commit-every", "64")
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=preexec, start_new_session=True)
    try:
        if wait_then:
            wait_then(p)
        out, err = p.communicate(timeout=timeout)
    finally:
        stop(p)
    return p.returncode, out, err


def _assert_one_clear_line(rc, err, *words):
    lines = [x for x in err.splitlines() if x.strip() and "UNTRAINED" not in x]
    assert rc == 2, (rc, err[-3000:])
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("glb index: error: "), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def base_built(tmp_path_factory, encoder):
    from indexer.runner import IndexOptions, run_index

    path = tmp_path_factory.mktemp("disk") / "base"
    r = run_index(SMALL_SCENES[2:], path, encoder=encoder, options=IndexOptions(progress=False),
                  echo=lambda m: None)
    assert r.ok
    return path


@pytest.fixture
def base_index(base_built, tmp_path):
    path = tmp_path / "base"
    shutil.copytree(base_built, path)
    return path


def _intact(index: Path, before_state, before_answers, before_digest=None):
    assert check_index(index)[0] == []
    after = read_state(index)
    assert diff_states(after, before_state) == [] and after.generation == before_state.generation
    assert _answers(index, after) == before_answers
    if before_digest is not None:
        assert digest(index) == before_digest
    assert leftovers(Layout(index), after.generation) == []


@pytest.mark.skipif(not can_mount(), reason="needs root and mount (tmpfs)")
def test_disk_full_on_a_small_filesystem(tmp_path, base_index):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    size_kb = int(sum(p.stat().st_size for p in base_index.rglob("*") if p.is_file()) / 1024) + 1024
    assert subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)]).returncode == 0
    try:
        index = mnt / "index"
        shutil.copytree(base_index, index)
        free_before = shutil.disk_usage(mnt).free
        state, answers = read_state(index), _answers(index, read_state(index))
        rc, out, err = _index_run(index, NAIP)
        line = _assert_one_clear_line(rc, err, "No space left on device", "intact at generation "
                                      f"{state.generation}", "again")
        _intact(index, state, answers)
        assert shutil.disk_usage(mnt).free >= free_before - 64 * 1024  # the partial commit is gone
        if REPORT:
            _append_report("enospc_tmpfs", {"tmpfs_kib": size_kb, "free_kib_before": free_before // 1024,
                                            "message": line})
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_file_size_limit_efbig(tmp_path, base_index):
    """RLIMIT_FSIZE: the unprivileged way to make writes fail mid-commit (EFBIG)."""
    index = tmp_path / "index"
    shutil.copytree(base_index, index)
    state, answers = read_state(index), _answers(index, read_state(index))

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))

    rc, out, err = _index_run(index, NAIP[:2], preexec=limit)
    # numpy reports a short write without errno ("N requested and M written"); pyarrow and
    # plain writes say "File too large": either way, one line naming the index
    line = _assert_one_clear_line(rc, err, "cannot write the index", f"intact at generation {state.generation}")
    _intact(index, state, answers)
    if REPORT:
        _append_report("efbig_rlimit", {"limit_kib": 96, "message": line})


@pytest.mark.skipif(not can_mount(), reason="needs root and mount (read-only bind mount)")
def test_read_only_mount(tmp_path, base_index):
    ro = tmp_path / "ro"
    ro.mkdir()
    assert subprocess.run(["mount", "--bind", str(base_index), str(ro)]).returncode == 0
    try:
        assert subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)]).returncode == 0
        state, answers = read_state(base_index), _answers(base_index, read_state(base_index))
        before = digest(base_index)
        rc, out, err = _index_run(ro, SMALL_SCENES[:1])
        line = _assert_one_clear_line(rc, err, "Read-only file system", "read-only")
        _intact(ro, state, answers, before)  # checking and searching a read-only index work
        if REPORT:
            _append_report("read_only_bind_mount", {"message": line})
    finally:
        subprocess.run(["umount", "-l", str(ro)])


def _chmod_tree(path: Path, writable: bool):
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        if writable:
            os.chmod(p, mode | stat.S_IWUSR)
        else:
            os.chmod(p, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.mark.skipif(_unprivileged_prefix() is None, reason="root without setpriv: permission bits cannot apply")
def test_read_only_folder(tmp_path, base_index):
    index = tmp_path / "index"
    shutil.copytree(base_index, index)
    state, answers = read_state(index), _answers(index, read_state(index))
    before = digest(index, exclude=())
    _chmod_tree(index, writable=False)
    try:
        rc, out, err = _index_run(index, SMALL_SCENES[:1], prefix=_unprivileged_prefix())
        line = _assert_one_clear_line(rc, err, "Permission denied", "read-only")
        _intact(index, state, answers)
        assert digest(index, exclude=()) == before  # not even the lock file was touched
    finally:
        _chmod_tree(index, writable=True)
    if REPORT:
        _append_report("read_only_chmod", {"message": line, "how": " ".join(_unprivileged_prefix()) or "non-root"})


@pytest.mark.skipif(_unprivileged_prefix() is None, reason="root without setpriv: permission bits cannot apply")
def test_index_becomes_read_only_while_writing(tmp_path, base_index):
    """The run commits once, then the folder turns read-only: the next commit fails cleanly,
    the first one stays, and a run on the writable folder finishes the job."""
    index = tmp_path / "index"
    shutil.copytree(base_index, index)
    gen0 = read_state(index).generation
    seen = {}

    def lock_down_after_first_commit(p):
        t0 = time.monotonic()
        while p.poll() is None and read_gen(index) == gen0 and time.monotonic() - t0 < 600:
            time.sleep(0.02)
        seen["gen"] = read_gen(index)
        _chmod_tree(index, writable=False)

    try:
        rc, out, err = _index_run(index, NAIP, prefix=_unprivileged_prefix(),
                                  wait_then=lock_down_after_first_commit)
    finally:
        _chmod_tree(index, writable=True)
    gen = read_gen(index)
    line = _assert_one_clear_line(rc, err, "Permission denied", f"intact at generation {gen}")
    assert gen >= gen0 + 1
    assert check_index(index)[0] == []
    st = read_state(index)
    assert 0 < sum(1 for p in st.scenes if "/naip/" in p) < len(NAIP)
    # writable again: the same command completes the job
    rc, out, err = _index_run(index, NAIP)
    assert rc == 0, err[-2000:]
    assert check_index(index)[0] == []
    assert sum(1 for p in read_state(index).scenes if "/naip/" in p) == len(NAIP)
    assert leftovers(Layout(index), read_gen(index)) == []
    if REPORT:
        _append_report("read_only_mid_run", {"message": line, "committed_generation": gen})


def read_gen(index: Path) -> int:
    try:
        return int((index / "CURRENT").read_text()[:9])
    except (OSError, ValueError):
        return 0
