"""The package's metadata: one version, which setuptools reads from the package itself;
and the distributions built from it."""

import ast
import configparser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import changeflow_channels

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_defined_once():
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(ROOT / "setup.cfg")
    assert setup_cfg["metadata"]["version"] == "attr: changeflow_channels.__version__"
    # setuptools reads it without importing the package: a plain string assignment.
    module = ast.parse((ROOT / "changeflow_channels" / "__init__.py").read_text())
    [version] = [
        node.value.value
        for node in module.body
        if isinstance(node, ast.Assign)
        and [getattr(target, "id", None) for target in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
    ]
    assert version == changeflow_channels.__version__


@pytest.mark.slow
def test_the_wheel_and_sdist_hold_the_static_client_and_pass_twine_check(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    # setuptools' "Package would be ignored" box: the static folder is a package of its own.
    assert "would be ignored" not in built.stdout + built.stderr
    [wheel] = tmp_path.glob("*.whl")
    [sdist] = tmp_path.glob("*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert "changeflow_channels/static/changeflow_channels/changeflow.js" in names
    assert "changeflow_channels/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "demo/", "bench/"))]
    with tarfile.open(sdist) as archive:
        assert any(
            name.endswith("static/changeflow_channels/changeflow.js") for name in archive.getnames()
        )
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
