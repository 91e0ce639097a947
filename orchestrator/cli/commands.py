"""The command line `python -m orchestrator`: train, plan, evaluate, predict (the rest in operations.py)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import filecmp
import logging
import os
import shutil
import sys
from urllib.parse import urlsplit

from broker.errors import BrokerError
from compose import context as compose_context
from neuron.errors import NeuronError
from neuron.kernels import HIDDEN_ACTIVATIONS
from neuron.service import LOG_LEVELS, log_level
from neuron.topology import RUN_ID
from orchestrator import __version__
from orchestrator.cli import operations
from orchestrator.cli.operations import config_of
from orchestrator.config import Config
from orchestrator.config.loader import locate
from orchestrator.config.plan import build_plan, format_plan
from orchestrator.data.mnist import check_fits, load_mnist, to_inputs
from orchestrator.data.model import describe, load_model, model_sizes, read_meta, save_model
from orchestrator.data.pictures import load_digits
from orchestrator.errors import ConfigError, DataError, ModelFileError, OrchestratorError, raise_all
from orchestrator.runtimes import TARGETS
from orchestrator.training.options import DriverOptions
from orchestrator.training.plot import chart, check_plot_path, write_chart
from orchestrator.training.progress import Progress
from orchestrator.training.reference import accuracy, predict
from orchestrator.training.runner import make_schedule, new_run_id, train_run
from paramstore import open_store
from paramstore.checkpoint import Checkpoints
from paramstore.errors import StoreError
from paramstore.manifest import Manifest

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    prog = "cuttlefish" if os.path.basename(sys.argv[0]) == "cuttlefish" else "python -m orchestrator"
    p = argparse.ArgumentParser(prog=prog, description="Cuttlefish: train a YAML network as message-passing neurons.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                   help="print the version and exit")
    p.add_argument("--log-level", type=log_level, metavar="LEVEL",
                   help=f"the driver's logging: {', '.join(LOG_LEVELS)} [CUTTLEFISH_LOG_LEVEL] (default WARNING)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --log-level also after the command (`train CONFIG --log-level INFO`), where people put it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", type=log_level, metavar="LEVEL", default=argparse.SUPPRESS,
                        help="the driver's logging level (as before the command)")

    plan = sub.add_parser("plan", parents=[common], help="show the neurons a config is split into")
    plan.add_argument("config", help="the YAML config")

    train = sub.add_parser("train", parents=[common], help="train a network")
    train.add_argument("config", help="the YAML config")
    train.add_argument("--data", help="folder with the MNIST IDX files")
    train.add_argument("--epochs", type=int, help="epochs to train (default: the config's training.epochs)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    train.add_argument("--target", choices=TARGETS, default="embedded",
                       help="embedded: a thread per neuron; local: a supervised OS process per neuron; "
                            "external: neurons run elsewhere (python -m neuron, e.g. in containers)")
    train.add_argument("--broker", default=os.environ.get("CUTTLEFISH_BROKER"),
                       help="broker URL [CUTTLEFISH_BROKER] (default: the config's, else memory://)")
    train.add_argument("--store", default=os.environ.get("CUTTLEFISH_STORE"),
                       help="parameter store URL [CUTTLEFISH_STORE] (default: the config's, else memory://)")
    train.add_argument("--run-id", help="name of the run in the store (default: a new one)")
    train.add_argument("--resume", action="store_true", help="continue --run-id from its last committed checkpoint")
    train.add_argument("--resume-or-start", action="store_true",
                       help="continue --run-id if the store has it, else start it (for drivers that get restarted)")
    train.add_argument("--plot", metavar="FILE.svg|FILE.png",
                       help="write a loss and accuracy chart here (.png needs matplotlib)")
    train.add_argument("--init", metavar="MODEL.npz", help="start from these weights instead of the seeded init")
    train.add_argument("--save-model", metavar="MODEL.npz", help="write the trained weights here")
    train.add_argument("--metrics", metavar="FILE.jsonl",
                       help="write per-step and per-epoch metrics here as JSON Lines (a resumed run appends)")
    train.add_argument("--quiet", action="store_true", help="no progress output")

    dep = sub.add_parser("deploy", parents=[common], help="write what runs the network on a deployment target")
    dep.add_argument("config", help="the YAML config")
    dep.add_argument("--target", choices=("compose", "ecs"), required=True,
                     help="compose: write a docker-compose file; ecs: create or update the run's ECS services")
    dep.add_argument("-o", "--output",
                     help="compose: the file to write (default docker-compose.yml; '-' for standard output); "
                          "ecs: write the plan as JSON to this file too")
    dep.add_argument("--run-id", help="run id the services train (default: cf-<config name>)")
    dep.add_argument("--region", help="ecs: AWS region (default: the config's ecs.region, else AWS_REGION, "
                                     "AWS_DEFAULT_REGION or the AWS profile's region)")
    dep.add_argument("--dry-run", action="store_true",
                     help="change nothing: compose prints the file it would write, ecs prints its plan as JSON "
                          "(or writes it to -o) and calls nothing")
    dep.add_argument("--force", action="store_true",
                     help="compose: replace the output file even if deploy did not write it for this config")
    dep.add_argument("--image", help="compose: run this prebuilt runtime image instead of building one")
    dep.add_argument("--build-context", metavar="DIR",
                     help="compose: build the runtime image from this folder (default: this checkout; installed "
                          "from a wheel, a copy written next to the compose file)")

    down = sub.add_parser("teardown", parents=[common], help="remove what deploy created")
    down.add_argument("config", help="the YAML config it was deployed from")
    down.add_argument("--target", choices=("ecs",), required=True, help="ecs: remove the run's services and task definitions")
    down.add_argument("--run-id", help="run id (default: cf-<config name>)")
    down.add_argument("--region", help="AWS region (default as for deploy)")

    st = sub.add_parser("status", parents=[common], help="the neurons and progress of a run")
    st.add_argument("config", nargs="?", help="YAML config whose store and broker URLs to use")
    st.add_argument("--store", default=os.environ.get("CUTTLEFISH_STORE"), help="parameter store URL [CUTTLEFISH_STORE]")
    st.add_argument("--broker", default=os.environ.get("CUTTLEFISH_BROKER"), help="broker URL for queue depths [CUTTLEFISH_BROKER]")
    st.add_argument("--run-id", help="the run (default: the newest in the store)")
    st.add_argument("--target", choices=("store", "ecs"), default="store",
                    help="store: neurons and progress from the store; ecs: the run's ECS services")
    st.add_argument("--region", help="ecs: AWS region (default as for deploy)")

    sc = sub.add_parser("scale", parents=[common], help="split a layer of a running run into a different number of neurons")
    sc.add_argument("config", nargs="?", help="YAML config whose store URL to use")
    sc.add_argument("--layer", type=int, required=True, help="layer number (1 = first hidden layer)")
    sc.add_argument("--shards", type=int, required=True, help="neurons the layer is split into from now on")
    sc.add_argument("--store", default=os.environ.get("CUTTLEFISH_STORE"), help="parameter store URL [CUTTLEFISH_STORE]")
    sc.add_argument("--run-id", help="the run (default: the newest in the store)")
    sc.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the driver to carry it out")
    sc.add_argument("--target", choices=("local", "compose"), default="local",
                    help="local: the driver's supervisor replaces the processes; compose: this command "
                         "regenerates the compose file and applies it to that layer's services")
    sc.add_argument("-f", "--compose-file", default="docker-compose.yml", help="compose: the file to regenerate")

    ev = sub.add_parser("evaluate", parents=[common], help="test accuracy of a saved model")
    ev.add_argument("config", nargs="?",
                    help="the YAML config it was trained from (only for model files that do not describe themselves)")
    ev.add_argument("--model", required=True, metavar="MODEL.npz", help="the model file")
    ev.add_argument("--data", help="folder with the MNIST IDX files")

    ex = sub.add_parser("examples", parents=[common], help="list the example configs, or copy them into a folder")
    ex.add_argument("folder", nargs="?", help="copy the examples into this folder (made if missing)")
    ex.add_argument("--force", action="store_true", help="overwrite example files that differ")

    pr = sub.add_parser("predict", parents=[common], help="print the digit of each image")
    pr.add_argument("--model", required=True, metavar="MODEL.npz", help="the model file")
    pr.add_argument("--activation", choices=HIDDEN_ACTIVATIONS,
                    help="hidden activation, only for model files that do not record theirs")
    pr.add_argument("--quiet", action="store_true", help="do not say how the pictures were brought to MNIST's form")
    pr.add_argument("inputs", nargs="+",
                    help="pictures of digits: PNG (JPEG and others with Pillow) of any size and polarity, or .npy "
                         "arrays of 28x28 images")
    return p


def _cmd_plan(args: argparse.Namespace) -> int:
    print(format_plan(build_plan(config_of(args), "plan")))
    return 0


def _writable(path: str) -> str | None:
    """Why `path` cannot be written, or None; probed by writing, since permissions alone do not tell (root, read-only mounts)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"folder {folder} does not exist"
    if os.path.isdir(path):
        return f"{path} is a folder"
    existed = os.path.exists(path)
    try:
        with open(path, "ab"):  # appending changes nothing in a file that exists
            pass
        # the model is written beside itself first, then moved into place
        probe = f"{os.path.abspath(path)}.tmp.npz"
        if not os.path.exists(probe):
            with open(probe, "wb"):
                pass
            os.remove(probe)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    finally:
        if not existed and os.path.exists(path) and os.path.getsize(path) == 0:
            os.remove(path)
    return None


