"""Names and text from outside: file names with terminal escapes or bytes that are not UTF-8,
folders that cannot be read or are symlinks, mistakes in a --rules file, float64 rasters that
are partly NaN. Each is indexed or named in one line; nothing raw reaches a terminal and no
Python warning leaks."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from rasterio.transform import from_origin

import engine
from conftest import write_tif
from engine.check import check_index
from hostile.tools import ROOT
from indexer.runner import IndexOptions, run_index

ANSI_NAME = "\x1b[2J\x1b[1;1Hroot# rm -rf \x1b[31mfake.tif"
NON_UTF8 = b"caf\xe9_\xff\xfe.tif"  # Latin-1 bytes: not UTF-8
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable"]


def _unprivileged() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") and subprocess.run(DROP_DAC + ["true"], capture_output=True).returncode == 0:
        return DROP_DAC
    return None


def _rgb(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 255, (3, size, size), dtype=np.uint8)


def _half_nan_f64():
    a = np.random.default_rng(3).uniform(0, 3000, (1, 128, 128))
    a[:, :, :40] = np.nan  # partly NaN: one tile all NaN (dropped), one kept (max-nodata 0.5)
    return a


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    write_tif(root / "plain.tif", _rgb(0), photometric="RGB")
    write_tif(root / ANSI_NAME, _rgb(1), photometric="RGB")
    write_tif(root / "odd.tif", _rgb(2), photometric="RGB")  # GDAL cannot create that name itself
    os.rename(bytes(root / "odd.tif"), bytes(root) + b"/" + NON_UTF8)
    locked = root / "locked"
    locked.mkdir()
    write_tif(locked / "inside.tif", _rgb(4), photometric="RGB")
    target = tmp_path / "elsewhere"
    target.mkdir()
    write_tif(target / "linked.tif", _rgb(5), photometric="RGB")
    (root / "linked_folder").symlink_to(target, target_is_directory=True)
    return root, locked


def test_hostile_names_through_the_command_line(corpus, tmp_path):
    root, locked = corpus
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("root without setpriv: permission bits cannot apply")
    locked.chmod(0)
    index = tmp_path / "index"
    try:
        r = subprocess.run([*prefix, sys.executable, "-m", "glb", "index", str(root),
                            "--index", str(index), "--quiet"], cwd=ROOT, capture_output=True, timeout=600)
    finally:
        locked.chmod(0o755)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, err[-2000:]
    assert "\x1b" not in out + err and "Warning" not in err and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.strip() and "UNTRAINED" not in x]
    failed = [x for x in lines if x.startswith("glb index: failed: ")]
    notes = [x for x in lines if x.startswith("glb index: note: ")]
    assert len(failed) == 1 and "locked: cannot read this folder (Permission denied)" in failed[0], lines
    assert len(notes) == 1 and "linked_folder: a symlinked folder, not followed" in notes[0], lines
    assert len(lines) == 2, lines
    assert "1 symlinked folders (not followed)" in out and "3 indexed" in out, out
    # search output: the escape sequences in the scene name are shown escaped, never sent
    s = subprocess.run([sys.executable, "-m", "glb", "search", "rm -rf", "--k", "10", "--index", str(index)],
                       cwd=ROOT, capture_output=True, timeout=600)
    text = s.stdout.decode()
    assert s.returncode == 0 and "\x1b" not in text and "\\x1b[2J" in text, text
    assert "caf\\xe9_\\xff\\xfe.tif" in text, text  # the non-UTF-8 name, its bytes shown
    assert check_index(index)[0] == []


def test_names_that_are_not_utf8_are_indexed_and_idempotent(corpus, tmp_path, encoder):
    from engine.store.writer import scene_id_for, tile_id_for

    root, locked = corpus
    shutil.rmtree(locked)
    index = tmp_path / "index"
    r = run_index([root], index, encoder=encoder, options=IndexOptions(progress=False), echo=lambda m: None)
    assert r.failed == [] and r.indexed == 3, r.failed
    scenes = engine.open(index).scenes()
    odd = scenes[scenes.path.str.startswith("bytes:")]
    assert len(odd) == 1 and odd.n_tiles.iloc[0] == 1
    assert odd.path.iloc[0].endswith("caf\\xe9_\\xff\\xfe.tif")
    # the ids hash the path's bytes; ordinary UTF-8 paths hash exactly as before (existing ids stay)
    path = os.fsdecode(bytes(root) + b"/" + NON_UTF8)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert odd.scene_id.iloc[0] == scene_id_for(path, sha) == hashlib.blake2b(
        os.fsencode(path) + f"|{sha}".encode(), digest_size=8).hexdigest()
    plain = "/data/é/scene.tif"
    assert tile_id_for(plain, 0, 64, 64, 64) == int.from_bytes(hashlib.blake2b(
        f"{plain}|0|64|64|64".encode(), digest_size=8).digest(), "little") & 0x7FFF_FFFF_FFFF_FFFF
    # a second run changes nothing, --prune keeps the file (its stored path maps back to it)
    again = run_index([root], index, encoder=encoder, options=IndexOptions(progress=False, prune=True),
                      echo=lambda m: None)
    assert again.unchanged == 3 and again.indexed == 0 and again.removed == 0, again
    assert check_index(index)[0] == []


def test_symlinked_and_unreadable_folders_are_reported(corpus):
    from indexer.sources import discover

    root, locked = corpus
    found = discover([root], [])
    assert found.skipped == {"symlinked folders (not followed)": 1}
    assert len(found.notes) == 1 and "linked_folder" in found.notes[0]
    assert not any("linked.tif" in str(s.path) for s in found.sources)
    # the link's target given explicitly is walked
    assert any(s.path.name == "linked.tif" for s in discover([root / "linked_folder"], []).sources)
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("root without setpriv: permission bits cannot apply")
    locked.chmod(0)
    try:
        code = ("import sys; from indexer.sources import discover; "
                "d = discover([sys.argv[1]], []); print('\\n'.join(d.problems))")
        p = subprocess.run([*prefix, sys.executable, "-c", code, str(root)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"{locked}: cannot read this folder (Permission denied); its files were not indexed"


RULE_MISTAKES = [  # (file, what the line must say: the rule, the key; the glob is named too)
    ('[[rule]]\nglob = "*"\nacquired = "2020-13-45"\n', "rule 1: acquired '2020-13-45' is not a date"),
    ('[[rule]]\nglob = "*"\nacquired = 2020\n', "rule 1: acquired must be a date"),
    ('[[rule]]\nglob = "*"\ndate_regex = "(?P<year>\\\\d{4}"\n', "rule 1: date_regex is not a regular expression"),
    ('[[rule]]\nglob = "*"\ndate_regex = "\\\\d{4}"\n', "rule 1: date_regex needs a (?P<year>...) group"),
    ('[[rule]]\nglob = 5\n', "rule 1: glob must be a non-empty string, got 5"),
    ('rule = 5\n', "`rule` must be an array of tables"),
    ('rule = ["*.tif"]\n', "rule 1: expected a table of keys"),
    ('[rule]\nglob = "*"\n', "`rule` must be an array of tables"),
    ('[[rule]]\nglob = "*"\n[[rule]]\nglob = "*/x/*"\nsensor = 7\n', "rule 2: sensor must be a string"),
    ('[[rule]]\nglob = "*"\nfootprint_m = "big"\n', "rule 1: footprint_m must be a positive number"),
    ('[[rule]]\nglob = "*"\nskip = "yes"\n', "rule 1: skip must be true or false"),
    ('[[rule]]\nglob = "*"\nwavelengths = ["red", 0.5]\n', "rule 1: wavelengths must be a list of numbers"),
    ('[[rule]]\nglob = "*"\nsensor = "no-such-sensor"\n', "rule 1: "),
    ('[[rules]]\nglob = "*"\n', "unknown top-level keys ['rules']"),
]


@pytest.mark.parametrize("text, match", RULE_MISTAKES, ids=range(len(RULE_MISTAKES)))
def test_rules_file_mistakes_are_one_line_naming_rule_and_key(tmp_path, text, match, capsys):
    from glb.cli import main

    rules = tmp_path / "rules.toml"
    rules.write_text(text)
    write_tif(tmp_path / "a.tif", _rgb(), photometric="RGB")
    rc = main(["index", str(tmp_path / "a.tif"), "--rules", str(rules), "--index", str(tmp_path / "i"), "--quiet"])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert rc == 2 and len(err) == 1, err
    assert match in err[0] and "internal error" not in err[0] and str(rules) in err[0], err
    assert not (tmp_path / "i" / "CURRENT").exists()


def test_partly_nan_float64_prints_no_warning(tmp_path):
    """Through `glb index` with every RuntimeWarning shown (-W always::RuntimeWarning)."""
    write_tif(tmp_path / "f64.tif", _half_nan_f64(), crs="EPSG:32633",
              transform=from_origin(500000, 5000000, 10, 10))
    r = subprocess.run([sys.executable, "-W", "always::RuntimeWarning", "-m", "glb", "index", str(tmp_path / "f64.tif"),
                        "--index", str(tmp_path / "i"), "--quiet", "--sensor", "elevation"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr
    assert "1 indexed" in r.stdout
