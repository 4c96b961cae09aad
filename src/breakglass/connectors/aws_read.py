"""What "read-only" means for an AWS grant (zone A): read verbs, and no credential minting.

An action is read-only when its verb (after ``service:``) starts with a read verb
(``Get``, ``List``, ``Describe``, ``BatchGet``, ``Head``, ``Lookup``). Some ``Get``
verbs mint credentials or tokens (``sts:GetSessionToken``,
``ecr:GetAuthorizationToken``): those are never zone A, nor is any wildcard that
could match one (``ecr:Get*``), nor anything on ``sts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

READ_VERBS = ("Get", "List", "Describe", "BatchGet", "Head", "Lookup")
MINTS_CREDENTIALS = (
    "ecr:GetAuthorizationToken", "ecr-public:GetAuthorizationToken",
    "codeartifact:GetAuthorizationToken", "redshift:GetClusterCredentials*",
    "redshift-serverless:GetCredentials", "cognito-identity:GetCredentialsForIdentity",
    "cognito-identity:GetOpenIdToken*", "sso:GetRoleCredentials", "rds-db:connect",
    "eks:GetToken", "secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue",
    "ssm:GetParameter*",
    "kms:GetParametersForImport", "ec2:GetPasswordData", "lambda:GetFunction*",
    "ec2-instance-connect:*", "ssm:StartSession", "iam:GetCredentialReport",
)
"""Patterns (IAM wildcards): ``Get``/``BatchGet`` verbs that hand out credentials, secrets
or code, and so are never zone A."""


def read_only_errors(actions: Iterable[object]) -> list[str]:
    """Why each action is not read-only (empty: all are)."""
    errors = []
    for action in actions:
        text = str(action)
        service, _, verb = text.partition(":")
        lowered = text.lower()
        minted = [m for m in MINTS_CREDENTIALS  # the action covers m, or m covers the action
                  if fnmatchcase(m.lower(), lowered) or fnmatchcase(lowered, m.lower())]
        if service.lower() == "sts" or minted:
            errors.append(f"{text!r} can mint credentials or read secrets "
                          f"({', '.join(minted) or 'sts'}): never read-only")
        elif not verb.startswith(READ_VERBS):  # case-sensitive: `s3:getobject` fails safe
            errors.append(f"{text!r} is not a read action (read-only is "
                          f"{'*/'.join(READ_VERBS)}*)")
    return errors
