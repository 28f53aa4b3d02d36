"""The software a result was computed with: Python, platform, package versions, commit.

Every executed notebook ends with it and the manifest stores it, so that a number in a
report can be traced to the versions that produced it.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess

PACKAGES = ("torch", "transformers", "kronfluence", "datasets", "accelerate", "papermill",
            "numpy", "matplotlib", "seaborn", "pydantic")


def environment_record() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "git_commit": commit}
