"""Carrying out an ECS plan against AWS: create or update in place, tear down, describe. The only AWS I/O.

The endpoint is AWS's own unless AWS_ENDPOINT_URL says otherwise (the tests point it at a moto server).
Throttling and transient errors are retried by botocore's standard mode; any other refusal becomes an
OrchestratorError naming the call, the AWS error code and its message.
"""
from __future__ import annotations

import configparser
import logging
import os
import time
from collections.abc import Mapping

from broker.schemes import install_hint
from orchestrator.errors import OrchestratorError

log = logging.getLogger(__name__)

# the container-definition fields the plan sets; AWS adds defaults to the rest, which must not count as changes
_CONTAINER_KEYS = ("name", "image", "command", "environment", "secrets", "logConfiguration", "portMappings")
_TASK_KEYS = ("cpu", "memory", "networkMode", "requiresCompatibilities", "executionRoleArn", "taskRoleArn")


def configured_region(environ: Mapping[str, str] | None = None) -> str | None:
    """The region the standard AWS configuration names, as the SDKs find it, or None.

    AWS_REGION, then AWS_DEFAULT_REGION, then `region` of the profile (AWS_PROFILE, else AWS_DEFAULT_PROFILE,
    else default) in the config file (AWS_CONFIG_FILE, else ~/.aws/config). Read without boto3, so that
    --dry-run works where it is not installed.
    """
    env = os.environ if environ is None else environ
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(var):
            return env[var]
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    path = env.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
    parser = configparser.RawConfigParser()
    try:
        parser.read(os.path.expanduser(path), encoding="utf-8")
    except configparser.Error as exc:
        raise OrchestratorError(f"cannot read the AWS config file {path}: {exc}") from exc
    section = profile if profile == "default" else f"profile {profile}"
    return parser.get(section, "region", fallback=None) or None


class AwsError(OrchestratorError):
    """AWS refused or failed a call."""