def _check_train_args(args: argparse.Namespace, config: Config) -> None:
    """Every problem of train's flags at once, before anything starts (outputs are checked writable now, not after training)."""
    problems = []
    if args.resume and args.resume_or_start:
        problems.append(ConfigError("--resume-or-start", "cannot be combined with --resume"))
    if (args.resume or args.resume_or_start) and not args.run_id:
        problems.append(ConfigError("--resume", "needs --run-id of the run to continue"))
    if args.resume_or_start and args.init:
        problems.append(ConfigError("--init", "cannot be combined with --resume-or-start"))
    if args.resume and args.init:
        problems.append(ConfigError("--init", "cannot be combined with --resume (the run's checkpoint has the weights)"))
    if args.max_steps is not None and args.max_steps < 1:
        problems.append(ConfigError("--max-steps", "must be at least 1"))
    if args.run_id and not RUN_ID.match(args.run_id):
        problems.append(ConfigError("--run-id", f"must be 1-64 of A-Z a-z 0-9 _ . - (got {args.run_id!r})"))
    if args.plot:
        try:
            check_plot_path(args.plot)
        except ConfigError as exc:
            problems.append(exc)
    for flag, path in (("--save-model", args.save_model), ("--metrics", args.metrics), ("--plot", args.plot)):
        why = _writable(path) if path else None
        if why:
            problems.append(ConfigError(flag, why))
    for key, url in (("broker", config.broker), ("paramstore", config.paramstore)):
        if args.target != "embedded" and urlsplit(url).scheme == "memory":
            problems.append(ConfigError(key, f"--target {args.target} runs a process per neuron, which cannot share "
                                             f"a memory:// {key}; give --{'store' if key == 'paramstore' else key} "
                                             "a service URL"))
    raise_all(problems)


