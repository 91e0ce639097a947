"""deploy / status / teardown --target ecs against a moto server, reached through AWS_ENDPOINT_URL."""
from __future__ import annotations

import json

import boto3
import pytest
import yaml

from orchestrator.cli import main
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

ECS = {
    "task_definition": "cuttlefish-task-dev2:7", "cluster": "cuttlefish-dev", "region": "us-east-1",
    "auto_scaling_group_resource_id": "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:u:autoScalingGroupName/EC2-Cuttlefish",
    "launch_type": "EC2", "subnets": ["subnet-12345678"], "security_groups": ["sg-12345678"],
    "execution_role_arn": "arn:aws:iam::123456789012:role/ecsTaskExecution",
    "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cuttlefish/neuron:1",
    "broker_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:cf-broker",
    "store_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:cf-store",
}


def _write(tmp_path, widths=(32, 16), shards=(2, 1, 1), **ecs):
    doc = {"neural_network": {"num_of_hidden_layers": 2, "num_nodes_per_layer": list(widths), "num_classes": 10,
                              "shards_per_layer": list(shards)},
           "training": {"epochs": 1, "data_batch_size": 64}, "deploy": {"cpus": [0.5, 0.25, 0.25]},
           "ecs": {**ECS, **ecs}}
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """The ECS client of the moto server, with a VPC, subnet and security group the configs name."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"cf-{vpc}", Description="cuttlefish", VpcId=vpc)["GroupId"]
    monkeypatch.setitem(ECS, "subnets", [subnet])
    monkeypatch.setitem(ECS, "security_groups", [group])
    monkeypatch.setitem(ECS, "vpc_id", vpc)
    return boto3.client("ecs", region_name="us-east-1", endpoint_url=moto_endpoint)


def _lines(capsys):
    return capsys.readouterr().out.splitlines()


def _services(ecs):
    """Names of the cluster's active services (deleted ones stay listed for a while, as DRAINING or INACTIVE)."""
    arns = ecs.list_services(cluster="cuttlefish-dev")["serviceArns"]
    described = ecs.describe_services(cluster="cuttlefish-dev", services=arns)["services"] if arns else []
    return sorted(s["serviceName"] for s in described if s["status"] == "ACTIVE")


def test_deploy_redeploy_change_and_teardown(tmp_path, aws, capsys):
    config = _write(tmp_path)
    assert main(["deploy", config, "--target", "ecs", "--run-id", "r1"]) == 0
    out = _lines(capsys)
    assert "created cluster cuttlefish-dev" in out and "created capacity provider cuttlefish-dev-asg" in out
    names = ["r1-driver", "r1-head", "r1-l1-0", "r1-l1-1", "r1-l2-0", "r1-l3-0"]
    assert _services(aws) == names
    td = aws.describe_task_definition(taskDefinition="cuttlefish-task-dev2-r1-l1-0")["taskDefinition"]
    container = td["containerDefinitions"][0]
    assert td["cpu"] == "512" and container["logConfiguration"]["logDriver"] == "awslogs"
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "CUTTLEFISH_BROKER": ECS["broker_secret_arn"], "CUTTLEFISH_STORE": ECS["store_secret_arn"]}
    assert not any("amqp" in e["value"] or "redis" in e["value"] for e in container["environment"])

    assert main(["deploy", config, "--target", "ecs", "--run-id", "r1"]) == 0  # again: nothing new
    out = _lines(capsys)
    assert not [line for line in out if line.startswith(("created", "updated", "removed"))], out
    assert _services(aws) == names
    assert len(aws.list_task_definitions(familyPrefix="cuttlefish-task-dev2-r1-l1-0")["taskDefinitionArns"]) == 1

    changed = _write(tmp_path, widths=(48, 16))  # a layer's size: only the driver's task carries the config
    assert main(["deploy", changed, "--target", "ecs", "--run-id", "r1"]) == 0
    out = [line for line in _lines(capsys) if line.startswith(("created", "updated", "removed"))]
    assert out == ["updated task definition cuttlefish-task-dev2-r1-driver", "updated service r1-driver"]

    fewer = _write(tmp_path, widths=(48, 16), shards=(1, 1, 1))
    assert main(["deploy", fewer, "--target", "ecs", "--run-id", "r1"]) == 0
    assert "removed service r1-l1-1" in _lines(capsys)
    assert _services(aws) == ["r1-driver", "r1-head", "r1-l1-0", "r1-l2-0", "r1-l3-0"]

    assert main(["status", fewer, "--target", "ecs", "--run-id", "r1"]) == 0
    rows = _lines(capsys)[1:]
    assert sorted(r.split()[0] for r in rows) == ["r1-driver", "r1-head", "r1-l1-0", "r1-l2-0", "r1-l3-0"]
    assert all(r.split()[1] == "ACTIVE" and r.split()[2] == "1" for r in rows)

    assert main(["teardown", fewer, "--target", "ecs", "--run-id", "r1"]) == 0
    assert "removed cluster cuttlefish-dev" in _lines(capsys)
    assert not any(c["status"] == "ACTIVE" for c in aws.describe_clusters(clusters=["cuttlefish-dev"])["clusters"])


