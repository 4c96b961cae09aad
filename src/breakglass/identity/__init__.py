"""Identity: who is asking, as an OIDC provider (or the dev issuer) vouches for it.

* :mod:`~breakglass.identity.oidc`: :class:`TokenVerifier` turns a bearer token
  into a :class:`~breakglass.domain.model.Principal` or refuses it with
  :class:`~breakglass.domain.errors.Unauthenticated`.
* :mod:`~breakglass.identity.jwks`: where signing keys come from (discovery +
  JWKS cache, or a static set).
* :mod:`~breakglass.identity.devissuer`: the in-process issuer of ``serve --dev``.
* :mod:`~breakglass.identity.device_flow`: the CLI side of ``breakglass login``.
"""

from breakglass.identity.device_flow import (
    DeviceAuthorization,
    DeviceFlowClient,
    TokenSet,
    TokenStore,
    default_token_path,
)
from breakglass.identity.devissuer import DevIssuer
from breakglass.identity.jwks import JwksCache, KeySource, StaticKeySource, VerificationKey
from breakglass.identity.oidc import TokenVerifier, WorkloadIdentity, mfa_fresh

__all__ = [
    "DevIssuer",
    "DeviceAuthorization",
    "DeviceFlowClient",
    "JwksCache",
    "KeySource",
    "StaticKeySource",
    "TokenSet",
    "TokenStore",
    "TokenVerifier",
    "VerificationKey",
    "WorkloadIdentity",
    "default_token_path",
    "mfa_fresh",
]
