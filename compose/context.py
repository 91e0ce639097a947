"""Where the runtime image is built from: this checkout, or a build context written out of an installed package.

In a checkout the context is the repository (its `.dockerignore` keeps it small). Installed from a wheel
there is no repository: `write_context` copies the packages, the example configs and the Dockerfile into
a folder, so that `docker compose up` can still build the image.
"""
from __future__ import annotations

import os
import shutil
import site
import sys

PACKAGES = ("neuron", "broker", "paramstore", "orchestrator", "compose")
DOCKERFILE = "compose/Dockerfile"
# written into every context this module makes, so a later deploy may replace it and nothing else
MARKER = ".cuttlefish-build-context"
HERE = os.path.dirname(os.path.abspath(__file__))


def checkout_root() -> str | None:
    """The repository this code runs from, or None when it is an installed package."""
    root = os.path.dirname(HERE)
    if os.path.isfile(os.path.join(root, "setup.cfg")) and os.path.isfile(os.path.join(root, DOCKERFILE)):
        return root
    return None


def examples_dir() -> str | None:
    """The folder of the example configs: the checkout's, or the one a wheel installs under share/."""
    root = checkout_root()
    candidates = [os.path.join(root, "examples")] if root else []
    # a wheel's data files land in the installation's prefix (a venv, the system, or the user base)
    for prefix in dict.fromkeys([sys.prefix, sys.base_prefix, site.USER_BASE or ""]):
        if prefix:
            candidates.append(os.path.join(prefix, "share", "cuttlefish", "examples"))
    return next((c for c in candidates if os.path.isdir(c)), None)


def _ignore(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}


def write_context(dest: str) -> str:
    """Copy what the runtime image needs into folder `dest` (made or replaced); returns `dest`.

    Refuses to replace a non-empty folder that it did not write itself.
    """
    dest = os.path.abspath(dest)
    if os.path.isdir(dest) and os.listdir(dest):
        if not os.path.isfile(os.path.join(dest, MARKER)):
            raise FileExistsError(f"{dest} exists and is not a build context written by cuttlefish")
        shutil.rmtree(dest)
    os.makedirs(dest, exist_ok=True)
    source = os.path.dirname(HERE)
    for package in PACKAGES:
        shutil.copytree(os.path.join(source, package), os.path.join(dest, package), ignore=_ignore)
    examples = examples_dir()
    if examples:
        shutil.copytree(examples, os.path.join(dest, "examples"), ignore=_ignore)
    else:
        os.makedirs(os.path.join(dest, "examples"))
    with open(os.path.join(dest, MARKER), "w", encoding="utf-8") as fh:
        fh.write("written by `cuttlefish deploy --target compose`; replaced by the next one\n")
    return dest
