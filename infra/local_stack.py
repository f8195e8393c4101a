"""The production services on one machine, for development: ``python -m infra.local_stack up|down|status|env``.

``up`` starts, on 127.0.0.1:

- an S3-API server (moto, the one the test suite uses), with the buckets ``cpl`` (data, checkpoints) and
  ``mlflow`` (artifacts);
- an ``mlflow server`` that proxies artifact access to that S3 server, as production does (sqlite stands
  in for PostgreSQL);
- a Ray head with its dashboard and job agent, token authentication on, whose jobs inherit the stack's
  S3 and MLflow settings, as jobs on a cluster inherit the nodes' environment.

It prints the environment that points the pipelines and ``ray job submit`` at the stack, as ``export``
lines (``eval "$(python -m infra.local_stack up)"``); progress goes to stderr. Every command is idempotent.
The stack records what it started, with each process's start time, in ``<dir>/stack.json``; ``down``
stops exactly those processes and their children, nothing else on the machine.

The stack is a scratch environment: moto keeps S3 in memory, so ``down`` discards the objects and, with
them, the MLflow store that refers to them. Logs stay in ``<dir>/logs``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import psutil

DEFAULT_DIR = Path("outputs/local-stack")
HOST = "127.0.0.1"
BUCKETS = ("cpl", "mlflow")
SERVICES = ("s3", "mlflow", "ray")  # start order; stopped in reverse
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0

# moto accepts any credentials; fixed ones make the printed environment stable across restarts.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local-stack", "AWS_SECRET_ACCESS_KEY": "local-stack",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
# Ray's agents listen on ports of their own; these defaults would clash with any other Ray instance on
# the machine (a test session's, for one), so the stack asks for free ones.
RAY_AGENT_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                   "metrics-export-port", "ray-client-server-port")


class StackError(RuntimeError):
    """A one-line reason the stack cannot do what was asked."""


@dataclass(frozen=True)
class Ports:
    s3: int = 9000
    mlflow: int = 5000
    ray: int = 6379  # the GCS, what ray.init(address=...) joins
    dashboard: int = 8265  # the dashboard and job API, what `ray job submit --address` talks to


# --- the state file ------------------------------------------------------------------------------

def _state_path(folder: Path) -> Path:
    return folder / "stack.json"


def _read_state(folder: Path) -> dict:
    path = _state_path(folder)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StackError(f"{path}: unreadable stack state ({err}); stop its processes by hand and delete it") \
            from None


def _write_state(folder: Path, state: dict) -> None:
    """Atomically, readable by the owner only: it holds the Ray token."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=folder, prefix=".stack-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2)
    os.replace(partial, _state_path(folder))


# --- processes -----------------------------------------------------------------------------------

def _recorded(record: dict | None) -> psutil.Process | None:
    """The recorded process if its pid still names it: the same pid *and* start time (pids are reused)."""
    if not record:
        return None
    try:
        process = psutil.Process(record["pid"])
        return process if abs(process.create_time() - record["started"]) < 0.01 else None
    except psutil.Error:
        return None


def _process(record: dict | None) -> psutil.Process | None:
    """The recorded process if it still runs (an exited one may linger unreaped: init here does not reap)."""
    process = _recorded(record)
    try:
        return process if process is not None and process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex((HOST, port)) == 0


