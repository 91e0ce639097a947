"""The operating commands of the CLI: deploy and teardown (compose, ECS), status and scale of a running run.

They parse the command line and print; what they do to a deployment is in orchestrator/deploy/.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from urllib.parse import urlsplit

from broker import connect as connect_broker
from compose import context as compose_context
from compose import render as compose_render
from neuron.topology import RUN_ID, Topology
from orchestrator.config import Config, load_config
from orchestrator.config.plan import build_plan
from orchestrator.config.schema import MAX_NEURONS
from orchestrator.deploy import compose
from orchestrator.deploy.aws import EcsDeployer, configured_region
from orchestrator.deploy.ecs import ecs_plan
from orchestrator.deploy.status import find_run, format_status, run_status
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.training.rescale import check_neuron_limit
from paramstore import open_store
from paramstore.lease import lease_key
from paramstore.run import RunRecord


def config_of(args: argparse.Namespace) -> Config:
    """The config named by `args.config`, with the command line's --epochs, --broker and --store applied."""
    config = load_config(args.config)
    if getattr(args, "epochs", None) is not None:
        config = config.with_training(epochs=args.epochs)
    for flag, attr, key in (("--broker", "broker", "broker"), ("--store", "store", "paramstore")):
        if getattr(args, attr, None):
            try:
                config = config.replace(**{key: getattr(args, attr)})
            except ConfigError as exc:  # the flag's value is wrong, not the file's
                raise ConfigError(flag, exc.reason) from None
    return config


def _deploy_run_id(args: argparse.Namespace) -> str:
    run_id = args.run_id or f"cf-{os.path.splitext(os.path.basename(args.config))[0]}"
    if not RUN_ID.match(run_id):
        raise ConfigError("--run-id", f"must be 1-64 of A-Z a-z 0-9 _ . - (got {run_id!r})")
    return run_id


def _ecs(args: argparse.Namespace) -> tuple[dict, object]:
    """The ECS plan of the config and, unless --dry-run, a deployer for its region."""
    config = config_of(args)
    with open(args.config, encoding="utf-8") as fh:
        text = fh.read()
    region = args.region or config.ecs.region or configured_region()
    plan = ecs_plan(config, build_plan(config, _deploy_run_id(args)), text, region=region)
    return plan, (None if getattr(args, "dry_run", False) else EcsDeployer(plan["region"]))


def _check_overwrite(path: str, label: str, force: bool) -> None:
    """Refuse to replace a file that deploy did not write for this same config (or that was edited since)."""
    if force or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as fh:
            found = compose_render.generated_for(fh.read())
    except (OSError, UnicodeDecodeError):
        found = None
    if found == label:
        return
    why = (f"was generated for {found}, not {label}" if found else
           "was not written by deploy, or was edited since")
    raise ConfigError("--output", f"{path} {why}; write another file with -o, or replace it with --force")


def cmd_deploy(args: argparse.Namespace) -> int:
    """Write a compose file, or create or update the run's ECS resources (or print or write their plan)."""
    if args.target == "ecs":
        plan, deployer = _ecs(args)
        text = json.dumps(plan, indent=2) + "\n"
        if args.output and args.output != "-":
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
            print(f"wrote the ECS plan to {args.output}", file=sys.stderr)
        elif deployer is None:
            sys.stdout.write(text)
        if deployer is None:
            return 0
        report = deployer.apply(plan)
        for what in ("created", "updated", "removed"):
            for item in report[what]:
                print(f"{what} {item}")
        print(f"{len(report['unchanged'])} unchanged; cluster {plan['cluster']} in {plan['region']}")
        return 0
    config = config_of(args)
    run_id = _deploy_run_id(args)
    output = args.output or "docker-compose.yml"
    to_stdout = output == "-" or args.dry_run
    folder = "." if output == "-" else os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise ConfigError("--output", f"folder {folder} does not exist")
    topo = build_plan(config, run_id)
    label = os.path.relpath(args.config, folder)
    if not to_stdout:
        _check_overwrite(output, label, args.force)
    _, text = compose_render.compose_file(topo, config.deploy, args.config, folder,
                                          _compose_image(args, folder, write=not to_stdout))
    if to_stdout:  # --dry-run: what would be written to `output`, and nothing is
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {output}: {len(topo.neurons())} neurons, the loss head, rabbitmq, redis, driver",
              file=sys.stderr)
    return 0


