"""The README's `glb` command lines, as written: every one parses, and the query ones run
against a real index (the README's `/tmp/x` replaced by the test's index)."""

import json
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT


def readme_commands() -> list[str]:
    """Lines of the README's shell blocks that run `.venv/bin/glb`, comments cut off."""
    text = (ROOT / "README.md").read_text()
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():  # join continued lines
            words = shlex.split(line, comments=True)
            if words[:1] == [".venv/bin/glb"]:
                out.append(shlex.join(words))
    return out


COMMANDS = readme_commands()


def test_the_readme_has_the_negative_bbox_example():
    assert any("--bbox -77.06,38.80,-77.04,38.82" in c for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("line", COMMANDS)
def test_every_readme_command_parses(line):
    from glb.cli import _attach_negative_values, _parser

    parser = _parser()
    argv = shlex.split(line)[1:]
    args = parser.parse_args(_attach_negative_values(parser, argv))
    if "--bbox" in argv:
        assert args.bbox == argv[argv.index("--bbox") + 1]


def test_negative_values_of_other_coordinate_options():
    from glb.cli import _attach_negative_values, _parser

    parser = _parser()
    argv = ["search", "x", "--region", "-1,2", "--image-wavelengths", "-0.5", "--k", "-3"]
    args = parser.parse_args(_attach_negative_values(parser, argv))
    assert (args.region, args.image_wavelengths, args.k) == ("-1,2", "-0.5", -3)
    # a flag followed by a negative-looking positional is left alone (flags take no value)
    assert _attach_negative_values(parser, ["search", "--json", "-1"]) == ["search", "--json", "-1"]


# Run against the test's index: the lines over the README's example index /tmp/x (lines over
# another index, e.g. one built with the paper's weights, need files no test can have: parsed only).
QUERY_LINES = [c for c in COMMANDS if c.split()[1] in ("search", "info", "check", "sensors")
               and ("--index" not in c.split() or "/tmp/x" in c.split())]


@pytest.mark.parametrize("line", QUERY_LINES)
def test_readme_query_commands_run_as_written(line, small_index, tmp_path):
    import os

    argv = [a.replace("/tmp/x", str(small_index)) for a in shlex.split(line)[1:]]
    # run where a user would: files it writes (--out) land in a scratch folder, not the repo
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "glb", *argv], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=env)
    assert "usage:" not in r.stderr and "expected one argument" not in r.stderr, r.stderr
    if "--tile-id" in argv:
        # the README's placeholder id is not in this index: refused with a one-line reason
        assert r.returncode == 2 and "123456789" in r.stderr, r.stderr
        return
    if "--like" in argv or "--unlike" in argv:
        # the README's placeholder marks (123, 456, 789) are not tiles of this index either
        assert r.returncode == 2 and "not in this index" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        return
    assert r.returncode == 0, r.stderr
    if "--out" in argv:
        assert (tmp_path / argv[argv.index("--out") + 1]).stat().st_size > 0
    if "--bbox" in argv:
        fc = json.loads(r.stdout)
        assert fc["type"] == "FeatureCollection"
        assert fc["query"]["bbox"] == "-77.06,38.80,-77.04,38.82"