# Ray's own components bind port 0, and clients connect from, the kernel's ephemeral range: a port picked
# there can be taken before the Ray agent that was given it binds it. Above Ray's worker ports
# (10002-19999) and below the ephemeral range, only explicit binds compete.
_PICKED_PORTS_FROM = 20000


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA range
        return 49152


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports, below the ephemeral range where there is room."""
    below_ephemeral = list(range(_PICKED_PORTS_FROM, _ephemeral_ports_start()))
    shift = secrets.randbelow(len(below_ephemeral)) if below_ephemeral else 0  # concurrent stacks spread out
    candidates = below_ephemeral[shift:] + below_ephemeral[:shift] + [0] * count  # 0: the kernel's choice
    with contextlib.ExitStack() as held:  # each stays bound until all are picked, so none repeats
        ports: list[int] = []
        for port in candidates:
            probe = held.enter_context(socket.socket())
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            ports.append(probe.getsockname()[1])
            if len(ports) == count:
                return ports
    raise StackError("no free ports on this machine")


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def _spawn(name: str, command: list[str], env: dict[str, str], folder: Path) -> dict:
    """Start ``command`` in a session of its own (so ``down`` can find all it starts); its record."""
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=folder)
    return {"pid": process.pid, "started": psutil.Process(process.pid).create_time(), "command": command}


def _wait_until(ready, record: dict, name: str, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if _process(record) is None:
            raise StackError(f"{name} exited while starting; see {folder / 'logs' / f'{name}.log'}")
        if time.monotonic() > deadline:
            raise StackError(f"{name} not ready after {START_TIMEOUT:.0f} s; see {folder / 'logs' / f'{name}.log'}")
        time.sleep(0.5)


def _leftovers(record: dict, marker: str | None) -> list[psutil.Process]:
    """Every process of a recorded service: its session (each service starts one, so this includes
    children its leader left behind when it died) and, for Ray, anything naming the stack's temp dir.

    A session id cannot be reused while a process of that session exists, so if the recorded pid now
    belongs to a process with another start time, nothing of the old session is left.
    """
    session = record["pid"]
    if psutil.pid_exists(session) and _recorded(record) is None:
        members = []
    else:
        members = [process for process in psutil.process_iter() if _session_of(process.pid) == session]
    if marker:  # Ray daemons that start sessions of their own still carry the temp dir in their arguments
        members += [process for process in psutil.process_iter(["cmdline"])
                    if marker in " ".join(process.info["cmdline"] or ())]
    return [process for process in {process.pid: process for process in members}.values()
            if process.pid != os.getpid()]


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _stop(processes: list[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL whatever has not exited after ``STOP_TIMEOUT``."""
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


# --- the services --------------------------------------------------------------------------------

def _bin(name: str) -> str:
    """An executable of this Python environment (the venv may not be on PATH)."""
    return str(Path(sys.executable).with_name(name))


def _urls(state: dict) -> dict[str, str]:
    ports = state["ports"]
    return {"s3": f"http://{HOST}:{ports['s3']}", "mlflow": f"http://{HOST}:{ports['mlflow']}",
            "ray": f"{HOST}:{ports['ray']}", "dashboard": f"http://{HOST}:{ports['dashboard']}"}


def environment(state: dict) -> dict[str, str]:
    """The variables that point the pipelines, ``ray job submit`` and the AWS/MLflow clients at the stack."""
    urls = _urls(state)
    # The GCS address serves both drivers (ray.init) and `ray job submit`, which finds the dashboard
    # through it. Without the loopback switch, Ray rewrites 127.0.0.1 to the machine's address.
    return {"AWS_ENDPOINT_URL": urls["s3"], **S3_CREDENTIALS, "MLFLOW_TRACKING_URI": urls["mlflow"],
            "RAY_ADDRESS": urls["ray"], "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": state["token"]}


