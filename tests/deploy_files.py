"""What the tests of deploy/ share (this module holds no tests): its files, read as a deployment reads them
(the environment compose and Kubernetes would give nats-server), and a copy of a nats-server config that
runs on this machine: its TLS files, data and ports here, all else as deployed."""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.bus.users import USERS, environment_variable
from shared.testing.tls import TlsFiles

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SINGLE = DEPLOY / "nats" / "nats-single.conf"
CLUSTER = DEPLOY / "nats" / "nats-cluster.conf"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
NODE = "nats-0"  # the pod a cluster config is rendered for


def password() -> str:
    """A password as deploy/README.md makes them: a letter, then hex. nats-server parses the value of a
    variable as config, so one that reads as a number (`10k`), a boolean, a list or a variable (`$2b$...`)
    would not reach it as the password, or stop it starting."""
    return "n" + secrets.token_hex(24)


def passwords() -> dict[str, str]:
    return {name: password() for name in USERS}


def k8s(kind: str) -> list[dict[str, Any]]:
    """Every resource of `kind` in deploy/k8s/."""
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc["kind"] == kind]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def configmap_config() -> str:
    (configmap,) = [c for c in k8s("ConfigMap") if c["metadata"]["name"] == "nats-config"]
    text: str = configmap["data"]["nats.conf"]
    return text


def statefulset_env(logins: Mapping[str, str]) -> dict[str, str]:
    """The environment Kubernetes gives a nats container (deploy/k8s/nats.yaml), for pod NODE."""
    (statefulset,) = k8s("StatefulSet")
    env: dict[str, str] = {}
    for variable in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]:
        source = variable.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[variable["name"]] = NODE
        elif "secretKeyRef" in source:
            assert source["secretKeyRef"]["name"] == "nats-users"
            env[variable["name"]] = logins[source["secretKeyRef"]["key"]]
        else:  # $(NAME) is Kubernetes' reference to a variable defined before
            env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], variable["value"])
    return env


def compose_env(service: str, host: Mapping[str, str]) -> dict[str, str]:
    """What compose gives `service`, with ${NAME...} taken from the host's environment `host`."""
    return {
        name: re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: host.get(m[1], ""), str(value))
        for name, value in compose()["services"][service]["environment"].items()
    }


def host_env(logins: Mapping[str, str]) -> dict[str, str]:
    """What an operator puts in compose's environment for the NATS users' passwords."""
    return {environment_variable(name): logins[name] for name in USERS}


def local_copy(
    text: str,
    directory: Path,
    tls: TlsFiles,
    *,
    client_port: int = 4222,
    monitor_port: int = 8222,
    replace: Mapping[str, str] | None = None,
) -> Path:
    """A copy of the deploy config `text` in `directory` that runs here: the certificates of `tls` (for routes
    too), its store in `directory`, clients on 127.0.0.1:`client_port`, monitoring on its own host and
    `monitor_port`, routes on a port of 127.0.0.1; `replace` adds to those or overrides them. Every text it
    replaces must be in the file, so a renamed path cannot slip past the tests unreplaced."""
    replacements = {
        "/etc/nats/tls/server.crt": str(tls.cert),
        "/etc/nats/tls/server.key": str(tls.key),
        "/data/jetstream": str(directory / "jetstream"),
        "listen: 0.0.0.0:4222": f"listen: 127.0.0.1:{client_port}",
        ":8222": f":{monitor_port}",
    }
    if "cluster {" in text:
        replacements |= {
            "/etc/nats/tls/routes.crt": str(tls.cert),
            "/etc/nats/tls/routes.key": str(tls.key),
            "/etc/nats/tls/routes-ca.crt": str(tls.ca),
            "listen: 0.0.0.0:6222": "listen: 127.0.0.1:-1",  # any free port
        }
    for old, new in (replacements | dict(replace or {})).items():
        assert old in text, f"the deploy config no longer names {old}"
        text = text.replace(old, new)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nats.conf"
    path.write_text(text)
    return path


def node_certificate(directory: Path, authority: str) -> tuple[Path, Path, Path]:
    """A CA named `authority` and the one node certificate it signs, for 127.0.0.1: (ca, cert, key). A node
    dials routes and accepts them, so its certificate serves as server and as client (TlsFiles' do not)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, authority)])

    def signed(subject: x509.Name, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca = (
        signed(ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    node = (
        signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats node")]), key.public_key())
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "routes-ca.crt", directory / "routes.crt", directory / "routes.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(node.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    paths[2].write_bytes(pem)
    paths[2].chmod(0o600)
    return paths
