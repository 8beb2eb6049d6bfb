"""Hostile input: the corpus in tests/hostile/corpus.py (files for the indexer, arguments for
the process that serves searches, and command lines). Each case gets one clear line, the
serving process never crashes, and nothing already indexed changes."""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

import engine
from conftest import SMALL_SCENES, write_tif
from engine.check import check_index
from engine.errors import GLBError
from hostile.corpus import FILES, QUERIES
from hostile.tools import ROOT, diff_states, digest, read_state
from indexer.runner import IndexOptions, run_index

REPORT = os.environ.get("GLB_RELIABILITY_REPORT")


def _append_report(key, value):
    p = Path(REPORT)
    data = json.loads(p.read_text()) if p.exists() else {}
    data[key] = value
    p.write_text(json.dumps(data, indent=1, default=str))


@pytest.fixture
def hang_guard():
    """A case that blocks (a FIFO, a network source) must fail the run, not hang CI forever."""
    faulthandler.dump_traceback_later(900, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _make_corpus(root: Path):
    cases = [c for c in FILES() if not (c.posix_only and os.name != "posix")]
    made = []
    for c in cases:
        d = root / c.name
        d.mkdir(parents=True)
        c.make(d)
        made.append((c, d))
    return made


@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy warnings must not reach a terminal
def test_hostile_files_fail_alone_and_change_nothing(index_copy, tmp_path, encoder, hang_guard):
    made = _make_corpus(tmp_path / "corpus")
    assert len(made) >= 30
    before = read_state(index_copy)
    seg_before = {p.name: digest(p) for p in (index_copy / "segments").iterdir()}
    groups: dict[tuple, list] = {}
    for c, d in made:
        groups.setdefault(tuple(sorted(c.override.items())), []).append((c, d))
    failed: list[str] = []
    for override, items in groups.items():
        r = run_index([d for _, d in items], index_copy, encoder=encoder, override=dict(override),
                      options=IndexOptions(progress=False), echo=lambda m: None)
        failed += r.failed
    scenes = engine.open(index_copy).scenes()
    results, wrong = [], []
    for c, d in made:
        lines = [f for f in failed if f"/{c.name}/" in f]
        rec = scenes[scenes.path.str.contains(f"/{c.name}/", regex=False)]
        n = int(rec.n_tiles.iloc[0]) if len(rec) else None
        got = "fail" if lines else ("empty" if n == 0 else "ok" if n else "missing")
        line = lines[0] if lines else ""
        ok = got == c.outcome
        if c.outcome == "fail":
            ok &= len(lines) == 1 and c.match in line and len(rec) == 0 and "unexpected" not in line
        results.append({"case": c.name, "what": c.what, "want": c.outcome, "got": got,
                        "line": line[len(str(d)) + 1:][:200] if line else f"{n} tiles", "ok": ok})
        if not ok:
            wrong.append(f"{c.name}: want {c.outcome} ({c.match}), got {got}: {lines or n}")
    if REPORT:
        _append_report("hostile_files", results)
    assert not wrong, "\n".join(wrong)
    # nothing already indexed changed: the old segments are byte for byte the same, the old
    # scenes keep exactly their tiles and vectors, and the index is sound and searchable
    for name, files in seg_before.items():
        assert digest(index_copy / "segments" / name) == files
    after = read_state(index_copy)
    assert diff_states(before, after, subset=True) == []
    assert check_index(index_copy)[0] == []
    assert len(engine.Index(index_copy, encoder=encoder).search("river", k=5)) == 5


def test_hostile_files_through_the_command_line(tmp_path, hang_guard):
    """The same corpus through `glb index`: exit status 1, exactly one stderr line per bad
    file (a newline in a file name is escaped), no traceback, no internal error."""
    made = _make_corpus(tmp_path / "corpus")
    r = subprocess.run([sys.executable, "-m", "glb", "index", str(tmp_path / "corpus"), "--index",
                        str(tmp_path / "index"), "--quiet"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 1, r.stderr[-3000:]
    err = [x for x in r.stderr.splitlines() if x.strip() and "UNTRAINED" not in x]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    failed = [x for x in err if x.startswith("glb index: failed: ")]
    assert len(failed) == len(err), [x for x in err if not x.startswith("glb index: failed: ")]
    for c, d in made:
        if c.outcome == "fail" and not c.override:
            mine = [x for x in failed if f"/{c.name}/" in x]
            assert len(mine) == 1, (c.name, mine)
    assert any("new\\nline\\x1b[31m.tif" in x for x in failed)


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_index, encoder):
    """A private copy of the small index plus a scene across the antimeridian, opened once
    for the whole module (the long-lived serving process)."""
    from rasterio.transform import from_origin

    path = tmp_path_factory.mktemp("served") / "index"
    shutil.copytree(small_index, path)
    data = np.random.default_rng(0).integers(0, 255, (3, 128, 128), dtype=np.uint8)
    am = write_tif(tmp_path_factory.mktemp("am") / "am.tif", data, crs="EPSG:32660",
                   transform=from_origin(690000, 5540000, 1000, 1000), photometric="RGB")
    r = run_index([am], path, encoder=encoder, options=IndexOptions(progress=False), echo=lambda m: None)
    assert r.ok
    idx = engine.Index(path, encoder=encoder)
    fp = idx.footprints()
    c = fp.geometry.iloc[0].centroid
    ctx = {"antimeridian_box": shapely.union(shapely.box(170, -60, 180, 60), shapely.box(-180, -60, -170, 60)),
           "point_box": (c.x, c.y, c.x, c.y)}
    return path, idx, ctx


OPEN: dict = {}  # cases known to fail, with a strict xfail marker (none at present)


@pytest.mark.parametrize("case", [pytest.param(c, marks=OPEN.get(c.name, ())) for c in QUERIES()],
                         ids=lambda c: c.name)
def test_hostile_queries_get_a_clear_error_and_change_nothing(served, case):
    path, idx, ctx = served
    before = digest(path)
    if case.match is None:
        res = case.call(idx, ctx)
        assert case.check(res, ctx), case.name
    else:
        with pytest.raises(GLBError) as e:
            case.call(idx, ctx)
        msg = str(e.value)
        assert case.match in msg, msg
        assert "\n" not in msg and 0 < len(msg) < 500, msg
    assert len(idx.search("river", k=3)) == 3  # the serving process goes on
    assert digest(path) == before


def test_the_query_corpus_is_large_enough():
    assert len(QUERIES()) + len(FILES()) >= 60
    assert len(FILES()) >= 30 and len(QUERIES()) >= 30


def _cli(argv, capsys):
    from glb.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: bad option types
        rc = e.code
    out = capsys.readouterr()
    return rc, [x for x in out.err.splitlines() if x.strip() and "UNTRAINED" not in x]


CLI_CASES = [
    (["search", "\udcff\udcfe river"], "not valid UTF-8"),
    (["search", "river", "--bbox", "0,0,1,1); DROP TABLE tiles;--"], "4 numbers"),
    (["search", "river", "--start", "2020-01-01'; DROP TABLE tiles;--"], "not a date"),
    (["search", "river", "--sensor", "x' OR 1=1 --"], "not a sensor"),
    (["search", "river", "--region", "POLYGON((0 0,1 0,1 1,0 0)); DROP TABLE tiles"], "region"),
    (["search", "river", "--k", "-5"], "positive"),
    (["search", "", ], "empty"),
    (["search", "river", "--tile-id", "99999999999"], "not in this index"),
    (["search", "--image", "../../../../../../etc/passwd"], "not a readable raster"),
    (["search", "--image", "/dev/zero"], "not a regular file"),
]


@pytest.mark.parametrize("argv, match", CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_hostile_command_lines_exit_2_with_one_line(served, argv, match, capsys):
    path, _, _ = served
    before = digest(path)
    rc, err = _cli([*argv, "--index", path], capsys)
    assert rc == 2, err
    assert len(err) == 1 and match in err[0] and "internal error" not in err[0], err
    assert digest(path) == before


def test_hostile_index_arguments(tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("not an index")
    scene = SMALL_SCENES[-1]
    cases = [
        (["index", scene, "--index", f], "is a file, not an index folder"),
        (["index", scene, "--index", "/proc/version/x"], "cannot write here"),
        (["index", scene, "--index", tmp_path / "i", "--stride", "0"], "--stride"),
        (["index", scene, "--index", tmp_path / "i", "--tile-size", "8"], "--tile-size"),
        (["index", scene, "--index", tmp_path / "i", "--max-nodata", "nan"], "--max-nodata"),
        (["index", scene, "--index", tmp_path / "i", "--wavelengths", "abc"], "--wavelengths"),
        (["index", scene, "--index", tmp_path / "i", "--sensor", "naip'; DROP TABLE tiles; --"], "unknown sensor"),
        (["search", "river", "--index", "../../../../etc/passwd"], "no index here"),
        (["check", "--index", "/etc"], "no CURRENT"),
    ]
    for argv, match in cases:
        rc, err = _cli(argv, capsys)
        assert rc in (1, 2), (argv, rc, err)
        assert any(match in x for x in err) and len(err) == 1, (argv, err)
    assert f.read_text() == "not an index" and not (tmp_path / "i").exists()


def test_a_tampered_current_cannot_lead_outside_the_index(index_copy, capsys):
    """CURRENT and manifests are files anyone may edit: names in them never leave the index."""
    (index_copy / "CURRENT").write_text("../../../../etc/passwd\n")
    with pytest.raises(GLBError, match="does not name a manifest"):
        engine.Index(index_copy)
    rc, err = _cli(["check", "--index", index_copy], capsys)
    assert rc == 1 and "does not name a manifest" in err[0]
    name = sorted((index_copy / "manifests").glob("*.json"))[-1]
    (index_copy / "CURRENT").write_text(name.name + "\n")
    m = json.loads(name.read_text())
    m["segments"][0]["name"] = "../../../../etc"
    name.write_text(json.dumps(m))
    with pytest.raises(GLBError, match="bad segment name"):
        engine.Index(index_copy)
