"""The ECS plan of a network: cluster, capacity provider, log group, task definitions, services. Pure data.

Every neuron, the loss head and the driver is an ECS service of one task. Each has its own task definition
family, since a neuron's role is in its environment. Broker and store URLs, passwords included, reach the
containers only as `secrets` (Secrets Manager or SSM ARNs), never inline.
"""
from __future__ import annotations

import base64

from neuron.topology import Topology
from orchestrator.config import Config
from orchestrator.errors import ConfigError, raise_all

# Fargate's task sizes: cpu units -> (smallest, largest, step) of the memory (MiB) it accepts with them
FARGATE_SIZES = {256: (512, 2048, 512), 512: (1024, 4096, 1024), 1024: (2048, 8192, 1024),
                 2048: (4096, 16384, 1024), 4096: (8192, 30720, 1024), 8192: (16384, 61440, 4096),
                 16384: (32768, 122880, 8192)}
_256_MEMORY = (512, 1024, 2048)  # 0.25 vCPU takes exactly these
# a self-hosted Redis: the password into a config file only the server reads, not onto its command line (`ps`)
REDIS_START = ('umask 077; printf "requirepass %s\\n" "$REDIS_PASSWORD" > /tmp/auth.conf; '
               "exec redis-server /tmp/auth.conf --appendonly yes")


