"""Copies the top-level recipes/, adapters/ and checkpoints/ folders into the wheel as steerkit/_builtin/.

They stay at the top level of the repository (easy to browse and review) and ship inside the package
(found through importlib.resources), instead of becoming a second top-level package in site-packages.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithBuiltins(build_py):
    def run(self):
        super().run()
        root = Path(__file__).parent
        for kind in ("recipes", "adapters", "checkpoints"):
            target = Path(self.build_lib) / "steerkit" / "_builtin" / kind
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(root / kind, target)


setup(cmdclass={"build_py": BuildWithBuiltins})