def test_self_hosted_broker_and_store_through_cloud_map(tmp_path, aws, moto_endpoint, capsys):
    config = _write(tmp_path, cluster="selfhosted", auto_scaling_group_resource_id=None, launch_type="FARGATE",
                    self_hosted=True, broker_password_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:broker-pw",
                    store_password_secret_arn="arn:aws:secretsmanager:us-east-1:1:secret:store-pw")
    assert main(["deploy", config, "--target", "ecs", "--run-id", "sh"]) == 0
    out = _lines(capsys)
    assert "created discovery service rabbitmq.cuttlefish.local" in out and "created discovery service redis.cuttlefish.local" in out
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=moto_endpoint)
    svc = ecs.describe_services(cluster="selfhosted", services=["sh-rabbitmq"])["services"][0]
    assert svc["serviceRegistries"] and svc["launchType"] == "FARGATE"
    td = ecs.describe_task_definition(taskDefinition="cuttlefish-task-dev2-sh-rabbitmq")["taskDefinition"]
    assert td["cpu"] == "1024" and td["memory"] == "2048"  # a valid Fargate size
    assert td["containerDefinitions"][0]["secrets"] == [{"name": "RABBITMQ_DEFAULT_PASS",
                                                         "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:broker-pw"}]
    redis = ecs.describe_task_definition(taskDefinition="cuttlefish-task-dev2-sh-redis")["taskDefinition"]
    container = redis["containerDefinitions"][0]  # the store's own password, read from a file, not argv
    assert container["secrets"] == [{"name": "REDIS_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:store-pw"}]
    assert "--requirepass" not in container["command"][2]
    assert main(["deploy", config, "--target", "ecs", "--run-id", "sh"]) == 0
    assert not [line for line in _lines(capsys) if line.startswith("created")]
    other = _write(tmp_path, cluster="selfhosted", auto_scaling_group_resource_id=None, launch_type="FARGATE")
    assert main(["deploy", other, "--target", "ecs", "--run-id", "other"]) == 0  # a second run, same cluster
    capsys.readouterr()
    assert main(["teardown", config, "--target", "ecs", "--run-id", "sh"]) == 0
    out = _lines(capsys)
    assert "removed service sh-rabbitmq" in out and not any("other-" in line for line in out if line.startswith("removed"))
    assert any(line.startswith("kept cluster selfhosted") for line in out)


def test_dry_run_prints_the_plan_and_calls_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail
    assert main(["deploy", _write(tmp_path), "--target", "ecs", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["serviceName"] for s in plan["services"]][-1] == "cf-net-driver"
    assert len(plan["task_definitions"]) == 6


def test_a_bad_subnet_is_a_clear_error(tmp_path, aws, capsys):
    assert main(["deploy", _write(tmp_path, subnets=["subnet-0bad"], cluster="badnet"), "--target", "ecs"]) == 1
    err = capsys.readouterr().err
    assert "AWS create_service failed: InvalidParameterException" in err and "subnet-0bad" in err


def test_aws_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["deploy", _write(tmp_path), "--target", "ecs"]) == 1
    err = capsys.readouterr().err
    assert "AWS describe_log_groups failed" in err and "EndpointConnectionError" in err
    assert main(["deploy", str(ROOT / "examples/tiny.yaml"), "--target", "ecs", "--dry-run"]) == 2
    assert "ecs.region" in capsys.readouterr().err