class EcsDeployer:
    """Applies ECS plans (see orchestrator.deploy.ecs) idempotently; returns what it created, updated and removed."""

    def __init__(self, region: str) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise OrchestratorError(f"deploying to ECS needs boto3: {install_hint('boto3', 'aws')}") from exc
        self._errors = botocore.exceptions
        attempts = os.environ.get("AWS_MAX_ATTEMPTS", "8")
        config = botocore.config.Config(retries={"mode": "standard",
                                                 "max_attempts": int(attempts) if attempts.isdigit() else 8})
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
        session = boto3.session.Session()
        self.ecs, self.logs, self.discovery = (session.client(name, region_name=region, endpoint_url=endpoint, config=config)
                                               for name in ("ecs", "logs", "servicediscovery"))

    def _call(self, client, op: str, **kwargs) -> dict:
        try:
            return getattr(client, op)(**kwargs)
        except self._errors.ClientError as exc:
            err = exc.response.get("Error", {})
            code, message = err.get("Code", "?"), err.get("Message", "")
            hint = " (the caller lacks an IAM permission)" if "AccessDenied" in code or code == "UnauthorizedOperation" else ""
            raise AwsError(f"AWS {op} failed: {code}: {message}{hint}") from None
        except self._errors.NoCredentialsError:
            raise AwsError("no AWS credentials found (environment, ~/.aws or an instance role)") from None
        except self._errors.BotoCoreError as exc:
            raise AwsError(f"AWS {op} failed: {type(exc).__name__}: {exc}") from None

    # -- pieces ----------------------------------------------------------------------------------------
    def _cluster_active(self, name: str) -> bool:
        clusters = self._call(self.ecs, "describe_clusters", clusters=[name]).get("clusters", [])
        return any(c.get("status") == "ACTIVE" for c in clusters)

    def _log_group(self, name: str, report: dict) -> None:
        found = self._call(self.logs, "describe_log_groups", logGroupNamePrefix=name).get("logGroups", [])
        if not any(g["logGroupName"] == name for g in found):
            self._call(self.logs, "create_log_group", logGroupName=name)
            report["created"].append(f"log group {name}")

    def _cluster(self, plan: dict, report: dict) -> None:
        name = plan["cluster"]
        if not self._cluster_active(name):
            self._call(self.ecs, "create_cluster", clusterName=name)
            report["created"].append(f"cluster {name}")
        provider = plan["capacity_provider"]
        if provider:
            known = self._call(self.ecs, "describe_capacity_providers", capacityProviders=[provider["name"]])
            if not any(p.get("name") == provider["name"] for p in known.get("capacityProviders", [])):
                self._call(self.ecs, "create_capacity_provider", name=provider["name"], autoScalingGroupProvider={
                    "autoScalingGroupArn": provider["autoScalingGroupArn"], "managedScaling": {"status": "ENABLED"}})
                report["created"].append(f"capacity provider {provider['name']}")
            self._call(self.ecs, "put_cluster_capacity_providers", cluster=name, capacityProviders=[provider["name"]],
                       defaultCapacityProviderStrategy=[{"capacityProvider": provider["name"], "weight": 1}])

    def _registries(self, plan: dict, report: dict) -> dict[str, str]:
        """Cloud Map service ARN per discovery name (self-hosted broker and store)."""
        namespace = plan["namespace"]
        if not namespace:
            return {}
        def find_namespace():
            spaces = self._call(self.discovery, "list_namespaces").get("Namespaces", [])
            return next((n["Id"] for n in spaces if n["Name"] == namespace["name"]), None)
        ns_id = find_namespace()
        if ns_id is None:
            op = self._call(self.discovery, "create_private_dns_namespace", Name=namespace["name"], Vpc=namespace["vpc"])
            for _ in range(60):
                state = self._call(self.discovery, "get_operation", OperationId=op["OperationId"])["Operation"]
                if state["Status"] in ("SUCCESS", "FAIL"):
                    break
                time.sleep(1)
            if state["Status"] != "SUCCESS":
                raise AwsError(f"creating the Cloud Map namespace {namespace['name']} failed: {state.get('ErrorMessage')}")
            ns_id = state.get("Targets", {}).get("NAMESPACE") or find_namespace()
            report["created"].append(f"namespace {namespace['name']}")
        existing = {s["Name"]: s["Arn"] for s in self._call(self.discovery, "list_services", Filters=[
            {"Name": "NAMESPACE_ID", "Values": [ns_id], "Condition": "EQ"}]).get("Services", [])}
        arns = {}
        for svc in plan["services"]:
            name = svc.get("discovery")
            if name and name not in existing:
                made = self._call(self.discovery, "create_service", Name=name, NamespaceId=ns_id,
                                  DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}]})
                existing[name] = made["Service"]["Arn"]
                report["created"].append(f"discovery service {name}.{namespace['name']}")
            if name:
                arns[name] = existing[name]
        return arns

    def _task_definition(self, wanted: dict, report: dict) -> str:
        """ARN of a revision equal to `wanted`: the latest one if it matches, else a new registration."""
        try:
            current = self.ecs.describe_task_definition(taskDefinition=wanted["family"])["taskDefinition"]
        except self._errors.ClientError:
            current = None
        if current is not None and _same_task(current, wanted):
            report["unchanged"].append(f"task definition {wanted['family']}")
            return current["taskDefinitionArn"]
        arn = self._call(self.ecs, "register_task_definition", **wanted)["taskDefinition"]["taskDefinitionArn"]
        report["updated" if current else "created"].append(f"task definition {wanted['family']}")
        return arn

    def _services(self, plan: dict, arns: dict[str, str], registries: dict[str, str], report: dict) -> None:
        cluster = plan["cluster"]
        names = [s["serviceName"] for s in plan["services"]]
        current = self._describe(cluster, self._run_services(cluster, plan["run"]) | set(names))
        for svc in plan["services"]:
            name, arn = svc["serviceName"], arns[svc["taskDefinition"]]
            have = current.get(name)
            if have is None:
                spec = {k: v for k, v in svc.items() if k != "discovery"}
                spec.update(cluster=cluster, taskDefinition=arn)
                if svc.get("discovery"):
                    spec["serviceRegistries"] = [{"registryArn": registries[svc["discovery"]]}]
                self._call(self.ecs, "create_service", **spec)
                report["created"].append(f"service {name}")
            elif have["taskDefinition"] != arn or have["desiredCount"] != svc["desiredCount"]:
                self._call(self.ecs, "update_service", cluster=cluster, service=name, taskDefinition=arn,
                           desiredCount=svc["desiredCount"])
                report["updated"].append(f"service {name}")
            else:
                report["unchanged"].append(f"service {name}")
        for name in sorted(set(current) - set(names)):  # e.g. a layer now split into fewer neurons
            self._remove_service(cluster, name)
            report["removed"].append(f"service {name}")

    def _run_services(self, cluster: str, run: str | None) -> set[str]:
        """Names of the services of `run` in `cluster` (of every run when None), as listed."""
        names, token = set(), None
        while True:
            page = self._call(self.ecs, "list_services", cluster=cluster, **({"nextToken": token} if token else {}))
            names |= {arn.rsplit("/", 1)[-1] for arn in page.get("serviceArns", [])}
            token = page.get("nextToken")
            if not token:
                return names if run is None else {n for n in names if n.startswith(f"{run}-")}

    def _describe(self, cluster: str, names: set[str]) -> dict[str, dict]:
        found, names = {}, sorted(names)
        for i in range(0, len(names), 10):
            page = self._call(self.ecs, "describe_services", cluster=cluster, services=names[i:i + 10])
            found.update({s["serviceName"]: s for s in page.get("services", []) if s.get("status") == "ACTIVE"})
        return found

    def _remove_service(self, cluster: str, name: str) -> None:
        self._call(self.ecs, "update_service", cluster=cluster, service=name, desiredCount=0)
        self._call(self.ecs, "delete_service", cluster=cluster, service=name, force=True)

    # -- the commands ----------------------------------------------------------------------------------
    def apply(self, plan: dict) -> dict:
        """Create what is missing, update what changed, remove the run's services the plan no longer has."""
        report = {"created": [], "updated": [], "unchanged": [], "removed": []}
        self._log_group(plan["log_group"], report)
        self._cluster(plan, report)
        registries = self._registries(plan, report)
        arns = {t["family"]: self._task_definition(t, report) for t in plan["task_definitions"]}
        self._services(plan, arns, registries, report)
        return report

    def teardown(self, plan: dict) -> dict:
        """Remove the run's services and deregister its task definitions; the cluster goes if it is then empty."""
        report = {"removed": []}
        cluster = plan["cluster"]
        if not self._cluster_active(cluster):
            return report
        for name in sorted(self._describe(cluster, self._run_services(cluster, plan["run"]))):
            self._remove_service(cluster, name)
            report["removed"].append(f"service {name}")
        for task in plan["task_definitions"]:
            arns = self._call(self.ecs, "list_task_definitions", familyPrefix=task["family"], status="ACTIVE")
            for arn in arns.get("taskDefinitionArns", []):
                self._call(self.ecs, "deregister_task_definition", taskDefinition=arn)
                report["removed"].append(f"task definition {arn.rsplit('/', 1)[-1]}")
        others = self._describe(cluster, self._run_services(cluster, None))  # every active service, any run
        if others:
            report["kept"] = [f"cluster {cluster}: it still runs {', '.join(sorted(others))}"]
        else:
            self._call(self.ecs, "delete_cluster", cluster=cluster)
            report["removed"].append(f"cluster {cluster}")
        return report

    def status(self, plan: dict) -> list[tuple]:
        """(service, status, desired, running, pending, task definition) for each service of the run."""
        cluster = plan["cluster"]
        if not self._cluster_active(cluster):
            raise AwsError(f"cluster {cluster} does not exist: deploy first")
        current = self._describe(cluster, self._run_services(cluster, plan["run"]))
        return [(name, s["status"], s["desiredCount"], s.get("runningCount", 0), s.get("pendingCount", 0),
                 s["taskDefinition"].rsplit("/", 1)[-1]) for name, s in sorted(current.items())]


def _same_task(current: dict, wanted: dict) -> bool:
    """Whether the registered revision `current` already is `wanted` (AWS's added defaults ignored)."""
    if any((current.get(k) or None) != (wanted.get(k) or None) for k in _TASK_KEYS):
        return False
    have, want = current["containerDefinitions"][0], wanted["containerDefinitions"][0]

    def norm(container: dict, key: str):
        value = container.get(key) or None
        if key in ("environment", "secrets") and value:
            return sorted(({"name": e["name"], **{k: e[k] for k in ("value", "valueFrom") if k in e}} for e in value),
                          key=lambda e: e["name"])
        if key == "portMappings" and value:
            return [(m.get("containerPort"), m.get("protocol", "tcp")) for m in value]
        return value
    return all(norm(have, k) == norm(want, k) for k in _CONTAINER_KEYS)
