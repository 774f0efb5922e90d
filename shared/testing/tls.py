"""A certificate authority and certificates made on the spot (the `cryptography` package), so a test can
run nats-server with TLS as production does: a server certificate for 127.0.0.1 and localhost, and a
client certificate where the server asks for one."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    verify_clients: bool = False

    def server_block(self) -> str:
        """nats-server's `tls` block: its certificate and, when it verifies clients, the CA they come from."""
        verify = f'  ca_file: "{self.ca}"\n  verify: true\n' if self.verify_clients else ""
        return f'tls {{\n  cert_file: "{self.cert}"\n  key_file: "{self.key}"\n{verify}  timeout: 2\n}}\n'


def make_tls_files(directory: Path, *, verify_clients: bool = False) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "creditstream test CA")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**_usage(cert_sign=True)), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(
        ca=_write(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        cert=directory / "server.pem",
        key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        verify_clients=verify_clients,
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    _leaf(files.cert, files.key, "nats-server", ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, names)
    _leaf(files.client_cert, files.client_key, "creditstream service", ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return files


def _leaf(
    cert_path: Path,
    key_path: Path,
    name: str,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_usage(digital_signature=True)), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(key_path, pem, mode=0o600)


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _usage(*, cert_sign: bool = False, digital_signature: bool = False) -> dict[str, bool]:
    return {
        "digital_signature": digital_signature, "content_commitment": False, "key_encipherment": False,
        "data_encipherment": False, "key_agreement": False, "key_cert_sign": cert_sign, "crl_sign": cert_sign,
        "encipher_only": False, "decipher_only": False,
    }  # fmt: skip


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path