def _compose_image(args: argparse.Namespace, folder: str, *, write: bool) -> dict:
    """The runtime image of a compose file in `folder`: --image, else built from --build-context or this checkout.

    Installed from a wheel there is no checkout: the build context is written to `folder`/cuttlefish-build.
    """
    if args.image:
        return compose_render.runtime(image=args.image)
    context = args.build_context or compose_context.checkout_root()
    if context is None:
        context = os.path.join(folder, "cuttlefish-build")
        if write:
            try:
                compose_context.write_context(context)
            except FileExistsError as exc:
                raise ConfigError("--build-context", f"{exc}; name another with --build-context or use --image") from None
            print(f"wrote the image's build context to {context}", file=sys.stderr)
        else:
            print(f"note: the image's build context {context} is written only with -o FILE "
                  "(or give --image or --build-context)", file=sys.stderr)
    elif not os.path.isfile(os.path.join(context, compose_context.DOCKERFILE)):
        raise ConfigError("--build-context", f"{context} has no {compose_context.DOCKERFILE}")
    return compose_render.runtime(build_context=compose_render.relative(context, folder))


def _shared_store(args: argparse.Namespace, store_url: str | None, command: str) -> str:
    """The run's shared store URL; a clear error when there is none, or only the config's memory:// one."""
    if store_url and urlsplit(store_url).scheme != "memory":
        return store_url
    if args.config and not args.store:
        raise ConfigError("paramstore", f"is {store_url} (memory:// lives inside the one process that trains, so "
                                        f"{command} cannot reach it); give --store URL or CUTTLEFISH_STORE, the "
                                        "run's shared store, or a config whose paramstore is one")
    raise ConfigError("--store", f"{command} reads the run's shared store: give --store URL, CUTTLEFISH_STORE, or a "
                                 "config whose paramstore is a service")


def _driver_gone(store, run_id: str) -> str | None:
    """Why the run's driver is not running (its lease expired, or no lease), or None while it may be."""
    raw = store.get(lease_key(run_id))
    try:
        held = json.loads(raw) if raw is not None else None
    except ValueError:
        held = None
    if not isinstance(held, dict) or not isinstance(held.get("expires"), (int, float)):
        return "its driver holds no lease"
    if held["expires"] <= 0:
        return "its driver stopped (it gave its lease back)"
    late = time.time() - held["expires"]
    return f"its driver's lease expired {late:.0f} s ago" if late > 0 else None


def _check_limit(wanted: Topology, args: argparse.Namespace, stored: object) -> None:
    """ConfigError (exit 2) if the split `scale` asks for has more neurons than the run's config allows.

    The limit is the config's when one is given, else the one the run's driver recorded in the manifest
    (`stored`), else the default (fail closed, saying so).
    """
    if args.config:
        limit, source = load_config(args.config).network.max_neurons, f"neural_network.max_neurons of {args.config}"
    elif isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1:
        limit, source = stored, "the run's neural_network.max_neurons, as its manifest records it"
    else:
        limit, source = MAX_NEURONS, ("the default neural_network.max_neurons; give the run's config if it sets "
                                      "another")
    try:
        check_neuron_limit(wanted, limit, args.layer)
    except ValueError as exc:
        raise ConfigError("--shards", f"{exc} ({source})") from None


def cmd_scale(args: argparse.Namespace) -> int:
    """Ask the run's driver to split a layer differently and wait until it has."""
    store_url = args.store or (compose.store_url(args.compose_file) if args.target == "compose" else None)
    store_url = _shared_store(args, store_url or (load_config(args.config).paramstore if args.config else None),
                              "scale")
    with open_store(store_url) as store:
        run_id = find_run(store, args.run_id)
        record = RunRecord(store, run_id)
        manifest = record.manifest() or record.empty()
        if manifest.status != "running" or manifest.topology is None:
            raise ConfigError("--run-id", f"run {run_id} is not running (status {manifest.status!r})")
        topo = Topology.from_dict(dict(manifest.topology))
        try:
            wanted = topo.with_shards(args.layer, args.shards)
        except ValueError as exc:
            raise ConfigError("--shards", str(exc)) from None
        _check_limit(wanted, args, manifest.max_neurons)
        if args.target == "compose" and not args.config:
            raise ConfigError("scale", "--target compose needs the config the compose file was made from")
        gone = _driver_gone(store, run_id)
        if gone:  # nobody would carry the request out
            raise OrchestratorError(f"run {run_id} is not being trained: {gone}; resume it (train --resume) "
                                    "and scale again")
        rid = record.request_scale(args.layer, args.shards)
        print(f"asked run {run_id} to split layer {args.layer} into {args.shards} neurons at its next checkpoint",
              file=sys.stderr)
        deadline = time.monotonic() + args.wait
        if args.target == "compose":
            while time.monotonic() < deadline:  # the driver switched the split: start the new set
                current = Topology.from_dict(dict((record.manifest() or manifest).topology or {}))
                if current.shards[args.layer - 1] == args.shards:
                    compose.apply_layer(args.compose_file, args.config, current, args.layer)
                    break
                time.sleep(0.2)
        while time.monotonic() < deadline:
            current = record.manifest() or manifest
            done = [r for r in current.rescales if r.request.id == rid]
            if not done and current.status != "running":  # the run ended first: no driver will carry it out
                raise OrchestratorError(f"run {run_id} ended (status {current.status!r}) before its driver carried "
                                        "out the rescale")
            gone = None if done else _driver_gone(store, run_id)
            if gone:
                raise OrchestratorError(f"run {run_id} is not being trained: {gone}; resume it (train --resume) "
                                        "and scale again")
            if done:
                entry = done[0]
                if entry.refused is not None:
                    raise OrchestratorError(f"the driver refused the rescale: {entry.refused}")
                print(f"layer {entry.request.layer}: {entry.from_shards} -> {entry.to_shards} neurons at checkpoint "
                      f"{entry.version}, generation {entry.generation}; training paused {entry.pause_s or 0.0:.2f} s")
                return 0
            time.sleep(0.2)
    raise OrchestratorError(f"the driver did not carry out the rescale within {args.wait:.0f} s (is it running?)")


def cmd_teardown(args: argparse.Namespace) -> int:
    """Remove the run's ECS services and task definitions (and the cluster, if then empty)."""
    plan, deployer = _ecs(args)
    report = deployer.teardown(plan)
    for item in report["removed"]:
        print(f"removed {item}")
    for item in report.get("kept", []):
        print(f"kept {item}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the run's neurons and progress from the store, or its ECS services."""
    if args.target == "ecs":
        if not args.config:
            raise ConfigError("status", "--target ecs needs the config")
        plan, deployer = _ecs(args)
        rows = [("service", "status", "desired", "running", "pending", "task definition"), *deployer.status(plan)]
        widths = [max(len(str(r[i])) for r in rows) for i in range(6)]
        print("\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows))
        return 0
    store_url, broker_url = args.store, args.broker
    if args.config:
        config = load_config(args.config)
        store_url, broker_url = store_url or config.paramstore, broker_url or config.broker
    store_url = _shared_store(args, store_url, "status")
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(open_store(store_url))
        broker = None
        if broker_url and urlsplit(broker_url).scheme != "memory":
            broker = stack.enter_context(connect_broker(broker_url))
        run_id = find_run(store, args.run_id)
        print(format_status(*run_status(store, broker, run_id)))
    return 0