def _cmd_train(args: argparse.Namespace) -> int:
    config = config_of(args)
    _check_train_args(args, config)
    train = load_mnist("train", args.data)
    test = load_mnist("test", args.data)
    check_fits(config.network.num_inputs, config.network.num_classes, training=train, test=test)
    initial = None
    if args.init:
        initial = load_model(args.init, config.network.sizes, config.training.dtype)
    run_id = args.run_id or new_run_id()
    schedule = make_schedule(config, len(train), args.max_steps)
    resume = args.resume
    if args.resume_or_start:
        state = _stored_run(config.paramstore, run_id)
        if state is not None and state.status == "done":
            print(f"run {run_id} is already finished; remove it from the store to train again", file=sys.stderr)
            if args.save_model:  # a driver killed after finishing but before saving still leaves the model
                with open_store(config.paramstore) as store:
                    params = Checkpoints(store, run_id).read_model(state.latest, len(config.network.sizes) - 1)
                _save_model(args.save_model, params, config, args.config, steps=state.latest,
                            test_accuracy=state.test_accuracy)
            if state.test_accuracy is not None:
                print(f"test accuracy: {state.test_accuracy:.4f}")
            return 0
        resume = state is not None and state.latest is not None
    losses: dict[int, float] = {}
    with contextlib.ExitStack() as stack:
        # a resumed run continues its file; a new run starts the file afresh
        mode = "a" if resume else "w"
        metrics = stack.enter_context(open(args.metrics, mode, encoding="utf-8")) if args.metrics else None
        progress = Progress(schedule.total_steps, schedule.steps_per_epoch, run_id=run_id, quiet=args.quiet,
                            metrics=metrics)
        progress.begin(sizes=list(config.network.sizes), resume=resume, config=os.path.abspath(args.config))

        def on_step(step: int, loss: float, samples: int) -> None:
            losses[step] = loss
            progress.step(step, loss, samples)

        options = DriverOptions(on_step=on_step, on_epoch=progress.epoch)
        if not args.quiet:
            print(f"run {run_id}: {'-'.join(map(str, config.network.sizes))}, {len(build_plan(config, run_id).neurons())} neurons, "
                  f"{schedule.total_steps} steps{' (resuming)' if resume else ''}", file=sys.stderr)
        result = train_run(config, train, test, run_id=run_id, max_steps=args.max_steps, resume=resume,
                           initial=initial, options=options, target=args.target)
    if args.save_model:
        # the steps the model has been trained, not only those of this driver (a resumed run starts late)
        _save_model(args.save_model, result.params, config, args.config, steps=schedule.total_steps,
                    test_accuracy=result.test_accuracy)
    if args.plot:
        title = f"run {run_id}: {'-'.join(map(str, config.network.sizes))}, {config.network.activation}"
        write_chart(chart(losses, result.epoch_accuracy, schedule.steps_per_epoch, schedule.total_steps, title),
                    args.plot)
    if not args.quiet:
        rate = result.samples / max(result.seconds, 1e-9)
        print(f"trained {result.steps} steps in {result.seconds:.1f} s ({rate:,.0f} samples/s)", file=sys.stderr)
    print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


