"""The SSH connector's catalog checks and the certificates it signs (no sshd, no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificate,
    SSHCertPublicKeyTypes,
    load_ssh_public_identity,
)

from breakglass.connectors.base import MARKER_PREFIX, GrantSpec
from breakglass.connectors.ssh import SshCertificateConnector
from breakglass.domain.errors import InvalidInput, TargetError
from tests.fakes import fresh_ownership

OWNERSHIP = fresh_ownership()  # this module's deployment

pytestmark = pytest.mark.unit

VALID = {"principals": ["bg-oncall"], "pty": False, "force_command": None, "source_address": None}


def errors(**changes: Any) -> list[str]:
    return SshCertificateConnector.validate_grant({**VALID, **changes})


def test_a_plain_grant_block_is_valid() -> None:
    assert errors() == []
    assert SshCertificateConnector.validate_grant({"principals": ["ops.team@corp", "a_b-c"]}) == []


@pytest.mark.parametrize(
    "principals",
    [
        [],
        None,
        "bg-oncall",
        [""],
        ["a" * 65],
        ["bg oncall"],
        ["bg-oncall\n"],
        ["bg-oncall\nroot"],
        ["bg-oncall,root"],
        ["*"],
        ["root;id"],
        [7],
    ],
)
def test_bad_principals_are_refused(principals: object) -> None:
    assert any("principal" in e for e in errors(principals=principals))


@pytest.mark.parametrize(
    "source",
    [
        [],
        "10.0.0.0/8",
        ["10.0.0.0/33"],
        ["10.0.0.1/8"],
        ["not-an-ip"],
        ["10.0.0.0/8,0.0.0.0/0"],
        ["10.0.0.0/8\n0.0.0.0/0"],
        [" 10.0.0.0/8"],
        [167772160],
    ],
)
def test_bad_source_addresses_are_refused(source: object) -> None:
    assert any("source_address" in e for e in errors(source_address=source))


def test_cidrs_of_both_families_are_accepted() -> None:
    assert errors(source_address=["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32", "::1"]) == []


@pytest.mark.parametrize("command", ["", "ls\nrm -rf /", "echo\x00", 5])
def test_force_command_must_be_one_printable_line(command: object) -> None:
    assert any("force_command" in e for e in errors(force_command=command))


def test_pty_must_be_a_boolean_and_unknown_fields_are_refused() -> None:
    assert any("pty" in e for e in errors(pty="yes"))
    problems = errors(permit_port_forwarding=True)
    assert problems == ["unknown field 'permit_port_forwarding'"]


def test_target_config_needs_one_ca_key_and_a_krl() -> None:
    check = SshCertificateConnector.validate_config
    assert check({"ca_key": "/ca", "krl": "/krl", "port": 22}) == []
    assert check({"ca_key_env": "CA", "krl": "/krl"}) == []
    assert len(check({})) == 2
    assert len(check({"ca_key": "/ca", "ca_key_env": "CA", "krl": "/krl"})) == 1
    assert len(check({"ca_key": "/ca", "krl": "/krl", "port": "ssh"})) == 1
    assert len(check({"ca_key": "/ca", "krl": "/krl", "session_kill_command": "pkill x"})) == 1


@pytest.fixture
def ca_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def connector(tmp_path: Path, ca_key: ed25519.Ed25519PrivateKey) -> SshCertificateConnector:
    path = tmp_path / "ca"
    path.write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    config = {"ca_key": str(path), "krl": str(tmp_path / "krl"), "host": "h", "user": "ops"}
    return SshCertificateConnector("bastion", config, ownership=OWNERSHIP)


def spec(grant: dict[str, Any] | None = None, public_key: str | None = None) -> GrantSpec:
    return GrantSpec(
        grant_id="g-1",
        request_id="req-1",
        principal="alice",
        role="bastion-shell",
        incident="INC-123",
        grant=grant or VALID,
        expires_at=datetime.now(UTC) + timedelta(minutes=15),
        public_key=public_key,
    )


def openssh(key: SSHCertPublicKeyTypes) -> str:
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def certificate(secret: Any) -> SSHCertificate:
    cert = load_ssh_public_identity(secret["certificate"].encode())
    assert isinstance(cert, SSHCertificate)
    return cert


def test_certificate_carries_no_forwarding_and_native_expiry(
    connector: SshCertificateConnector, ca_key: ed25519.Ed25519PrivateKey
) -> None:
    wanted = spec()
    issued = connector.grant(wanted)
    cert = certificate(issued.secret)
    cert.verify_cert_signature()
    assert openssh(cert.signature_key()) == openssh(ca_key.public_key())
    assert cert.extensions == {}
    assert cert.critical_options == {}
    assert cert.valid_principals == [b"bg-oncall"]
    assert cert.valid_before == int(wanted.expires_at.timestamp())
    assert 25 <= int(wanted.expires_at.timestamp()) - 15 * 60 - cert.valid_after <= 35
    assert cert.key_id == b"req-1:g-1:alice"
    assert issued.target_ref == f"{MARKER_PREFIX}{cert.serial}"
    assert issued.secret["serial"] == str(cert.serial)
    assert issued.secret["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert issued.secret["user"] == "ops"
    assert issued.artefacts == ("ssh-key-id:req-1:g-1:alice",)


def test_pty_force_command_and_source_address_are_compiled_in(
    connector: SshCertificateConnector,
) -> None:
    grant = {"principals": ["a", "b"], "pty": True, "force_command": "journalctl -f"}
    grant["source_address"] = ["10.0.0.0/8", "127.0.0.1/32"]
    cert = certificate(connector.grant(spec(grant)).secret)
    assert cert.extensions == {b"permit-pty": b""}
    assert cert.critical_options == {
        b"force-command": b"journalctl -f",
        b"source-address": b"10.0.0.0/8,127.0.0.1/32",
    }


def test_a_requester_public_key_is_signed_and_no_private_key_returned(
    connector: SshCertificateConnector,
) -> None:
    line = openssh(ed25519.Ed25519PrivateKey.generate().public_key())
    issued = connector.grant(spec(public_key=line + " alice@laptop\n"))
    assert "private_key" not in issued.secret
    assert openssh(certificate(issued.secret).public_key()) == line


def test_serials_are_random(connector: SshCertificateConnector) -> None:
    refs = {connector.grant(spec()).target_ref for _ in range(20)}
    assert len(refs) == 20


@pytest.mark.parametrize(
    "public_key",
    [
        "not a key",
        "ssh-ed25519 AAAA",
        openssh(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),  # noqa: S505
    ],
)
def test_unusable_public_keys_are_refused(
    connector: SshCertificateConnector, public_key: str
) -> None:
    with pytest.raises(InvalidInput):
        connector.grant(spec(public_key=public_key))


def test_a_certificate_is_never_signed_from_an_invalid_block(
    connector: SshCertificateConnector,
) -> None:
    with pytest.raises(InvalidInput, match="principal"):
        connector.grant(spec({"principals": ["bg,root"]}))
    past = GrantSpec("g", "r", "p", "role", "INC-1", VALID, datetime.now(UTC) - timedelta(1))
    with pytest.raises(InvalidInput, match="future"):
        connector.grant(past)


@pytest.mark.parametrize("ref", ["bg_0", "bg_x", "7", "bg_18446744073709551616", "bg_1 ", "bg_٣"])
def test_foreign_target_refs_are_refused(connector: SshCertificateConnector, ref: str) -> None:
    with pytest.raises(InvalidInput):
        connector.revoke(ref)
    with pytest.raises(InvalidInput):
        connector.verify(ref)


def test_a_ca_key_from_the_environment_never_shows_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BG_TEST_BROKEN_CA", "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n")
    config = {"ca_key_env": "BG_TEST_BROKEN_CA", "krl": str(tmp_path / "krl")}
    connector = SshCertificateConnector("bastion", config, ownership=OWNERSHIP)
    with pytest.raises(TargetError) as caught:
        connector.grant(spec())
    assert "c2VjcmV0" not in str(caught.value)
    assert "c2VjcmV0" not in repr(caught.value.__cause__)


def test_nothing_is_listed_and_a_missing_krl_is_reported(
    connector: SshCertificateConnector,
) -> None:
    assert connector.list_managed() == []
    assert [p.privilege for p in connector.inventory()] == ["unrevocable certificates"]
