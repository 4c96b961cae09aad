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
    "codeartifact:GetAuthorizationToken", "redshift:GetClusterCredentials",
    "redshift:GetClusterCredentialsWithIAM", "redshift-serverless:GetCredentials",
    "cognito-identity:GetCredentialsForIdentity", "cognito-identity:GetOpenIdToken",
    "cognito-identity:GetOpenIdTokenForDeveloperIdentity", "sso:GetRoleCredentials",
    "rds-db:connect", "eks:GetToken", "secretsmanager:GetSecretValue",
    "ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath",
    "kms:GetParametersForImport", "lambda:GetFunctionUrlConfig",
)


def read_only_errors(actions: Iterable[object]) -> list[str]:
    """Why each action is not read-only (empty: all are)."""
    errors = []
    for action in actions:
        text = str(action)
        service, _, verb = text.partition(":")
        minted = [m for m in MINTS_CREDENTIALS if fnmatchcase(m.lower(), text.lower())]
        if service.lower() == "sts" or minted:
            errors.append(f"{text!r} can mint credentials or read secrets "
                          f"({', '.join(minted) or 'sts'}): never read-only")
        elif not verb.startswith(READ_VERBS):
            errors.append(f"{text!r} is not a read action (read-only is "
                          f"{'*/'.join(READ_VERBS)}*)")
    return errors