def _stored_run(store_url: str, run_id: str) -> Manifest | None:
    """The manifest of `run_id` in the store, or None."""
    with open_store(store_url) as store:
        return Checkpoints(store, run_id).manifest()


def _model_meta(config: Config, config_path: str, **extra) -> dict:
    """What a model file trained from `config` says about itself: the model, not where it was trained.

    The broker and store URLs and the run id are left out, so the same training gives the same file
    byte for byte whichever services ran it (the recovery tests compare model files), and a shared
    model file carries no host names or credentials.
    """
    values = dataclasses.asdict(config)
    del values["broker"], values["paramstore"]
    return {"source": os.path.abspath(config_path), "values": values, **extra}


def _save_model(path: str, params, config: Config, config_path: str, **extra) -> None:
    classes = list(range(config.network.num_classes))
    save_model(path, params, describe(params, config.network.activation, classes, _model_meta(config, config_path),
                                      **extra))


def _activation(meta: dict, given: str | None, flag: str, path: str) -> str:
    """The model's activation: recorded in its file, else `given`; a contradiction is an error."""
    recorded = meta.get("activation")
    if recorded and given and given != recorded:
        raise ConfigError(flag, f"{path} was trained with {recorded}, not {given}")
    if not (recorded or given):
        raise ConfigError(flag, f"{path} does not record its activation (an older model file): give "
                                f"{'--activation' if flag == '--activation' else 'the config it was trained from'}")
    return recorded or given


