"""The production MLflow server, ``infra/mlflow/serve.sh``, against a real PostgreSQL and the suite's S3 server.

The fixtures start a PostgreSQL from the machine's server binaries (Debian's ``postgresql`` package, which
``make postgres`` installs) in a temporary directory on 127.0.0.1, with the two databases a deployment has,
and run serve.sh unchanged on it: basic auth, artifacts proxied to a bucket on the moto server. Clients
then work as the pipelines do, under their own accounts and without any S3 credentials.

Without PostgreSQL binaries the server tests are skipped, loudly: the deployed configuration is then
untested on that machine.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

# s3_endpoint is a fixture: importing it here makes it available to this module.
from tests.pipelines.conftest import free_port, new_bucket, s3_endpoint  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE = REPO_ROOT / "infra" / "mlflow" / "serve.sh"
START_TIMEOUT = 180.0  # two uvicorn workers import MLflow at once: ~15 s on 2 busy cores
STOP_TIMEOUT = 30.0

APP_ROLE = "mlflow"
# Characters that must be URL-encoded in a URI, and a % that configparser and alembic must not interpolate.
APP_PASSWORD = "pg p@ss/w%rd:1"
ADMIN = ("admin", "admin-password-0123")
SECRETS = {  # every value serve.sh must never print
    "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-key-for-the-tests",
}


# --- processes -------------------------------------------------------------------------------------

def live_processes(pred) -> list[str]:
    """``"pid command"`` of every process that is not a zombie and for which ``pred(pid, ppid, pgid)``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid, pgid = stat.read_text().rsplit(")", 1)[1].split()[:3]
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # exited while we looked
        pid = int(stat.parent.name)
        if state != "Z" and pred(pid, int(ppid), int(pgid)):
            found.append(f"{pid} {command.strip()[:160]}")
    return found


# --- PostgreSQL ------------------------------------------------------------------------------------

def postgres_bindir() -> Path | None:
    """The directory of ``initdb``: on PATH, else Debian's newest ``/usr/lib/postgresql/<major>/bin``."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = [path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    return max(found, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0, default=None)


@dataclass
class Postgres:
    """The running test server: the superuser ``postgres`` and the application role ``mlflow``."""

    port: int
    superuser_password: str

    def uri(self, database: str) -> str:
        """The URI serve.sh gets: the application role, its password URL-encoded."""
        password = urllib.parse.quote(APP_PASSWORD, safe="")
        return f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str, superuser: bool = False):
        import psycopg

        user, password = ("postgres", self.superuser_password) if superuser else (APP_ROLE, APP_PASSWORD)
        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=database,
                               autocommit=True, connect_timeout=10)

    def rows(self, database: str, query: str, *params) -> list[tuple]:
        with self.connect(database) as connection:
            return connection.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def postgres() -> Postgres:
    """A PostgreSQL server on 127.0.0.1 with the databases ``mlflow`` and ``mlflow_auth``, owned by ``mlflow``."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = ("NO POSTGRESQL: initdb not found on PATH or in /usr/lib/postgresql/*/bin, so the production "
                  "MLflow server configuration is NOT tested here; `make postgres` installs it "
                  "(apt-get install postgresql)")
        warnings.warn(reason, stacklevel=1)  # in the warnings summary as well as in the skip list
        pytest.skip(reason)
    # PostgreSQL refuses to run as root: as root, it runs as the package's `postgres` user, in a directory
    # that user owns (outside pytest's temporary directories, whose parents are private to root).
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # sbin is not on every root PATH (CI's environment has /usr/local/bin:/usr/bin:/bin).
        runuser = shutil.which("runuser", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        if runuser is None:
            pytest.fail("as root, PostgreSQL must run as another user, and runuser (util-linux) is missing")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("as root, PostgreSQL must run as the `postgres` user, which does not exist "
                        "(the Debian package creates it)")
        run_as = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="cpl-postgres-"))
    data = base / "data"
    superuser_password = "superuser-" + os.urandom(8).hex()
    (base / "password").write_text(superuser_password + "\n")
    if owner is not None:
        for path in (base, base / "password"):
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def run(*command: str) -> None:
        done = subprocess.run([*run_as, *command], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"

    port = free_port()
    postmaster = None
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={base / 'password'}", "-E", "UTF8", "--no-locale", "--no-sync")
        with (data / "postgresql.conf").open("a") as conf:
            # TCP on loopback only, no Unix socket. fsync off: a test server that never survives a crash
            # (the restarts under test are MLflow's) spends its time on migrations, not on disk flushes.
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                       "fsync = off\nfull_page_writes = off\n")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-w", "-t", "60", "start")
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        server = Postgres(port, superuser_password)
        from psycopg import sql

        with server.connect("postgres", superuser=True) as connection:
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(APP_ROLE),
                                                                                   sql.Literal(APP_PASSWORD)))
            for database in ("mlflow", "mlflow_auth"):
                connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                                  sql.Identifier(APP_ROLE)))
        yield server
    finally:
        try:
            if postmaster is not None:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
                left = live_processes(lambda pid, ppid, pgid: postmaster in (pid, ppid))
                assert not left, f"PostgreSQL left processes behind: {left}"
        finally:
            shutil.rmtree(base, ignore_errors=True)


# --- the MLflow server -----------------------------------------------------------------------------

def configuration(postgres_uri, artifacts: str, port: int) -> dict[str, str]:
    """serve.sh's variables, as a deployment sets them (host and port aside)."""
    return {"MLFLOW_BACKEND_STORE_URI": postgres_uri("mlflow"), "MLFLOW_AUTH_DATABASE_URI": postgres_uri("mlflow_auth"),
            "MLFLOW_ARTIFACTS_DESTINATION": artifacts, "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0], **SECRETS,
            "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port)}


def healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@dataclass
class MlflowServer:
    url: str
    env: dict[str, str]
    bucket: str
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(["bash", str(SERVE)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(AssertionError):
                    self.stop()
                pytest.fail(f"serve.sh did not come up at {self.url}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM to the main process only, as ``docker stop`` and the kubelet send it: within STOP_TIMEOUT,
        every process it started (its process group) must be gone."""
        group, deadline = self.process.pid, time.monotonic() + STOP_TIMEOUT
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)
        while left := live_processes(lambda pid, ppid, pgid: pgid == group):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                raise AssertionError(f"the MLflow server left processes behind after SIGTERM: {left}")
            time.sleep(0.1)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def server(postgres, s3_endpoint, tmp_path_factory) -> MlflowServer:  # noqa: F811
    """serve.sh on 127.0.0.1 against ``postgres``, artifacts in a fresh bucket of the session's S3 server."""
    base = tmp_path_factory.mktemp("mlflow-server")
    bucket, port = new_bucket(), free_port()
    env = {**os.environ, **configuration(postgres.uri, f"s3://{bucket}/mlflow", port),
           # Empty, as compose passes an option it does not use: serve.sh must drop it (boto3 fails on an empty
           # endpoint) so that boto3 finds the session's S3 server in AWS_ENDPOINT_URL, with its AWS_* keys.
           "MLFLOW_S3_ENDPOINT_URL": "", "AWS_ENDPOINT_URL": s3_endpoint,
           "TMPDIR": str(base),  # serve.sh's auth config file lands here, not in /tmp
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    instance = MlflowServer(f"http://127.0.0.1:{port}", env, bucket, base / "server.log")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def as_user(monkeypatch, server):
    """``as_user(name, password)``: this process becomes an MLflow client of ``server`` under that account,
    with no S3 credentials at all, so any artifact transfer must go through the server's proxy.

    The account is process-wide (MLflow reads it from the environment): it applies to every client
    object, old or new, until the next switch.
    """
    import mlflow.tracking._tracking_service.utils as tracking_utils

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # The promotion code calls mlflow.set_tracking_uri, process-global state; put it back afterwards.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)

    def switch(name: str, password: str):
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(tracking_uri=server.url, registry_uri=server.url)

    return switch


def create_user(server: MlflowServer, name: str, password: str, auth=ADMIN) -> requests.Response:
    return requests.post(f"{server.url}/api/2.0/mlflow/users/create", json={"username": name, "password": password},
                         auth=auth, timeout=30)


def s3_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``, read with the server's credentials (the test's client has none)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


# --- tests -----------------------------------------------------------------------------------------

VALID = configuration(lambda db: f"postgresql://u:{urllib.parse.quote(APP_PASSWORD, safe='')}@db:5432/{db}",
                      "s3://bucket/mlflow", 5000)


@pytest.mark.parametrize(("change", "named"), [
    *[({name: None}, name) for name in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI",
                                        "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY",
                                        "MLFLOW_ARTIFACTS_DESTINATION")],
    ({"MLFLOW_AUTH_DATABASE_URI": ""}, "MLFLOW_AUTH_DATABASE_URI"),
    ({"MLFLOW_BACKEND_STORE_URI": "sqlite:///mlflow.db"}, "MLFLOW_BACKEND_STORE_URI"),
    ({"MLFLOW_ARTIFACTS_DESTINATION": "/srv/mlartifacts"}, "MLFLOW_ARTIFACTS_DESTINATION"),
    ({"MLFLOW_AUTH_ADMIN_PASSWORD": "short"}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
    ({"MLFLOW_PORT": "tcp://10.96.0.12:5000"}, "MLFLOW_PORT"),  # what a Kubernetes service link sets
], ids=lambda value: value if isinstance(value, str) else None)
def test_a_bad_configuration_fails_in_one_line_naming_the_variable(change, named, tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(tmp_path), **VALID, **change}
    env = {key: value for key, value in env.items() if value is not None}
    done = subprocess.run(["bash", str(SERVE)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("serve.sh: "), done.stderr
    assert done.stdout == ""
    for secret in [*SECRETS.values(), APP_PASSWORD, urllib.parse.quote(APP_PASSWORD, safe="")]:
        assert secret not in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is written before the configuration is valid"


def test_the_image_installs_the_tested_versions_and_runs_serve_sh():
    """The image cannot be built here (no Docker daemon); its pins can be checked against the suite's."""
    dockerfile = (REPO_ROOT / "infra" / "mlflow" / "Dockerfile").read_text()
    tested = dict(line.split("==") for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    installed = dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[a-z,]+\])?==([^"]+)"', dockerfile))
    assert installed == {name: tested[name] for name in ("mlflow", "psycopg", "boto3")}
    assert re.search(r"pip install -c \S*constraints\.txt", dockerfile)
    assert 'ENTRYPOINT ["/usr/local/bin/serve.sh"]' in dockerfile and "infra/mlflow/serve.sh" in dockerfile
    assert re.search(r"^USER [1-9]", dockerfile, re.MULTILINE), "the server runs as a non-root user"


def required_variables() -> set[str]:
    return set(re.findall(r"^require (\w+)", SERVE.read_text(), re.MULTILINE))


def pinned(image: str) -> bool:
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return bool(tag) and tag != "latest"


def test_the_manifests_parse_and_give_serve_sh_every_variable_it_requires():
    """compose.yaml and k8s/mlflow.yaml only set serve.sh's environment: each must set all it requires."""
    import yaml

    required = required_variables()
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"} <= required
    compose = yaml.safe_load((REPO_ROOT / "infra" / "mlflow" / "compose.yaml").read_text())
    mlflow_service = compose["services"]["mlflow"]
    assert mlflow_service["build"]["dockerfile"] == "infra/mlflow/Dockerfile"
    assert required <= set(mlflow_service["environment"])
    assert all(pinned(service["image"]) for service in compose["services"].values())
    documents = [doc for doc in yaml.safe_load_all((REPO_ROOT / "infra" / "k8s" / "mlflow.yaml").read_text()) if doc]
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert required <= {variable["name"] for variable in container["env"]}
    assert pinned(container["image"]) and container["image"].endswith(":" + mlflow_version())
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {doc["kind"] for doc in documents} >= {"Deployment", "Service", "ServiceAccount"}


def mlflow_version() -> str:
    return next(line.split("==")[1] for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
                if line.startswith("mlflow=="))


def test_requests_without_valid_credentials_are_refused(server):
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=30).status_code == 401
    assert requests.get(search, auth=(ADMIN[0], "not-the-password"), timeout=30).status_code == 401
    assert requests.get(f"{server.url}/api/2.0/mlflow-artifacts/artifacts", timeout=30).status_code == 401
    assert requests.post(f"{server.url}/api/2.0/mlflow/users/create", json={"username": "intruder",
                                                                            "password": "intruder-password"},
                         timeout=30).status_code == 401
    assert requests.get(search, auth=ADMIN, timeout=30).status_code == 200
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200  # probes need no account


def test_users_track_register_and_promote_through_the_server(server, s3_endpoint, as_user, tmp_path):  # noqa: F811
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipelines.registry import lock, promotion

    assert create_user(server, "trainer", "trainer-password-1").status_code == 200
    assert create_user(server, "viewer", "viewer-password-1").status_code == 200
    assert create_user(server, "mallory", "mallory-password-1", auth=("viewer", "viewer-password-1")).status_code \
        == 403, "only admins create users"

    client = as_user("trainer", "trainer-password-1")
    experiment = client.create_experiment("infra-test")
    assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:/")
    run = client.create_run(experiment, run_name="tracked")
    run_id = run.info.run_id
    client.log_param(run_id, "optim.lr", "0.0002")
    for step in range(3):
        client.log_metric(run_id, "train/loss", 1.0 / (step + 1), step=step)
    (tmp_path / "notes.txt").write_text("through the proxy\n")
    client.log_artifact(run_id, str(tmp_path / "notes.txt"), "notes")
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = s3_objects(s3_endpoint, server.bucket)
    assert [body for key, body in stored.items() if key.startswith("mlflow/") and
            key.endswith(f"{run_id}/artifacts/notes/notes.txt")] == [b"through the proxy\n"], sorted(stored)
    assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [1.0, 0.5, 1.0 / 3]

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, model_input: list[int]) -> list[int]:
            return [2 * x for x in model_input]

    name = "cpl-restore-infra"
    with mlflow.start_run(run_id=run_id):  # registered as pipelines/publishing.py registers: version 1
        logged = mlflow.pyfunc.log_model(name="model", python_model=Doubler(), pip_requirements=["mlflow"],
                                         registered_model_name=name)
    client.create_model_version(name, logged.model_uri, run_id=run_id, model_id=logged.model_id)  # version 2

    # Version 1 is the champion; the promotion pipeline's own code replaces it by version 2, then rolls back.
    client.set_registered_model_alias(name, promotion.CHAMPION, "1")
    decision = promotion.Decision(True, "test", name, "2", "1", promotion.Gate(),
                                  {"noise": {"input": 20.0, "champion": 20.5, "challenger": 21.0, "delta": 0.5}},
                                  0.5, {"label": "infra-test", "digest": "0" * 16})
    promotion.apply(decision, tmp_path / "promote")
    assert client.get_registered_model(name).aliases == {promotion.CHAMPION: "2", promotion.PREVIOUS: "1"}
    assert client.get_model_version_by_alias(name, promotion.CHAMPION).version == "2"
    [found] = client.search_registered_models(filter_string=f"name = '{name}'")
    assert found.aliases == {promotion.CHAMPION: "2", promotion.PREVIOUS: "1"}
    assert {v.version for v in client.search_model_versions(f"name = '{name}'")} == {"1", "2"}
    assert client.get_model_version(name, "1").aliases == [promotion.PREVIOUS]
    champion = mlflow.pyfunc.load_model(f"models:/{name}@{promotion.CHAMPION}")  # downloaded through the proxy
    assert champion.predict([1, 2]) == [2, 4]

    viewer = as_user("viewer", "viewer-password-1")  # default permission READ: reads everything, changes nothing
    assert viewer.get_model_version_by_alias(name, promotion.CHAMPION).version == "2"
    for change in (lambda: viewer.set_registered_model_alias(name, promotion.CHAMPION, "1"),
                   lambda: viewer.delete_registered_model_alias(name, promotion.PREVIOUS),
                   lambda: viewer.log_param(run_id, "sneaky", "1")):
        with pytest.raises(MlflowException) as refused:
            change()
        assert refused.value.error_code == "PERMISSION_DENIED"

    client = as_user("trainer", "trainer-password-1")
    promotion.rollback(name, "test rollback", tmp_path / "rollback")
    assert client.get_registered_model(name).aliases == {promotion.CHAMPION: "1"}
    assert promotion.alias_version(client, name, promotion.PREVIOUS) is None
    with pytest.raises(MlflowException):
        client.get_registered_model(name + lock.LOCK_SUFFIX)  # the registry lock was released
    audit = client.get_experiment_by_name(promotion.EXPERIMENT)
    assert len(client.search_runs([audit.experiment_id])) == 2  # the promotion and the rollback


def test_the_data_lives_in_postgres_and_survives_a_restart(server, postgres, as_user):
    client = as_user(*ADMIN)
    experiment = client.create_experiment("survivor")
    run_id = client.create_run(experiment, run_name="survivor").info.run_id
    client.log_metric(run_id, "val/psnr", 27.5, step=4)
    client.create_registered_model("survivor-model")
    version = client.create_model_version("survivor-model", f"mlflow-artifacts:/{experiment}/{run_id}/artifacts/m",
                                          run_id=run_id).version
    client.set_registered_model_alias("survivor-model", "champion", version)
    assert create_user(server, "survivor", "survivor-password-1").status_code == 200

    assert postgres.rows("mlflow", "SELECT name FROM runs WHERE run_uuid = %s", run_id) == [("survivor",)]
    assert postgres.rows("mlflow", "SELECT value, step FROM latest_metrics WHERE run_uuid = %s AND key = %s",
                         run_id, "val/psnr") == [(27.5, 4)]
    assert postgres.rows("mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
                         "survivor-model") == [("champion", int(version))]
    assert postgres.rows("mlflow_auth", "SELECT is_admin FROM users WHERE username IN (%s, %s) ORDER BY username",
                         *sorted([ADMIN[0], "survivor"])) == [(True,), (False,)]

    server.restart()

    assert client.get_run(run_id).data.metrics == {"val/psnr": 27.5}
    assert client.get_model_version_by_alias("survivor-model", "champion").version == version
    survivor = as_user("survivor", "survivor-password-1")
    assert survivor.get_experiment_by_name("survivor").experiment_id == experiment