def fargate_size(cpus: float | None, memory_mb: int | None) -> tuple[int, int]:
    """The smallest valid Fargate (cpu units, memory MiB) with at least `cpus` vCPUs and `memory_mb`; ValueError if none."""
    units = round((cpus or 0.25) * 1024)
    memory = memory_mb or 0
    for cpu, (low, high, step) in sorted(FARGATE_SIZES.items()):
        if cpu < units or memory > high:
            continue
        if cpu == 256:
            return cpu, next(m for m in _256_MEMORY if m >= memory)
        return cpu, max(low, low + -(-(memory - low) // step) * step)
    biggest, (_, most, _) = max(FARGATE_SIZES.items())
    raise ValueError(f"{cpus or 0.25} vCPUs with {memory} MiB is more than Fargate's largest task "
                     f"({biggest // 1024} vCPUs, {most} MiB)")


def _sizing(cpus: float | None, memory_mb: int | None, fargate: bool, path: str) -> tuple[str, str]:
    if not fargate:
        return str(max(256, round((cpus or 0.25) * 1024))), str(memory_mb or 512)
    try:
        cpu, memory = fargate_size(cpus, memory_mb)
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    return str(cpu), str(memory)


def _check(config: Config, region: str | None) -> str:
    ecs = config.ecs
    region = region or ecs.region
    problems = []
    if not region:
        problems.append(("ecs.region", "is needed: set it, give --region, or configure AWS "
                                       "(AWS_REGION, AWS_DEFAULT_REGION or the profile's region)"))
    if not ecs.image:
        problems.append(("ecs.image", "names the neuron image in a registry ECS can pull from"))
    if ecs.launch_type == "FARGATE" and not ecs.subnets:
        problems.append(("ecs.subnets", "are needed for Fargate's awsvpc networking"))
    if not ecs.broker_secret_arn:
        problems.append(("ecs.broker_secret_arn", "names the secret holding the broker URL"))
    if not (ecs.store_secret_arn or ecs.store_url):
        problems.append(("ecs.store_secret_arn", "or ecs.store_url names the parameter store"))
    if ecs.store_url and "@" in ecs.store_url:
        problems.append(("ecs.store_url", "must hold no credentials: put such a URL in a secret (store_secret_arn)"))
    if not ecs.execution_role_arn:
        problems.append(("ecs.execution_role_arn", "is needed to read the secrets and write the logs"))
    if ecs.self_hosted:
        for key in ("broker_password_secret_arn", "store_password_secret_arn", "vpc_id"):
            if not getattr(ecs, key):
                problems.append((f"ecs.{key}", "is needed when self_hosted is true"))
        if ecs.broker_password_secret_arn and ecs.broker_password_secret_arn == ecs.store_password_secret_arn:
            problems.append(("ecs.store_password_secret_arn", "must differ from broker_password_secret_arn: the "
                                                              "store holds the run's message key"))
    raise_all([ConfigError(path, reason) for path, reason in problems])
    return region


def ecs_plan(config: Config, topo: Topology, config_text: str, *, region: str | None = None) -> dict:
    """Everything `deploy --target ecs` creates or updates, as JSON-ready data; ConfigError if incomplete."""
    region = _check(config, region)
    ecs, run = config.ecs, topo.run_id
    # task definition families carry the run, so two runs sharing ecs.task_definition never share a family
    base = (ecs.task_definition or run).split(":")[0]
    prefix = run if base == run else f"{base}-{run}"
    cluster = ecs.cluster or f"cuttlefish-{run}"
    log_group = ecs.log_group or f"/cuttlefish/{run}"
    fargate = ecs.launch_type == "FARGATE"
    secrets = [{"name": "CUTTLEFISH_BROKER", "valueFrom": ecs.broker_secret_arn}]
    environment = [{"name": "CUTTLEFISH_RUN_ID", "value": run}, {"name": "OPENBLAS_NUM_THREADS", "value": "1"}]
    if ecs.store_secret_arn:
        secrets.append({"name": "CUTTLEFISH_STORE", "valueFrom": ecs.store_secret_arn})
    else:
        environment.append({"name": "CUTTLEFISH_STORE", "value": ecs.store_url})

    def task(role: str, image: str, command: list[str], env: list[dict], task_secrets: list[dict],
             cpus: float | None, memory: int | None, port: int | None = None, path: str = "deploy") -> dict:
        cpu, mem = _sizing(cpus, memory, fargate, path)
        container = {
            "name": role, "image": image, "essential": True, "command": command,
            "environment": sorted(env, key=lambda e: e["name"]), "secrets": sorted(task_secrets, key=lambda e: e["name"]),
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": role}},
        }
        if port:
            container["portMappings"] = [{"containerPort": port, "protocol": "tcp"}]
        definition = {"family": f"{prefix}-{role}", "networkMode": "awsvpc", "cpu": cpu, "memory": mem,
                      "requiresCompatibilities": [ecs.launch_type], "executionRoleArn": ecs.execution_role_arn,
                      "containerDefinitions": [container]}
        if ecs.task_role_arn:
            definition["taskRoleArn"] = ecs.task_role_arn
        return definition

    tasks, services = [], []

    def service(role: str, definition: dict, discovery: str | None = None) -> None:
        tasks.append(definition)
        svc = {"serviceName": f"{run}-{role}", "taskDefinition": definition["family"], "desiredCount": 1,
               "networkConfiguration": {"awsvpcConfiguration": {
                   "subnets": list(ecs.subnets), "securityGroups": list(ecs.security_groups),
                   "assignPublicIp": "ENABLED" if ecs.assign_public_ip else "DISABLED"}}}
        if ecs.auto_scaling_group_resource_id:
            svc["capacityProviderStrategy"] = [{"capacityProvider": f"{cluster}-asg", "weight": 1}]
        else:
            svc["launchType"] = ecs.launch_type
        if discovery:
            svc["discovery"] = discovery
        services.append(svc)

    for role in topo.roles():
        cpus, memory = (None, None) if role.is_head else config.deploy.for_layer(role.layer)
        env = environment + [{"name": k, "value": v} for k, v in role.env().items()]
        where = "deploy" if role.is_head else f"deploy (layer {role.layer})"
        service(role.slug, task(role.slug, ecs.image, ["python3", "-m", "neuron"], env, secrets, cpus, memory,
                                path=where))
    # the driver gets the config itself (base64 in its environment): a changed config updates only its task
    driver_env = [*environment, {"name": "CUTTLEFISH_CONFIG_B64", "value": base64.b64encode(config_text.encode()).decode()}]
    driver_cmd = ["sh", "-c", 'printf %s "$CUTTLEFISH_CONFIG_B64" | base64 -d > /tmp/network.yaml && exec python3 -m '
                  f'orchestrator train /tmp/network.yaml --target external --run-id {run} --resume-or-start']
    service("driver", task("driver", ecs.image, driver_cmd, driver_env, secrets, 1.0, 2048))
    namespace = None
    if ecs.self_hosted:
        namespace = {"name": ecs.namespace, "vpc": ecs.vpc_id}
        # each server gets only its own password
        password = [{"name": "RABBITMQ_DEFAULT_PASS", "valueFrom": ecs.broker_password_secret_arn}]
        service("rabbitmq", task("rabbitmq", ecs.rabbitmq_image, [], [{"name": "RABBITMQ_DEFAULT_USER", "value": "cuttlefish"}],
                                 password, 1.0, 2048, 5672), discovery="rabbitmq")
        redis_secret = [{"name": "REDIS_PASSWORD", "valueFrom": ecs.store_password_secret_arn}]
        service("redis", task("redis", ecs.redis_image, ["sh", "-c", REDIS_START], [], redis_secret, 0.5, 1024, 6379),
                discovery="redis")
    return {
        "region": region, "run": run, "cluster": cluster, "log_group": log_group,
        "capacity_provider": ({"name": f"{cluster}-asg", "autoScalingGroupArn": ecs.auto_scaling_group_resource_id}
                              if ecs.auto_scaling_group_resource_id else None),
        "namespace": namespace, "task_definitions": tasks, "services": services,
    }