def _cmd_evaluate(args: argparse.Namespace) -> int:
    meta = read_meta(args.model)
    if args.config:
        config = config_of(args)
        sizes, dtype, given = config.network.sizes, config.training.dtype, config.network.activation
    else:
        sizes, dtype, given = meta.get("sizes"), meta.get("dtype"), None
    activation = _activation(meta, given, "config" if args.config else "evaluate", args.model)
    params = load_model(args.model, tuple(sizes) if sizes else None, dtype)
    test = load_mnist("test", args.data)
    print(f"test accuracy: {accuracy(params, test, activation, str(params[0][0].dtype)):.4f}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    meta = read_meta(args.model)
    params = load_model(args.model)
    activation = _activation(meta, args.activation, "--activation", args.model)
    if model_sizes(params)[0] != 784:
        raise ConfigError("--model", f"takes {model_sizes(params)[0]} inputs, images have 784 pixels")
    images, notes = load_digits(args.inputs)
    if not args.quiet:
        for path, done in notes:
            print(f"{path}: {'; '.join(done)}", file=sys.stderr)
    classes = meta.get("classes") or list(range(model_sizes(params)[-1]))
    digits = predict(params, to_inputs(images, params[0][0].dtype), activation)
    print(" ".join(str(classes[int(d)]) for d in digits))
    return 0


def _cmd_examples(args: argparse.Namespace) -> int:
    folder = compose_context.examples_dir()
    if folder is None:
        raise OrchestratorError("this installation has no example configs (reinstall the package)")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    if not args.folder:
        print(f"# in {folder}; `examples DIR` copies them")
        print("\n".join(names))
        return 0
    os.makedirs(args.folder, exist_ok=True)
    clashes = [n for n in names if os.path.exists(os.path.join(args.folder, n))
               and not filecmp.cmp(os.path.join(folder, n), os.path.join(args.folder, n), shallow=False)]
    if clashes and not args.force:
        raise ConfigError("examples", f"{', '.join(clashes)} in {args.folder} differ from the shipped examples; "
                                      "--force overwrites them")
    for name in names:
        shutil.copyfile(os.path.join(folder, name), os.path.join(args.folder, name))
    print(f"copied {len(names)} example configs to {args.folder}", file=sys.stderr)
    return 0


COMMANDS = {"plan": _cmd_plan, "deploy": operations.cmd_deploy, "teardown": operations.cmd_teardown,
            "status": operations.cmd_status, "scale": operations.cmd_scale, "train": _cmd_train,
            "evaluate": _cmd_evaluate, "predict": _cmd_predict, "examples": _cmd_examples}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, 1 for a failed run)."""
    args = _parser().parse_args(argv)
    level = args.log_level
    if level is None:
        try:
            level = log_level(os.environ.get("CUTTLEFISH_LOG_LEVEL") or "WARNING")
        except argparse.ArgumentTypeError as exc:
            print(f"orchestrator: config error: CUTTLEFISH_LOG_LEVEL: {exc}", file=sys.stderr)
            return EXIT_USAGE
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when logging was configured before (tests, embedding)
    # pika logs every failed connection attempt as an error with a traceback; ours say what matters
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        if getattr(args, "config", None):  # found after parsing: name the config file and the key's line
            locate(exc, args.config)
        print(f"orchestrator: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, ModelFileError) as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OrchestratorError, BrokerError, StoreError, NeuronError) as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        return 130