def _service_env(state: dict) -> dict[str, str]:
    """What the services themselves run with: this environment, pointed at the stack.

    The Ray head gets the stack's S3 and MLflow settings, so submitted jobs see them as they would see
    a cluster node's; its PATH starts with this environment's ``bin``, so a job's ``python`` is this one.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "MLFLOW_", "RAY_"))}
    stack = environment(state)
    env.update({key: value for key, value in stack.items() if key != "RAY_ADDRESS"})
    env.update({"MLFLOW_S3_ENDPOINT_URL": stack["AWS_ENDPOINT_URL"], "MLFLOW_DISABLE_TELEMETRY": "true",
                # The server's job runner (GenAI features we do not use) is eight more processes.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])})
    return env


@dataclass(frozen=True)
class _Launch:
    """How to start one service, and how to tell that it serves."""

    command: list[str]
    port_flags: dict[int, str]  # port -> the flag that moves it, for a clash message
    ready: Callable[[], bool]
    after_ready: Callable[[], None] = lambda: None


def _health_checks(state: dict) -> dict[str, Callable[[], bool]]:
    """Whether each service answers: what `status` reports, and what `up` waits for (Ray's launch waits
    for more: its job agent)."""
    urls = _urls(state)
    token = {"Authorization": f"Bearer {state['token']}"}
    return {"s3": lambda: _http_ok(urls["s3"] + "/moto-api/"),
            "mlflow": lambda: _http_ok(urls["mlflow"] + "/health"),
            "ray": lambda: _http_ok(urls["dashboard"] + "/api/version", token)}


def _s3_launch(state: dict) -> _Launch:
    url = _urls(state)["s3"]

    def create_buckets() -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=url, region_name=S3_CREDENTIALS["AWS_REGION"],
                              aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
        for bucket in BUCKETS:
            client.create_bucket(Bucket=bucket)

    port = state["ports"]["s3"]
    return _Launch([_bin("python"), "-m", "moto.server", "-H", HOST, "-p", str(port)], {port: "--s3-port"},
                   _health_checks(state)["s3"], create_buckets)


def _mlflow_launch(state: dict, folder: Path) -> _Launch:
    port = state["ports"]["mlflow"]
    command = [_bin("python"), "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{(folder / 'mlflow.db').resolve()}",
               "--artifacts-destination", "s3://mlflow/artifacts"]
    return _Launch(command, {port: "--mlflow-port"}, _health_checks(state)["mlflow"])


def _ray_launch(state: dict) -> _Launch:
    ports = state["ports"]
    agent_ports = dict(zip(RAY_AGENT_PORTS, _free_ports(len(RAY_AGENT_PORTS)), strict=True))
    # --block keeps `ray start` in charge of the processes it starts, so stopping it stops this head only
    # (`ray stop` would stop every Ray instance on the machine).
    command = [_bin("ray"), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={ports['ray']}",
               "--include-dashboard=true", f"--dashboard-host={HOST}", f"--dashboard-port={ports['dashboard']}",
               f"--temp-dir={state['ray_temp_dir']}", *[f"--{name}={port}" for name, port in agent_ports.items()]]
    if state.get("num_cpus"):
        command.append(f"--num-cpus={state['num_cpus']}")
    # The dashboard answers before the job agent serves, and a job submitted in between is refused. Ask the
    # agent itself: an open port alone may belong to whatever took it first.
    agent_health = f"http://{HOST}:{agent_ports['dashboard-agent-listen-port']}/api/local_raylet_healthz"
    return _Launch(command, {ports["ray"]: "--ray-port", ports["dashboard"]: "--dashboard-port"},
                   lambda: _port_open(ports["dashboard"]) and _http_ok(agent_health))


def _launches(state: dict, folder: Path) -> dict[str, _Launch]:
    return {"s3": _s3_launch(state), "mlflow": _mlflow_launch(state, folder), "ray": _ray_launch(state)}


def _marker(state: dict, name: str) -> str | None:
    return state["ray_temp_dir"] if name == "ray" else None


def _ray_temp_dir(folder: Path) -> str:
    """Short (Ray's socket paths must stay under 108 bytes) and unique to this stack's folder."""
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]
    return str(Path(tempfile.gettempdir()) / f"ray-stack-{digest}")


# --- the commands --------------------------------------------------------------------------------

def up(folder: Path = DEFAULT_DIR, ports: Ports = Ports(), num_cpus: int | None = None) -> dict:
    """Start whatever of the stack is not running; the state. Running services keep their ports."""
    state = _read_state(folder)
    running = {name for name in SERVICES if _process(state.get("services", {}).get(name))}
    for name, record in state.get("services", {}).items():  # what a service that died left behind
        if name not in running:
            _stop(_leftovers(record, _marker(state, name)))
    if not running:  # a fresh stack: new token, new ports, and no MLflow store pointing at lost S3 objects
        (folder / "mlflow.db").unlink(missing_ok=True)
        state = {"ports": asdict(ports), "token": secrets.token_hex(16), "ray_temp_dir": _ray_temp_dir(folder),
                 "num_cpus": num_cpus, "services": {}}
    elif "s3" not in running:
        print("local stack: the S3 server had stopped; objects stored before are gone", file=sys.stderr)
    launches = {name: launch for name, launch in _launches(state, folder).items() if name not in running}
    for launch in launches.values():
        for port, flag in launch.port_flags.items():
            if _port_open(port):
                raise StackError(f"{HOST}:{port} is already in use by another program; choose another with {flag}")
    # All at once (none needs another to start; S3 is only used once MLflow serves a request), and recorded
    # before waiting, so that `down` finds whatever did start.
    for name, launch in launches.items():
        print(f"local stack: starting {name}...", file=sys.stderr)
        state["services"][name] = _spawn(name, launch.command, _service_env(state), folder)
    _write_state(folder, state)
    try:
        for name, launch in launches.items():
            _wait_until(launch.ready, state["services"][name], name, folder)
            launch.after_ready()
    except BaseException:  # a half-started stack is no use: stop what this call started
        for name in launches:
            _stop(_leftovers(state["services"].pop(name), _marker(state, name)))
        _write_state(folder, state)
        raise
    return state


def down(folder: Path = DEFAULT_DIR) -> list[int]:
    """Stop what ``up`` started (and only that); the pids that were running. The S3 objects and the MLflow
    store go with it."""
    state = _read_state(folder)
    stopped: list[int] = []
    for name in reversed(SERVICES):
        record = state.get("services", {}).get(name)
        if record:
            processes = _leftovers(record, _marker(state, name))
            _stop(processes)
            stopped += [process.pid for process in processes]
    if state:
        _state_path(folder).unlink()
        (folder / "mlflow.db").unlink(missing_ok=True)
    return stopped


def status(folder: Path = DEFAULT_DIR) -> dict[str, str]:
    """Each service: ``running <url>``, ``not responding <url>`` or ``stopped``."""
    state = _read_state(folder)
    if not state:
        return {name: "stopped" for name in SERVICES}
    urls = _urls(state)
    healthy = _health_checks(state)
    where = {"s3": urls["s3"], "mlflow": urls["mlflow"], "ray": f"{urls['ray']}, dashboard {urls['dashboard']}"}
    report = {}
    for name in SERVICES:
        if _process(state["services"].get(name)) is None:
            report[name] = "stopped"
        else:
            report[name] = f"{'running' if healthy[name]() else 'not responding'} {where[name]}"
    return report


def exports(state: dict) -> str:
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in environment(state).items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_stack", description=__doc__.split("\n\n")[0],
        epilog='Typical use: eval "$(python -m infra.local_stack up)"; ray job submit ...; '
               "python -m infra.local_stack down")
    parser.add_argument("command", choices=("up", "down", "status", "env"),
                        help="up: start (prints the environment); down: stop what up started; status: each "
                             "service; env: print the environment of a running stack")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"state, logs and the MLflow store (default {DEFAULT_DIR})")
    defaults = Ports()
    parser.add_argument("--s3-port", type=int, default=defaults.s3)
    parser.add_argument("--mlflow-port", type=int, default=defaults.mlflow)
    parser.add_argument("--ray-port", type=int, default=defaults.ray, help="the Ray head's GCS port")
    parser.add_argument("--dashboard-port", type=int, default=defaults.dashboard)
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs the Ray head offers (default: all)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            state = up(args.dir, Ports(args.s3_port, args.mlflow_port, args.ray_port, args.dashboard_port),
                       args.num_cpus)
            print("local stack: up; logs in " + str(args.dir / "logs"), file=sys.stderr)
            sys.stdout.write(exports(state))
        elif args.command == "down":
            stopped = down(args.dir)
            print(f"local stack: down ({len(stopped)} processes stopped)" if stopped
                  else "local stack: nothing was running", file=sys.stderr)
        elif args.command == "status":
            report = status(args.dir)
            for name, line in report.items():
                print(f"{name:7s} {line}")
            return 0 if all(line.startswith("running") for line in report.values()) else 1
        else:
            state = _read_state(args.dir)
            if not any(_process(record) for record in state.get("services", {}).values()):
                raise StackError(f"no local stack is running from {args.dir}; start one with `up`")
            sys.stdout.write(exports(state))
    except StackError as err:
        print(f"local stack: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
