"""Damaged stores: every command names the damaged file and the fix (never "internal error",
never a RecursionError), `glb index` refuses to publish on top of damage, and `glb check
--repair` brings each kind of damage back to a sound index, after which `glb index` restores
what was dropped. Derived search caches (vindex/) are verified, never trusted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import engine
from conftest import SMALL_SCENES, write_tif
from engine.check import check_index
from engine.errors import GLBError
from hostile.tools import diff_states, read_state
from indexer.runner import IndexOptions, run_index
from test_reliability_check import CORRUPTIONS

REPAIR = "glb check --repair --index"


def _segs(index):
    return sorted(p for p in (index / "segments").iterdir() if not p.name.startswith("."))


def _current(index):
    return index / "manifests" / (index / "CURRENT").read_text().strip()


def truncate_vectors(index):
    p = _segs(index)[0] / "vectors.npy"
    p.write_bytes(p.read_bytes()[:-3 * 384 * 4 - 100])


def remove_thumbs(index):
    (_segs(index)[0] / "thumbs.parquet").unlink()


def truncate_thumbs(index):
    p = _segs(index)[0] / "thumbs.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def garbage_tiles(index):
    (_segs(index)[0] / "tiles.parquet").write_bytes(b"PAR1 not parquet PAR1")


def remove_overviews(index):
    (_segs(index)[0] / "overviews.parquet").unlink()


def remove_vectors(index):
    (_segs(index)[0] / "vectors.npy").unlink()


# (damage, the file every command must name, scenes the repair may drop)
DAMAGE = [
    (truncate_vectors, "vectors.npy is truncated", True),
    (remove_vectors, "vectors.npy is missing", True),
    (remove_thumbs, "thumbs.parquet is missing", True),
    (truncate_thumbs, "thumbs.parquet is unreadable", True),
    (garbage_tiles, "tiles.parquet is unreadable", True),
    (remove_overviews, "overviews.parquet is missing", False),
]


def _cli(argv, capsys):
    from glb.cli import main

    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, [x for x in out.err.splitlines() if x.strip() and "UNTRAINED" not in x]


@pytest.mark.parametrize("damage, named, drops", DAMAGE, ids=[d[0].__name__ for d in DAMAGE])
def test_damage_is_named_everywhere_refused_by_index_and_repaired(index_copy, encoder, damage, named,
                                                                 drops, capsys, tmp_path):
    before = read_state(index_copy)
    serving = engine.Index(index_copy, encoder=encoder)  # a long-lived searcher (the UI)
    damage(index_copy)
    # every command: one line naming the file and the repair, exit 2 (check: its problems, exit 1)
    for argv in (["search", "river"], ["info"]):
        engine.retrieval.index._OPEN.clear()
        rc, _, err = _cli([*argv, "--index", index_copy], capsys)
        assert rc == 2 and len(err) == 1, (argv, err)
        assert named in err[0] and REPAIR in err[0] and "internal error" not in err[0], err
    rc, _, err = _cli(["check", "--index", index_copy], capsys)
    assert rc == 1 and any(named in x for x in err), err
    # the UI's thumbnail call: no RecursionError, the same clear error
    if "thumbs" in named:
        with pytest.raises(GLBError, match=REPAIR.split(" --index")[0]):
            serving.thumbnail(next(iter(before.tiles)))
    # glb index refuses to publish a new generation on top of it
    gen = json.loads(_current(index_copy).read_text())["generation"]
    scene = write_tif(tmp_path / "new.tif", np.random.default_rng(1).integers(0, 255, (3, 64, 64), np.uint8),
                      photometric="RGB")
    with pytest.raises(GLBError, match="damaged index") as e:
        run_index([scene], index_copy, encoder=encoder, options=IndexOptions(progress=False),
                  echo=lambda m: None)
    assert named in str(e.value) and REPAIR in str(e.value)
    assert json.loads(_current(index_copy).read_text())["generation"] == gen
    if damage is truncate_vectors:  # the command line: one line, exit 2, before loading a model
        rc, _, err = _cli(["index", scene, "--index", index_copy, "--quiet"], capsys)
        assert rc == 2 and len(err) == 1 and named in err[0] and REPAIR in err[0], err
        assert "internal error" not in err[0]
    # the repair: a consistent generation, through the writer's commit
    rc, out, err = _cli(["check", "--repair", "--index", index_copy], capsys)
    assert rc == 0, (out, err)
    assert "repaired:" in out and "OK" in out.splitlines()[-1], out
    assert check_index(index_copy)[0] == []
    after = read_state(index_copy)
    assert diff_states(after, before, subset=True) == []  # what is kept is exactly as it was
    if drops:
        assert after.n_tiles < before.n_tiles and "dropped" in out
    else:
        assert after.n_tiles == before.n_tiles
    engine.retrieval.index._OPEN.clear()
    assert len(engine.Index(index_copy, encoder=encoder).search("river", k=3)) == min(3, after.n_tiles)
    # nothing left to repair; then the same `glb index` as before brings back what was dropped
    rc, out, _ = _cli(["check", "--repair", "--index", index_copy], capsys)
    assert rc == 0 and "nothing to repair" in out, out
    r = run_index(SMALL_SCENES, index_copy, encoder=encoder, options=IndexOptions(progress=False),
                  echo=lambda m: None)
    assert r.ok, r.failed
    assert diff_states(read_state(index_copy), before) == []
    assert check_index(index_copy)[0] == []


def _two_generations(index, encoder, tmp_path):
    scene = write_tif(tmp_path / "second.tif",
                      np.random.default_rng(2).integers(0, 255, (3, 64, 64), np.uint8), photometric="RGB")
    r = run_index([scene], index, encoder=encoder, options=IndexOptions(progress=False), echo=lambda m: None)
    assert r.ok and r.generation >= 2
    return scene


def garbage_scenes_file(index):
    m = json.loads(_current(index).read_text())
    (index / "manifests" / m["scenes_file"]).write_bytes(b"garbage")


def garbage_manifest(index):
    _current(index).write_bytes(b"{not json")


def garbage_current(index):
    (index / "CURRENT").write_text("nonsense\n")


def missing_current(index):
    (index / "CURRENT").unlink()


@pytest.mark.parametrize("damage, loses", [(garbage_scenes_file, True), (garbage_manifest, True),
                                           (garbage_current, False), (missing_current, False)],
                         ids=["garbage_scenes_file", "garbage_manifest", "garbage_current", "missing_current"])
def test_a_damaged_generation_rolls_back_to_the_last_whole_one(index_copy, encoder, tmp_path, damage,
                                                                loses, capsys):
    """A damaged manifest or scenes file: back to the generation before (its files are whole);
    a damaged CURRENT: back to the newest whole generation, which loses nothing."""
    first = read_state(index_copy)
    scene = _two_generations(index_copy, encoder, tmp_path)
    second = read_state(index_copy)
    damage(index_copy)
    rc, _, err = _cli(["search", "river", "--index", index_copy], capsys)
    assert rc == 2 and len(err) == 1 and "internal error" not in err[0], err
    rc, out, err = _cli(["check", "--repair", "--index", index_copy], capsys)
    assert rc == 0, (out, err)
    assert "CURRENT now names generation" in out, out
    assert diff_states(read_state(index_copy), first if loses else second) == []
    r = run_index([scene], index_copy, encoder=encoder, options=IndexOptions(progress=False), echo=lambda m: None)
    assert r.ok and r.indexed == (1 if loses else 0)
    assert diff_states(read_state(index_copy), second) == []
    assert check_index(index_copy)[0] == []


@pytest.mark.parametrize("corrupt, match", CORRUPTIONS, ids=[c[0].__name__ for c in CORRUPTIONS])
def test_repair_fixes_every_corruption_check_finds(index_copy, corrupt, match):
    from engine.repair import repair_index

    before = read_state(index_copy)
    corrupt(index_copy)
    assert check_index(index_copy)[0] != []
    report = repair_index(index_copy)
    assert report.actions and report.problems_after == [], (report.actions, report.problems_after)
    assert check_index(index_copy)[0] == []
    assert diff_states(read_state(index_copy), before, subset=True) == []


def test_repair_waits_for_no_one_it_takes_the_writer_lock(index_copy):
    from engine.errors import IndexLockedError
    from engine.repair import repair_index
    from engine.store.lock import WriterLock

    with WriterLock(index_copy):
        with pytest.raises(IndexLockedError):
            repair_index(index_copy)


# --- derived search caches (vindex/) on the quantised path ---------------------------------------
def _quantised_config():
    return engine.SearchConfig(vectors=engine.VectorIndexConfig(quant_min_rows=1000, nlist=64, pq_m=48))


@pytest.fixture(scope="module")
def quantised_base(tmp_path_factory):
    """1,200 tiles in 4 segments of equal size, searched through IVF-PQ (forced, as
    GLB_QUANT_MIN_ROWS=1000 does), its vindex/ caches built by a first search. (The issue's
    reproduction used ~5,000 tiles; fewer train the quantiser in a quarter of the time.)"""
    import synthetic

    path, rows = synthetic.build(tmp_path_factory.mktemp("quantised") / "index", n_scenes=8,
                                 tiles_per_scene=150, seed=5, scenes_per_commit=2)
    q = synthetic.clustered_vectors(np.random.default_rng(3), 4)
    idx = engine.Index(path, config=_quantised_config())
    want = [idx.search(vector=v, k=200) for v in q]
    vec = {r["tile_id"]: r["vector"] for r in rows}
    return path, q, want, vec


@pytest.fixture
def quantised(quantised_base, tmp_path):
    base, q, want, vec = quantised_base
    path = tmp_path / "index"
    shutil.copytree(base, path)
    return path, q, want, vec


def _swap(src, dst):
    dst.unlink()  # never write over a file a searcher may have mapped
    shutil.copyfile(src, dst)


def _cache(path, seg, suffix):
    return next(p for p in (path / "vindex").iterdir() if p.name.startswith(seg) and p.name.endswith(suffix))


def copy_tiles_arrow(path, a, b):
    _swap(_cache(path, a, ".tiles.arrow"), _cache(path, b, ".tiles.arrow"))


def copy_codes(path, a, b):
    _swap(_cache(path, a, ".codes.npy"), _cache(path, b, ".codes.npy"))


def copy_codes_and_record(path, a, b):
    copy_codes(path, a, b)
    _swap(_cache(path, a, ".codes.json"), _cache(path, b, ".codes.json"))


def flip_codes(path, a, b):
    p = _cache(path, b, ".codes.npy")
    c = np.load(p)
    c[len(c) // 3] ^= 0xFF
    p.unlink()
    np.save(p, c)


def garbage_quantizer(path, a, b):
    p = next((path / "vindex").glob("quantizer-*.faiss"))
    p.unlink()
    p.write_bytes(b"\x00" * 1000)


def foreign_quantizer(path, a, b):
    import faiss

    p = next((path / "vindex").glob("quantizer-*.faiss"))
    other = faiss.IndexIVFPQ(faiss.IndexFlatIP(192), 192, 4, 48, 8, faiss.METRIC_INNER_PRODUCT)
    other.train(np.random.default_rng(0).normal(size=(300, 192)).astype(np.float32))
    p.unlink()
    p.write_bytes(faiss.serialize_index(other).tobytes())


CACHE_DAMAGE = [copy_tiles_arrow, copy_codes, copy_codes_and_record, flip_codes, garbage_quantizer,
                foreign_quantizer]


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=lambda f: f.__name__)
def test_damaged_search_caches_are_reported_and_rebuilt_never_trusted(quantised, damage, capsys):
    path, q, want, vec = quantised
    segs = [p.name for p in _segs(path)]
    assert len(segs) == 4
    damage(path, segs[0], segs[1])
    problems, stats = check_index(path, search=False)
    assert stats["derived_damaged"] >= 1 and any(p.startswith("vindex/") for p in problems), problems
    idx = engine.Index(path, config=_quantised_config())
    assert idx.snapshot.vector_index.kind == "ivfpq"
    for v, w in zip(q, want):
        got = idx.search(vector=v, k=200)
        assert list(got.tile_id) == list(w.tile_id)           # nothing lost, same order
        exact = np.array([vec[t] @ v for t in got.tile_id])
        assert np.allclose(exact, got.score.to_numpy(), atol=1e-5)  # every score its own tile's
    assert check_index(path)[0] == []  # rebuilt by the searcher


@pytest.mark.parametrize("damage", CACHE_DAMAGE[:2], ids=lambda f: f.__name__)
def test_repair_deletes_damaged_search_caches(quantised, damage, capsys):
    path, q, want, _ = quantised
    segs = [p.name for p in _segs(path)]
    damage(path, segs[0], segs[1])
    rc, out, err = _cli(["check", "--repair", "--index", path], capsys)
    assert rc == 0 and "vindex/" in out and "deleted" in out, (out, err)
    assert check_index(path)[0] == []
