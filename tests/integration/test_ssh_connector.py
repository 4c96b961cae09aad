"""The SSH certificate connector against a real sshd that trusts the test user CA.

sshd (started by ``scripts/services.sh``) reads the KRL named by
``BG_TEST_SSH_KRL`` through ``RevokedKeys`` and maps the login account to the
principal ``BG_TEST_SSH_PRINCIPAL`` through ``AuthorizedPrincipalsFile``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    SSHCertificateBuilder,
    SSHCertificateType,
    load_ssh_private_key,
)

from breakglass.connectors.base import GrantSpec, IssuedCredential
from breakglass.connectors.ssh import SshCertificateConnector
from breakglass.domain.errors import TargetError
from tests.fakes import fresh_ownership
from tests.services import require

OWNERSHIP = fresh_ownership()  # this module's deployment

pytestmark = pytest.mark.integration

REFUSED = "Permission denied"


@dataclass(frozen=True)
class Sshd:
    host: str
    port: int
    user: str
    principal: str
    ca_key: str
    krl: str

    def connector(self, **extra: Any) -> SshCertificateConnector:
        config: dict[str, Any] = {"ca_key": self.ca_key, "krl": self.krl, "host": self.host}
        config |= {"port": self.port, "user": self.user, **extra}
        return SshCertificateConnector("bastion-test", config, ownership=OWNERSHIP)


@pytest.fixture(scope="module")
def sshd() -> Sshd:
    if shutil.which("ssh") is None:
        pytest.fail("the OpenSSH client is missing: apt-get install -y openssh-client")
    return Sshd(
        host=require("BG_TEST_SSH_HOST"),
        port=int(require("BG_TEST_SSH_PORT")),
        user=require("BG_TEST_SSH_USER"),
        principal=require("BG_TEST_SSH_PRINCIPAL"),
        ca_key=require("BG_TEST_SSH_CA_KEY"),
        krl=require("BG_TEST_SSH_KRL"),
    )


def spec(grant: dict[str, Any], ttl: timedelta = timedelta(minutes=5)) -> GrantSpec:
    return GrantSpec(
        grant_id=f"g-{uuid.uuid4().hex[:8]}",
        request_id="req-ssh-test",
        principal="alice",
        role="bastion-shell",
        incident="INC-4242",
        grant=grant,
        expires_at=datetime.now(UTC) + ttl,
    )


class Login:
    """The private key and certificate of one grant, as files the ssh client reads."""

    def __init__(self, sshd: Sshd, issued: IssuedCredential, folder: Path) -> None:
        self.sshd = sshd
        folder.mkdir(mode=0o700)
        self.key = folder / "id_ed25519"
        self.cert = folder / "id_ed25519-cert.pub"
        files = {self.key: issued.secret.get("private_key", "")}
        files[self.cert] = issued.secret["certificate"] + "\n"
        for path, text in files.items():
            path.touch(mode=0o600)  # created private before the key is written into it
            path.write_text(text)

    def argv(self, *args: str) -> list[str]:
        return [
            "ssh",
            *("-p", str(self.sshd.port), "-i", str(self.key)),
            *("-o", f"CertificateFile={self.cert}", "-o", "IdentitiesOnly=yes"),
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"),
            *args,
            f"{self.sshd.user}@{self.sshd.host}",
        ]

    def run(
        self, command: str = "echo BG_OK $(whoami)", *args: str
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.argv(*args), command] if command else self.argv(*args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def grant_login(
    sshd: Sshd, tmp_path: Path, grant: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[SshCertificateConnector, IssuedCredential, Login]:
    connector = sshd.connector()
    issued = connector.grant(spec(grant or {"principals": [sshd.principal]}, **kwargs))
    return connector, issued, Login(sshd, issued, tmp_path / issued.target_ref)


def test_a_granted_certificate_logs_in_and_runs_a_command(sshd: Sshd, tmp_path: Path) -> None:
    connector, issued, login = grant_login(sshd, tmp_path)
    result = login.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"BG_OK {sshd.user}"
    assert connector.verify(issued.target_ref)
    assert oct(login.key.stat().st_mode & 0o777) == "0o600"


def test_a_requester_public_key_is_signed_and_logs_in(sshd: Sshd, tmp_path: Path) -> None:
    key = tmp_path / "mine"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    public_key = key.with_name("mine.pub").read_text()
    issued = sshd.connector().grant(
        replace(spec({"principals": [sshd.principal]}), public_key=public_key)
    )
    assert "private_key" not in issued.secret
    login = Login(sshd, issued, tmp_path / "login")
    login.key = key  # the requester's own private key never left their machine
    result = login.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"BG_OK {sshd.user}"


def test_a_wrong_principal_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    _, _, login = grant_login(sshd, tmp_path, {"principals": ["bg-someone-else"]})
    result = login.run()
    assert result.returncode == 255
    assert REFUSED in result.stderr


def test_port_forwarding_is_refused_because_the_certificate_lacks_the_extension(
    sshd: Sshd, tmp_path: Path
) -> None:
    _, _, login = grant_login(sshd, tmp_path, {"principals": [sshd.principal], "pty": True})
    forward = login.run("", "-W", f"127.0.0.1:{sshd.port}")
    assert forward.returncode == 255
    assert "stdio forwarding failed" in forward.stderr
    assert "SSH-2.0" not in forward.stdout

    # Control: the same key, re-signed by the CA with permit-port-forwarding, gets through,
    # so the refusal above comes from the broker's certificate and not from sshd's config.
    ca = load_ssh_private_key(Path(sshd.ca_key).read_bytes(), password=None)
    key = load_ssh_private_key(login.key.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    assert isinstance(ca, ed25519.Ed25519PrivateKey)
    now = int(time.time())
    permissive = (
        SSHCertificateBuilder()
        .public_key(key.public_key())
        .serial(1)
        .type(SSHCertificateType.USER)
        .key_id(b"control")
        .valid_principals([sshd.principal.encode()])
        .valid_after(now - 30)
        .valid_before(now + 60)
        .add_extension(b"permit-port-forwarding", b"")
        .sign(ca)
    )
    login.cert.write_bytes(permissive.public_bytes() + b"\n")
    allowed = login.run("", "-W", f"127.0.0.1:{sshd.port}")
    assert "SSH-2.0-OpenSSH" in allowed.stdout, allowed.stderr


def test_pty_is_refused_unless_the_role_allows_it(sshd: Sshd, tmp_path: Path) -> None:
    _, _, plain = grant_login(sshd, tmp_path)
    result = plain.run("tty", "-tt")
    assert "PTY allocation request failed" in result.stderr
    assert "/dev/pts/" not in result.stdout
    _, _, with_pty = grant_login(sshd, tmp_path, {"principals": [sshd.principal], "pty": True})
    assert "/dev/pts/" in with_pty.run("tty", "-tt").stdout


def test_force_command_replaces_what_the_client_asks_for(sshd: Sshd, tmp_path: Path) -> None:
    grant = {"principals": [sshd.principal], "force_command": "echo FORCED"}
    _, _, login = grant_login(sshd, tmp_path, grant)
    result = login.run("echo ASKED")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FORCED"


def test_after_revoke_sshd_refuses_the_certificate(sshd: Sshd, tmp_path: Path) -> None:
    connector, issued, login = grant_login(sshd, tmp_path)
    assert login.run().returncode == 0
    connector.revoke(issued.target_ref, issued.artefacts)
    assert not connector.verify(issued.target_ref)
    result = login.run()
    assert result.returncode == 255
    assert REFUSED in result.stderr


def test_an_expired_certificate_is_refused_without_the_broker(sshd: Sshd, tmp_path: Path) -> None:
    _, issued, login = grant_login(sshd, tmp_path, ttl=timedelta(seconds=6))
    assert login.run().returncode == 0
    expires_at = datetime.fromisoformat(issued.secret["expires_at"])
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 2)
    result = login.run()  # no revoke: sshd alone enforces the certificate's validity
    assert result.returncode == 255
    assert REFUSED in result.stderr


def test_a_source_address_elsewhere_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    grant = {"principals": [sshd.principal], "source_address": ["10.9.8.0/24"]}
    _, _, elsewhere = grant_login(sshd, tmp_path, grant)
    result = elsewhere.run()
    assert result.returncode == 255
    assert REFUSED in result.stderr
    grant = {"principals": [sshd.principal], "source_address": ["127.0.0.1/32"]}
    _, _, here = grant_login(sshd, tmp_path, grant)
    assert here.run().returncode == 0


def krl_says_revoked(krl: str, cert: Path) -> bool:
    result = subprocess.run(
        ["ssh-keygen", "-Q", "-f", krl, cert], capture_output=True, text=True, check=False
    )
    return result.returncode != 0 and "REVOKED" in result.stdout


def test_revoke_is_idempotent_and_concurrent_revocations_all_land(
    sshd: Sshd, tmp_path: Path
) -> None:
    connector, first, login = grant_login(sshd, tmp_path)
    connector.revoke(first.target_ref, first.artefacts)
    connector.revoke(first.target_ref, first.artefacts)
    spec_lines = Path(f"{sshd.krl}.spec").read_text().splitlines()
    assert spec_lines.count(f"serial: {first.secret['serial']}") == 1
    assert krl_says_revoked(sshd.krl, login.cert)

    issued = [connector.grant(spec({"principals": [sshd.principal]})) for _ in range(20)]
    certs = []
    for one in issued:
        certs.append(tmp_path / f"{one.target_ref}-cert.pub")
        certs[-1].write_text(one.secret["certificate"] + "\n")
    survivor = grant_login(sshd, tmp_path)[2]
    with ThreadPoolExecutor(max_workers=20) as pool:
        # One connector per thread, like separate broker workers sharing the KRL.
        list(pool.map(lambda one: sshd.connector().revoke(one.target_ref), issued))
    assert all(krl_says_revoked(sshd.krl, cert) for cert in certs)
    assert not any(connector.verify(one.target_ref) for one in issued)
    assert not krl_says_revoked(sshd.krl, survivor.cert)
    assert survivor.run().returncode == 0


def test_revoke_ends_live_sessions_through_the_hook(sshd: Sshd, tmp_path: Path) -> None:
    hook = ["pkill", "-u", "{user}", "-f", "bg-session-{serial}"]
    connector = sshd.connector(session_kill_command=hook)
    issued = connector.grant(spec({"principals": [sshd.principal]}))
    login = Login(sshd, issued, tmp_path / "live")
    marker = f"bg-session-{issued.secret['serial']}"
    session = subprocess.Popen(
        [*login.argv(), f"exec -a {marker} sleep 300"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pgrep", "-u", sshd.user, "-f", marker], check=False).returncode:
            assert time.monotonic() < deadline, "the session never started"
            time.sleep(0.2)
        connector.revoke(issued.target_ref, issued.artefacts)
        assert session.wait(timeout=15) != 0
    finally:
        session.kill()
        session.wait()
    connector.revoke(issued.target_ref, issued.artefacts)  # nothing left to kill: still fine


def test_a_hook_that_needs_the_key_id_is_not_guessed(sshd: Sshd, tmp_path: Path) -> None:
    krl = tmp_path / "krl"
    config: dict[str, Any] = {"ca_key": sshd.ca_key, "krl": str(krl), "user": sshd.user}
    config["session_kill_command"] = ["pkill", "-f", "{key_id}"]
    connector = SshCertificateConnector("bastion-test", config, ownership=OWNERSHIP)
    issued = connector.grant(spec({"principals": [sshd.principal]}))
    with pytest.raises(TargetError, match="key id unknown"):
        connector.revoke(issued.target_ref)  # drift revokes carry no artefacts
    assert not connector.verify(issued.target_ref)  # the KRL was still updated
    config["session_kill_command"] = ["false"]
    again = SshCertificateConnector("bastion-test", config, ownership=OWNERSHIP)
    again.revoke(issued.target_ref)  # 1: none matched
    config["session_kill_ok_codes"] = [0]
    with pytest.raises(TargetError, match="exited 1"):
        SshCertificateConnector("bastion-test", config,
                                ownership=OWNERSHIP).revoke(issued.target_ref)
    assert krl.stat().st_mode & 0o777 == 0o644


def test_agent_forwarding_is_refused_because_the_certificate_lacks_the_extension(
    sshd: Sshd, tmp_path: Path
) -> None:
    _, _, login = grant_login(sshd, tmp_path)
    socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket)}

        def forwarded_socket() -> str:
            argv = [*login.argv("-o", "ForwardAgent=yes"), 'echo "[${SSH_AUTH_SOCK:-}]"']
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=30, check=False, env=env
            )
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert forwarded_socket() == "[]"

        # Control: the same key, re-signed with permit-agent-forwarding, gets an agent socket.
        ca = load_ssh_private_key(Path(sshd.ca_key).read_bytes(), password=None)
        key = load_ssh_private_key(login.key.read_bytes(), password=None)
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        assert isinstance(ca, ed25519.Ed25519PrivateKey)
        now = int(time.time())
        permissive = (
            SSHCertificateBuilder()
            .public_key(key.public_key())
            .serial(2)
            .type(SSHCertificateType.USER)
            .key_id(b"control")
            .valid_principals([sshd.principal.encode()])
            .valid_after(now - 30)
            .valid_before(now + 60)
            .add_extension(b"permit-agent-forwarding", b"")
            .sign(ca)
        )
        login.cert.write_bytes(permissive.public_bytes() + b"\n")
        assert forwarded_socket() != "[]"
    finally:
        agent.terminate()
        agent.wait(timeout=10)
