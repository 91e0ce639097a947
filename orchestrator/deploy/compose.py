"""A running docker-compose project: how this host reaches its Redis, and re-splitting one layer's services.

Rendering the compose file itself is compose/render.py's.
"""
from __future__ import annotations

import os
import subprocess
from urllib.parse import quote

import yaml

from broker.schemes import STORE_PASSWORD_FILE_ENV
from compose import context, render
from neuron.topology import Topology
from orchestrator.config import load_config
from orchestrator.errors import ConfigError, OrchestratorError


def store_url(compose_file: str) -> str:
    """The Redis of a running compose project, as this host reaches it (its loopback port and the password)."""
    done = subprocess.run(["docker", "compose", "-f", compose_file, "port", "redis", "6379"],
                          capture_output=True, text=True)
    address = done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""
    if not address:
        raise OrchestratorError(f"no running Redis in the compose project of {compose_file}: {done.stderr.strip()[-300:]}")
    # the project's store secret, as the compose file names it (Redis's own: the broker's opens no store)
    secret = os.environ.get(STORE_PASSWORD_FILE_ENV) or os.path.join(
        os.path.dirname(os.path.abspath(compose_file)), "secrets", render.STORE_SECRET)
    try:
        with open(secret, encoding="utf-8") as fh:
            password = fh.read().strip()
    except OSError:
        password = ""
    if not password:
        raise ConfigError(STORE_PASSWORD_FILE_ENV, f"no password in {secret}, the compose project's store secret")
    return f"redis://:{quote(password, safe='')}@{address}/0"


def apply_layer(compose_file: str, config_file: str, topo: Topology, layer: int) -> None:
    """Rewrite the compose file for `topo`'s split and bring `layer`'s services in line; others untouched."""
    config = load_config(config_file)
    folder = os.path.dirname(os.path.abspath(compose_file))
    with open(compose_file, encoding="utf-8") as fh:
        driver = (yaml.safe_load(fh) or {}).get("services", {}).get("driver", {})
    # keep the file's image and build context, however its deploy chose them
    image = {key: driver[key] for key in ("image", "build") if key in driver}
    if not image:
        image = render.runtime(build_context=render.relative(context.checkout_root() or ".", folder))
    _, text = render.compose_file(topo, config.deploy, config_file, folder, image)
    with open(compose_file, "w", encoding="utf-8") as fh:
        fh.write(text)
    services = [role.compose_service for role in topo.neurons() if role.layer == layer]
    # --remove-orphans drops the services of neurons the new split no longer has
    done = subprocess.run(["docker", "compose", "-f", compose_file, "up", "-d", "--no-deps", "--remove-orphans",
                           *services], capture_output=True, text=True)
    if done.returncode != 0:
        raise OrchestratorError(f"docker compose up of layer {layer} failed: {done.stderr.strip()[-500:]}")
