"""pyproject.toml as setuptools reads it on every install: no deprecation warnings."""

import subprocess
import sys

from conftest import ROOT

APPLY = ("import warnings; warnings.simplefilter('error');"
         "from setuptools.dist import Distribution;"
         "from setuptools.config.pyprojecttoml import apply_configuration;"
         "d = apply_configuration(Distribution(), 'pyproject.toml');"
         "print(d.metadata.license_expression)")


def test_pyproject_applies_without_setuptools_warnings():
    r = subprocess.run([sys.executable, "-c", APPLY], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Apache-2.0"
