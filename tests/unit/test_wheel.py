"""The package as a user installs it: a wheel built with `python -m build`, in a fresh venv, run from elsewhere."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from tests.conftest import ROOT, require

_EVERYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
_TOP = {".git", "build", "dist", "out", "data"}  # at the top only: orchestrator/data is a package


def SKIP(folder: str, names: list[str]) -> set[str]:
    """What not to copy of the checkout: caches everywhere, and the top level's outputs and data."""
    top = _TOP if pathlib.Path(folder) == ROOT else set()
    return set(_EVERYWHERE(folder, names)) | {n for n in names if n in top}


def _run(cmd: list, cwd: pathlib.Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment, a folder far from the checkout) with the built wheel installed."""
    try:
        import build  # noqa: F401  the `build` front end, from the test extras
    except ImportError:
        require(False, "the wheel test needs `build` and `wheel` (pip install -e '.[test]' in the checkout)")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)  # builds leave build/ and *.egg-info behind: not in the checkout
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # no isolation: the build backend (setuptools, wheel) is taken from this environment, no index needed
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", source], tmp, env)
    wheel = next((tmp / "dist").glob("cuttlefish-*.whl"))
    venv = tmp / "venv"
    # the venv sees this interpreter's numpy and PyYAML; cuttlefish itself comes from the wheel only
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], tmp, env)
    bin_dir = venv / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--force-reinstall", wheel],
         tmp, env)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return bin_dir, {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}, elsewhere, wheel


def test_the_wheel_ships_the_license_dockerfile_and_examples(installed):
    *_, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/LICENSE") for n in names)
    assert "compose/Dockerfile" in names
    assert any(n.endswith("/data/share/cuttlefish/examples/tiny.yaml") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_code_is_the_wheels(installed):
    bin_dir, env, elsewhere, _ = installed
    # the CLI imports nearly every module; each must come from the wheel, none from the checkout's editable install
    code = ("import sys, orchestrator.cli.commands, neuron.service, compose.render\n"
            "for name, m in sorted(sys.modules.items()):\n"
            "    if name.split('.')[0] in ('neuron', 'broker', 'paramstore', 'compose', 'orchestrator'):\n"
            "        print(name, getattr(m, '__file__', None) or list(m.__path__)[0])")
    rows = [line.split() for line in _run([bin_dir / "python", "-c", code], elsewhere, env).stdout.splitlines()]
    assert len(rows) > 20 and {r[0] for r in rows} >= {"orchestrator.data.model", "neuron.service", "compose.render"}
    outside = [r for r in rows if not r[1].startswith(str(bin_dir.parent))]
    assert not outside, outside


def test_console_script_plans_and_deploys_from_another_folder(installed):
    bin_dir, env, elsewhere, _ = installed
    assert "usage: cuttlefish" in _run(["cuttlefish", "--help"], elsewhere, env).stdout
    _run(["cuttlefish", "examples", "examples"], elsewhere, env)
    assert (elsewhere / "examples" / "tiny.yaml").read_text() == (ROOT / "examples" / "tiny.yaml").read_text()
    assert "7 neurons" in _run(["cuttlefish", "plan", "examples/tiny.yaml"], elsewhere, env).stdout
    _run(["cuttlefish", "deploy", "examples/compose.yaml", "--target", "compose", "-o", "docker-compose.yml"],
         elsewhere, env)
    doc = yaml.safe_load((elsewhere / "docker-compose.yml").read_text())
    build = doc["services"]["driver"]["build"]
    context = elsewhere / build["context"]
    assert context.resolve() == (elsewhere / "cuttlefish-build").resolve()
    assert (context / build["dockerfile"]).is_file()
    copied = [line.split()[1] for line in (context / build["dockerfile"]).read_text().splitlines()
              if line.startswith("COPY ")]
    assert len(copied) >= 5 and all((context / c).is_dir() for c in copied), copied  # all the image needs
    assert doc["services"]["driver"]["volumes"][0].startswith("./examples/compose.yaml:")
    # a second deploy replaces the context it wrote; a prebuilt image needs none
    _run(["cuttlefish", "deploy", "examples/compose.yaml", "--target", "compose", "-o", "docker-compose.yml"],
         elsewhere, env)
    _run(["cuttlefish", "deploy", "examples/compose.yaml", "--target", "compose", "-o", "other.yml",
          "--image", "registry.example/cuttlefish:1"], elsewhere, env)
    other = yaml.safe_load((elsewhere / "other.yml").read_text())["services"]["driver"]
    assert other["image"] == "registry.example/cuttlefish:1" and "build" not in other


def test_installed_package_trains(installed, mnist_dir):
    bin_dir, env, elsewhere, _ = installed
    _run(["cuttlefish", "examples", "ex"], elsewhere, env)
    done = _run([bin_dir / "python", "-m", "orchestrator", "train", "ex/tiny.yaml", "--data", mnist_dir,
                 "--max-steps", "5", "--quiet"], elsewhere, env)
    assert done.stdout.strip().splitlines()[-1].startswith("test accuracy: ")


def test_install_hints_name_this_project_not_the_index_one():
    # 'cuttlefish' on the public index is an unrelated project: no hint may send a user there
    for package in ("neuron", "broker", "paramstore", "compose", "orchestrator"):
        for path in (ROOT / package).rglob("*.py"):
            assert "install 'cuttlefish[" not in path.read_text(), path
    assert "install 'cuttlefish[" not in (ROOT / "README.md").read_text()


def test_missing_broker_driver_gives_a_hint_that_works(monkeypatch):
    import broker

    monkeypatch.setitem(sys.modules, "pika", None)
    for name in [m for m in sys.modules if m == "broker.rabbitmq" or m.startswith("broker.rabbitmq.")]:
        monkeypatch.delitem(sys.modules, name)  # the backend package and its modules, imported afresh
    with pytest.raises(broker.MissingExtra) as info:
        broker.connect("amqp://localhost:5672/%2F")
    assert "pip install pika (or, in the Cuttlefish checkout, pip install -e '.[rabbitmq]')" in str(info.value)


def test_license_file_matches_the_declared_license():
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
