"""SSH access through short-lived OpenSSH user certificates.

Target: ``{type: ssh, ca_key: PATH | ca_key_env: VAR, krl: PATH, host, port, user,
session_kill_command: [argv...]}``; ``krl`` is the file the hosts' sshd reads through
``RevokedKeys``, ``user`` the login account named in the credential. Role grant block:
``{principals: [bg-oncall], pty: false, force_command: null, source_address: [CIDR]}``.

* ``grant`` signs the requester's public key, or a fresh Ed25519 key whose private half
  is returned once (:func:`public_key_fingerprint` checks a requester's key when the
  request is made; the audit log keeps the fingerprint). The certificate carries the
  guardrails itself: it ends at the grant's ``expires_at`` (sshd refuses it afterwards,
  broker or no broker), names only the catalog's principals, and has no extension but
  ``permit-pty`` when asked: no port, agent or X11 forwarding, no ``~/.ssh/rc``.
  ``force_command`` and ``source_address`` become critical options. The key id
  ``<request>:<grant>:<principal>`` names the person in sshd's auth log.
* ``target_ref`` is ``bg_<serial>``: the random 64-bit certificate serial in decimal.
* ``revoke`` adds the serial to ``<krl>.spec`` (ssh-keygen KRL spec lines ``serial: N``),
  merges that into a copy of the KRL with ``ssh-keygen -k -u`` (revocations made by
  others survive) and renames the copy into place, under ``flock`` on ``<krl>.lock``.
* Sessions: sshd checks a certificate only when it authenticates and cannot end the
  sessions of one certificate, so ``session_kill_command`` is the hook. It is an argv
  list (never a shell) run after each KRL update with ``{serial}``, ``{key_id}``,
  ``{user}`` and ``{target_ref}`` substituted; exit codes in ``session_kill_ok_codes``
  (default 0 and 1, pkill's "nothing matched") are success. A host-side script can map
  sshd's ``Accepted publickey ... ID <key_id> (serial N)`` log line to a PID. Without
  a hook new logins are refused at once and open sessions last until they close
  (bound them with sshd's ``ChannelTimeout``).
* ``verify`` reads the KRL sshd reads (``ssh-keygen -Q -l``): true while the serial is
  not revoked. The broker keeps no certificates, so expiry is left to sshd.
* ``list_managed`` is empty: certificates live with their holders and cannot be listed;
  SSH relies on native expiry plus the KRL. ``extend`` cannot move a signed validity:
  the certificate still ends at its first ``expires_at``; more time needs a new one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType
from cryptography.hazmat.primitives.serialization import SSHCertPrivateKeyTypes as CaKey

from breakglass.connectors.base import (
    Connector,
    GrantSpec,
    IssuedCredential,
    Ownership,
    StandingPrivilege,
)
from breakglass.domain.errors import InvalidInput, TargetError

_log = logging.getLogger(__name__)

CLOCK_SKEW_SECONDS = 30
"""A certificate is valid from this long before issue, for hosts whose clock lags."""

_PRINCIPAL = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_KEY_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]")
_KEY_ID_ARTEFACT = "ssh-key-id:"
_PLACEHOLDER = re.compile(r"\{(serial|key_id|user|target_ref)\}")
_SERIAL = re.compile(r"[1-9][0-9]{0,19}")
_KEY_TYPES = (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
_GRANT_FIELDS = frozenset({"principals", "pty", "force_command", "source_address"})
MAX_PUBLIC_KEY_BYTES = 16 * 1024


class SshCertificateConnector(Connector):
    """Short-lived OpenSSH user certificates signed by a user CA. See the module docstring."""

    type: ClassVar[str] = "ssh"
    extends_natively: ClassVar[bool] = False
    lists_managed: ClassVar[bool] = False
    accepts_public_key: ClassVar[bool] = True

    def __init__(self, name: str, config: Mapping[str, Any], *, ownership: Ownership) -> None:
        super().__init__(name, config, ownership=ownership)
        self._ca_key: CaKey | None = None
        self._krl = Path(str(config.get("krl", "")))
        self._user = str(config.get("user", ""))

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> list[str]:
        errors = []
        if len([k for k in ("ca_key", "ca_key_env") if config.get(k)]) != 1:
            errors.append(
                "ca_key: exactly one of ca_key (a path) or ca_key_env (a variable) is required"
            )
        if not isinstance(config.get("krl"), str) or not config["krl"]:
            errors.append("krl: required (the file sshd reads through RevokedKeys)")
        if not str(config.get("port", 22)).isdigit() or not 0 < int(config.get("port", 22)) < 65536:
            errors.append("port: a number from 1 to 65535")
        kill = config.get("session_kill_command", ["-"])
        if not (isinstance(kill, list) and kill and all(isinstance(a, str) and a for a in kill)):
            errors.append("session_kill_command: a non-empty list of strings (argv, no shell)")
        return errors

    @classmethod
    def validate_grant(cls, grant: Mapping[str, Any]) -> list[str]:
        errors = [f"unknown field {k!r}" for k in sorted(set(grant) - _GRANT_FIELDS)]
        principals = grant.get("principals")
        if not isinstance(principals, list) or not principals:
            errors.append("principals: a non-empty list is required")
        else:
            errors += [
                f"principals: {p!r} does not match [A-Za-z0-9._@-]{{1,64}}"
                for p in principals
                if not isinstance(p, str) or not _PRINCIPAL.fullmatch(p)
            ]
        if not isinstance(grant.get("pty", False), bool):
            errors.append("pty: true or false")
        command = grant.get("force_command", "-")
        printable = isinstance(command, str) and command.isprintable() and command.strip() != ""
        if command is not None and not printable:
            errors.append("force_command: a printable one-line command, or null")
        return errors + _source_address_errors(grant.get("source_address"))

    @classmethod
    def validate_for_zone(cls, grant: Mapping[str, Any], zone: str) -> list[str]:
        """Zone A is read-only diagnostics: a certificate there carries a ``force_command``
        (the one diagnostic the role runs) and no pty, so no interactive shell."""
        if zone != "A":
            return []
        errors = []
        if not grant.get("force_command"):
            errors.append("force_command: required (zone A runs one diagnostic command, "
                          "never a shell)")
        if grant.get("pty", False):
            errors.append("pty: must be false (zone A has no interactive shell)")
        return errors

    def grant(self, spec: GrantSpec) -> IssuedCredential:
        problems = self.validate_grant(spec.grant)
        if problems:
            raise InvalidInput("; ".join(problems))
        now, valid_before = int(time.time()), int(spec.expires_at.timestamp())
        if spec.expires_at.tzinfo is None or valid_before <= now:
            raise InvalidInput("expires_at must be in the future and carry a time zone")
        private_key = None if spec.public_key else ed25519.Ed25519PrivateKey.generate()
        public_key = (
            private_key.public_key() if private_key else _requester_key(spec.public_key or "")
        )
        serial = 1 + secrets.randbelow(2**64 - 1)  # 0 cannot be revoked in a KRL
        key_id = _KEY_ID_UNSAFE.sub("_", f"{spec.request_id}:{spec.grant_id}:{spec.principal}")
        principals = [str(p) for p in spec.grant["principals"]]
        builder = (
            SSHCertificateBuilder()
            .public_key(public_key)
            .serial(serial)
            .type(SSHCertificateType.USER)
            .key_id(key_id.encode())
            .valid_principals([p.encode() for p in principals])
            .valid_after(now - CLOCK_SKEW_SECONDS)
            .valid_before(valid_before)
        )
        # Egress guardrail: forwarding, agent, X11 and user-rc extensions are never added.
        if spec.grant.get("pty", False):
            builder = builder.add_extension(b"permit-pty", b"")
        if command := spec.grant.get("force_command"):
            builder = builder.add_critical_option(b"force-command", str(command).encode())
        if spec.grant.get("source_address"):
            sources = ",".join(str(s) for s in spec.grant["source_address"])
            builder = builder.add_critical_option(b"source-address", sources.encode())
        try:
            certificate = builder.sign(self._ca())
        except (ValueError, TypeError) as exc:
            raise TargetError(f"ssh target {self.name}: signing the certificate failed") from exc
        secret: dict[str, Any] = {"type": "ssh", "certificate": certificate.public_bytes().decode()}
        if private_key is not None:
            openssh = serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH
            pem = private_key.private_bytes(*openssh, serialization.NoEncryption())
            secret["private_key"] = pem.decode()
        host, port = str(self.config.get("host", "")), int(self.config.get("port", 22))
        secret |= {"principals": principals, "host": host, "port": port, "user": self._user}
        # The serial as a string: JSON readers in browsers lose precision above 2**53.
        secret |= {"serial": str(serial), "expires_at": spec.expires_at.isoformat()}
        artefacts = (f"{_KEY_ID_ARTEFACT}{key_id}",)
        return IssuedCredential(f"{self.ownership.prefix}{serial}", secret, artefacts)

    def revoke(self, target_ref: str, artefacts: tuple[str, ...] = ()) -> None:
        serial = _serial_of(target_ref, self.ownership.prefix)
        self._add_to_krl(serial)
        self._end_sessions(target_ref, serial, artefacts)

    def verify(self, target_ref: str) -> bool:
        serial = _serial_of(target_ref, self.ownership.prefix)
        if not self._krl.exists() or self._krl.stat().st_size == 0:
            return True
        listing = self._keygen("-Q", "-l", "-f", str(self._krl))
        return not any(lo <= serial <= hi for lo, hi in self._revoked_ranges(listing))

    def list_managed(self) -> list[str]:
        return []

    def inventory(self) -> list[StandingPrivilege]:
        if self._krl.exists():
            return []
        detail = f"KRL {self._krl} is missing: certificates of this CA last until they expire"
        return [StandingPrivilege(self.name, "ssh user CA", "unrevocable certificates", detail)]

    def _ca(self) -> CaKey:
        if self._ca_key is None:
            self._ca_key = _load_ca_key(self.name, self.config)
        return self._ca_key

    def _ca_public_line(self) -> str:
        openssh = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        return self._ca().public_key().public_bytes(*openssh).decode()

    @contextlib.contextmanager
    def _krl_lock(self) -> Iterator[None]:
        # flock locks belong to the open file, so threads of one process exclude each other too.
        with open(f"{self._krl}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _add_to_krl(self, serial: int) -> None:
        spec_path = self._krl.with_name(f"{self._krl.name}.spec")
        line = f"serial: {serial}"
        with self._krl_lock(), tempfile.TemporaryDirectory(prefix="bg-ssh-") as work:
            lines = spec_path.read_text().splitlines() if spec_path.exists() else []
            if line not in lines:
                lines.append(line)
            ca_pub = Path(work, "ca.pub")
            ca_pub.write_text(self._ca_public_line() + "\n")
            spec_tmp = _sibling_tmp(spec_path, "\n".join(lines) + "\n")
            krl_tmp = _sibling_tmp(self._krl, "")
            try:
                update = []
                if self._krl.exists() and self._krl.stat().st_size > 0:
                    shutil.copyfile(self._krl, krl_tmp)
                    update = ["-u"]
                self._keygen("-k", *update, "-f", krl_tmp, "-s", str(ca_pub), spec_tmp)
                with open(krl_tmp, "rb") as written:
                    os.fsync(written.fileno())
                os.chmod(krl_tmp, 0o644)
                os.replace(krl_tmp, self._krl)
                os.replace(spec_tmp, spec_path)
            finally:
                for leftover in (krl_tmp, spec_tmp):
                    Path(leftover).unlink(missing_ok=True)

    def _revoked_ranges(self, listing: str) -> Iterator[tuple[int, int]]:
        blob = base64.b64decode(self._ca_public_line().split()[1])
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        ours = False
        for line in listing.splitlines():
            if line.startswith("# CA key ") or line.startswith("# Wildcard CA"):
                ours = line.startswith("# Wildcard CA") or line.split()[-1] == f"SHA256:{digest}"
            elif ours and line.startswith("serial: "):
                lo, _, hi = line.removeprefix("serial: ").partition("-")
                yield int(lo), int(hi or lo)

    def _end_sessions(self, target_ref: str, serial: int, artefacts: tuple[str, ...]) -> None:
        argv = self.config.get("session_kill_command")
        if not argv:
            _log.info("ssh target %s: %s revoked; no session hook", self.name, target_ref)
            return
        ids = [a[len(_KEY_ID_ARTEFACT) :] for a in artefacts if a.startswith(_KEY_ID_ARTEFACT)]
        if not ids and any("{key_id}" in arg for arg in argv):
            # An empty key id could make a pattern match every session: do not guess.
            raise TargetError(f"ssh target {self.name}: {target_ref} revoked; key id unknown")
        values = {"serial": str(serial), "target_ref": target_ref, "user": self._user}
        values["key_id"] = ids[0] if ids else ""
        command = [_PLACEHOLDER.sub(lambda m: values[m[1]], arg) for arg in argv]
        result = _run(self.name, "session_kill_command", command)
        if (code := result.returncode) not in self.config.get("session_kill_ok_codes", [0, 1]):
            raise TargetError(f"ssh target {self.name}: session_kill_command exited {code}")

    def _keygen(self, *args: str) -> str:
        program = shutil.which(str(self.config.get("ssh_keygen", "ssh-keygen")))
        if program is None:
            raise TargetError(f"ssh target {self.name}: ssh-keygen is not installed")
        result = _run(self.name, "ssh-keygen", [program, *args])
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise TargetError(f"ssh target {self.name}: ssh-keygen {args[0]} failed: {reason[0]}")
        return result.stdout.decode(errors="replace")


def _run(name: str, what: str, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:  # an argv list, never a shell; empty stdin, so a hook cannot wait on the broker's
        return subprocess.run(argv, input=b"", capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetError(f"ssh target {name}: {what} did not run") from exc


def _source_address_errors(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        return ["source_address: a non-empty list of CIDR networks, or null"]
    errors = []
    for cidr in value:
        try:  # "" for non-strings and padded text, which ip_network would accept or mistype
            ipaddress.ip_network(cidr if isinstance(cidr, str) and cidr == cidr.strip() else "")
        except ValueError:
            errors.append(f"source_address: not a CIDR network: {cidr!r}")
    return errors


def _serial_of(target_ref: str, prefix: str) -> int:
    digits = target_ref.removeprefix(prefix)
    if digits == target_ref or not _SERIAL.fullmatch(digits) or int(digits) >= 2**64:
        raise InvalidInput(f"not an ssh certificate reference: {target_ref!r}")
    return int(digits)


def public_key_fingerprint(text: str) -> str:
    """Check a requester's OpenSSH public key and return its ``SHA256:`` fingerprint
    (as ``ssh-keygen -l`` prints it). One line of at most :data:`MAX_PUBLIC_KEY_BYTES`;
    Ed25519, ECDSA or RSA of 2048 bits or more. Raises :class:`InvalidInput`."""
    line = text.strip()
    if len(line.encode()) > MAX_PUBLIC_KEY_BYTES:
        raise InvalidInput(f"public_key is longer than {MAX_PUBLIC_KEY_BYTES} bytes")
    if not line or "\n" in line or "\r" in line:
        raise InvalidInput("public_key must be one line: the contents of a .pub file")
    if "PRIVATE KEY" in line:
        raise InvalidInput("public_key is a private key: send the .pub file, never the key")
    openssh = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    blob = base64.b64decode(_requester_key(line).public_bytes(*openssh).split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _requester_key(text: str) -> serialization.SSHCertPublicKeyTypes:
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput("public_key is not an OpenSSH public key") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise InvalidInput("public_key: RSA keys must have at least 2048 bits")
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise InvalidInput("public_key must be Ed25519, ECDSA or RSA")
    return key


def _load_ca_key(name: str, config: Mapping[str, Any]) -> CaKey:
    if config.get("ca_key_env"):
        text = os.environ.get(str(config["ca_key_env"]), "")
        if not text:
            raise TargetError(f"ssh target {name}: variable {config['ca_key_env']} is not set")
        data = text.encode()
    else:
        try:
            data = Path(str(config.get("ca_key", ""))).read_bytes()
        except OSError as exc:
            raise TargetError(f"ssh target {name}: cannot read the CA key file") from exc
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TargetError(f"ssh target {name}: the CA key cannot be loaded") from exc
    if not isinstance(key, _KEY_TYPES):
        raise TargetError(f"ssh target {name}: the CA key must be Ed25519, ECDSA or RSA")
    return key


def _sibling_tmp(path: Path, text: str) -> str:
    """A new file next to ``path`` (same file system, so ``os.replace`` is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp
