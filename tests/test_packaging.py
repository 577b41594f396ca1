"""The package's metadata: one version, which setuptools reads from the package itself."""

import ast
import configparser
from pathlib import Path

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
