"""The ECS plan without AWS: the shipped example deploys as documented, the region, valid Fargate sizes."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from orchestrator.deploy.aws import configured_region
from orchestrator.deploy.ecs import fargate_size
from tests.conftest import ROOT

EXAMPLE = str(ROOT / "examples" / "ecs.yaml")
AWS_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE")

# Fargate's table of task sizes (AWS ECS developer guide, "Task CPU and memory"), written out independently
VALID = {256: {512, 1024, 2048}, 512: set(range(1024, 4097, 1024)), 1024: set(range(2048, 8193, 1024)),
         2048: set(range(4096, 16385, 1024)), 4096: set(range(8192, 30721, 1024)),
         8192: set(range(16384, 61441, 4096)), 16384: set(range(32768, 122881, 8192))}


@pytest.fixture
def no_aws_config(monkeypatch, tmp_path):
    for var in AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail


def _dry_run(capsys, *extra) -> dict:
    assert main(["deploy", EXAMPLE, "--target", "ecs", "--dry-run", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_shipped_example_plans_with_a_region(no_aws_config, capsys):
    plan = _dry_run(capsys, "--region", "eu-west-1")
    assert plan["region"] == "eu-west-1"
    assert [s["serviceName"] for s in plan["services"]] == [
        "cf-ecs-l1-0", "cf-ecs-l1-1", "cf-ecs-l2-0", "cf-ecs-l3-0", "cf-ecs-head", "cf-ecs-driver"]
    for task in plan["task_definitions"]:
        assert int(task["memory"]) in VALID[int(task["cpu"])]


def test_no_region_anywhere_is_a_clear_error(no_aws_config, capsys):
    assert main(["deploy", EXAMPLE, "--target", "ecs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "ecs.region" in err and "AWS_REGION" in err and "profile" in err


@pytest.mark.parametrize("env, config, region", [
    ({"AWS_REGION": "eu-north-1", "AWS_DEFAULT_REGION": "us-west-2"}, "", "eu-north-1"),
    ({"AWS_DEFAULT_REGION": "us-west-2"}, "", "us-west-2"),
    ({}, "[default]\nregion = ap-south-1\n", "ap-south-1"),
    ({"AWS_PROFILE": "work"}, "[default]\nregion = ap-south-1\n[profile work]\nregion = sa-east-1\n", "sa-east-1"),
    ({"AWS_PROFILE": "bare"}, "[default]\nregion = ap-south-1\n[profile bare]\noutput = json\n", None),
])
def test_region_comes_from_the_standard_aws_configuration(no_aws_config, monkeypatch, tmp_path, capsys,
                                                          env, config, region):
    (tmp_path / "aws-config").write_text(config)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert configured_region() == region
    if region:
        assert _dry_run(capsys)["region"] == region
        assert _dry_run(capsys, "--region", "me-south-1")["region"] == "me-south-1"  # the flag wins


@pytest.mark.parametrize("cpus, memory, expected", [
    (0.25, 8000, (1024, 8192)),  # 0.25 vCPU takes at most 2 GiB: the memory decides the cpu
    (0.25, None, (256, 512)),
    (0.25, 600, (256, 1024)),
    (0.5, 3000, (512, 3072)),
    (0.3, 256, (512, 1024)),
    (4, 40000, (8192, 40960)),
    (16, 122880, (16384, 122880)),
])
def test_fargate_sizes_are_valid_pairs(cpus, memory, expected):
    assert fargate_size(cpus, memory) == expected


def test_every_request_gets_a_valid_pair_no_smaller_than_asked():
    for cpus in (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16):
        for memory in (None, 100, 512, 1000, 2048, 2049, 5000, 8192, 9000, 30000, 61440, 70000, 122880):
            cpu, mem = fargate_size(cpus, memory)
            assert mem in VALID[cpu] and cpu >= cpus * 1024 and mem >= (memory or 0), (cpus, memory, cpu, mem)


def test_a_size_beyond_fargate_is_refused_clearly(no_aws_config, tmp_path, capsys):
    text = (ROOT / "examples" / "ecs.yaml").read_text().replace("memory_mb: 512", "memory_mb: [512, 200000, 512]")
    path = tmp_path / "big.yaml"
    path.write_text(text)
    assert main(["deploy", str(path), "--target", "ecs", "--dry-run", "--region", "eu-west-1"]) == 2
    err = capsys.readouterr().err
    assert "deploy (layer 2)" in err and "200000 MiB" in err and "largest" in err


def _self_hosted(tmp_path, **keys) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in {"self_hosted": "true", "vpc_id": "vpc-1", **keys}.items())
    path = tmp_path / "self-hosted.yaml"
    path.write_text((ROOT / "examples" / "ecs.yaml").read_text().replace("\necs:\n", f"\necs:\n{extra}"))
    return str(path)


def test_self_hosted_servers_each_get_only_their_own_password(no_aws_config, tmp_path, capsys):
    config = _self_hosted(tmp_path, broker_password_secret_arn="arn:broker-pw", store_password_secret_arn="arn:store-pw")
    assert main(["deploy", config, "--target", "ecs", "--dry-run", "--region", "eu-west-1"]) == 0
    tasks = {t["family"].rsplit("-", 1)[-1]: t["containerDefinitions"][0]
             for t in json.loads(capsys.readouterr().out)["task_definitions"]}
    assert tasks["rabbitmq"]["secrets"] == [{"name": "RABBITMQ_DEFAULT_PASS", "valueFrom": "arn:broker-pw"}]
    assert tasks["redis"]["secrets"] == [{"name": "REDIS_PASSWORD", "valueFrom": "arn:store-pw"}]
    assert "$REDIS_PASSWORD" in tasks["redis"]["command"][2] and "--requirepass" not in tasks["redis"]["command"][2]


@pytest.mark.parametrize("keys, problem", [
    ({"store_password_secret_arn": "arn:s"}, "ecs.broker_password_secret_arn: is needed when self_hosted is true"),
    ({"broker_password_secret_arn": "arn:b"}, "ecs.store_password_secret_arn: is needed when self_hosted is true"),
    ({"broker_password_secret_arn": "arn:same", "store_password_secret_arn": "arn:same"},
     "ecs.store_password_secret_arn: must differ from broker_password_secret_arn"),
    ({"password_secret_arn": "arn:one"}, "ecs.password_secret_arn: unknown key"),  # the one shared password
])
def test_self_hosted_needs_two_different_passwords(no_aws_config, tmp_path, capsys, keys, problem):
    assert main(["deploy", _self_hosted(tmp_path, **keys), "--target", "ecs", "--dry-run", "--region", "eu-west-1"]) == 2
    assert problem in capsys.readouterr().err
