"""What "read-only" means for zone A on AWS and SSH, as each connector states it."""

from __future__ import annotations

import pytest

from breakglass.connectors.aws import AwsStsConnector
from breakglass.connectors.ssh import SshCertificateConnector


@pytest.mark.parametrize("actions", [
    ["s3:*"], ["s3:PutObject"], ["s3:DeleteObject"], ["s3:G*"], ["s3:*Object"],
    ["ec2:StopInstances"], ["sts:GetCallerIdentity"], ["sts:*"],
    ["ecr:GetAuthorizationToken"], ["ecr:Get*"], ["ecr:*Token"],
    ["secretsmanager:GetSecretValue"], ["secretsmanager:BatchGetSecretValue"],
    ["secretsmanager:Get*"], ["ssm:GetParameter"], ["ssm:GetParametersByPath"],
    ["ec2:GetPasswordData"], ["lambda:GetFunction"], ["redshift:GetClusterCredentials"],
    ["s3:GetObject", "dynamodb:PutItem"], ["logs:getlogevents"],
])
def test_aws_zone_a_refuses_writes_and_credential_minting(actions):
    grant = {"actions": actions, "resources": ["*"]}
    assert AwsStsConnector.validate_for_zone(grant, "A")
    assert AwsStsConnector.validate_for_zone(grant, "B") == []


@pytest.mark.parametrize("actions", [
    ["s3:GetObject", "s3:ListBucket"], ["logs:GetLogEvents", "logs:Describe*"],
    ["cloudwatch:GetMetricData", "cloudwatch:List*"], ["dynamodb:BatchGetItem"],
    ["cloudtrail:LookupEvents"], ["sagemaker:Describe*"],
])
def test_aws_zone_a_accepts_reads(actions):
    assert AwsStsConnector.validate_for_zone({"actions": actions, "resources": ["*"]}, "A") == []


@pytest.mark.parametrize(("grant", "ok"), [
    ({"principals": ["ops"]}, False),
    ({"principals": ["ops"], "force_command": None}, False),
    ({"principals": ["ops"], "force_command": "uptime", "pty": True}, False),
    ({"principals": ["ops"], "pty": True}, False),
    ({"principals": ["ops"], "force_command": "journalctl -u model --since -1h"}, True),
])
def test_ssh_zone_a_is_one_command_and_no_shell(grant, ok):
    assert (SshCertificateConnector.validate_for_zone(grant, "A") == []) is ok
    assert SshCertificateConnector.validate_for_zone(grant, "B") == []
