"""The cluster definitions keep what the pipelines rely on, checked offline (no AWS, Docker or Kubernetes):
``ray_cluster.yaml`` (Ray's cluster launcher on AWS), ``infra/node-image/Dockerfile`` (the node image) and
``infra/k8s/rayjob.yaml`` (KubeRay).

Each invariant is a ``*_problems`` function that lists what is wrong. The tests assert that the real files have
no problem, and that a deliberately broken copy has one, so that no check can pass vacuously.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "ray_cluster.yaml"
DOCKERFILE = ROOT / "infra" / "node-image" / "Dockerfile"
RAYJOB_YAML = ROOT / "infra" / "k8s" / "rayjob.yaml"
TRAIN_CONFIG = ROOT / "configs" / "train_five_task.yaml"

GiB = 1024**3
DASHBOARD_PORT = 8265
# AWS access key ids (long-term and temporary) and the names under which secrets are usually written.
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b")
SECRET_NAMES = re.compile(r"aws_access_key_id|aws_secret_access_key|aws_session_token", re.IGNORECASE)


# --- reading the files ---------------------------------------------------------------------------------------

def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def load_rayjob_docs() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(RAYJOB_YAML.read_text()) if doc is not None]


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])


def constraint_pins() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def constraints_python() -> str:
    """The Python (major.minor) that constraints.txt was frozen with, as its header states."""
    match = re.search(r"Python (\d+\.\d+)", (ROOT / "constraints.txt").read_text())
    assert match, "constraints.txt no longer says which Python it was frozen with"
    return match.group(1)


def image_home() -> str:
    """The node image's HOME, where the cluster launcher places its files."""
    match = re.search(r"\bHOME=(\S+)", DOCKERFILE.read_text())
    assert match, "the Dockerfile sets no HOME"
    return match.group(1)


def image_tag(reference: str) -> str | None:
    """The tag of an image reference (``registry/repo:tag``), or None when it has none."""
    last = reference.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.partition(":")[2] or None


def docker_size(value: str) -> int:
    """``72g`` -> bytes, as ``docker run --shm-size`` reads it (binary units)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", value.strip("'\"").lower())
    if not match:
        raise ValueError(f"not a docker size: {value!r}")
    return int(match.group(1)) * 1024 ** "bkmg".index(match.group(2) or "b")


# --- ray_cluster.yaml ----------------------------------------------------------------------------------------

def worker_types(config: dict) -> dict[str, dict]:
    return {name: spec for name, spec in config["available_node_types"].items() if name != config["head_node_type"]}


def node_docker_options(config: dict, node_type: str) -> list[str]:
    """The ``docker run`` options a node of ``node_type`` gets, merged the way Ray's launcher merges them (a node
    type's ``docker`` entries replace the global ones of the same name)."""
    docker = dict(config.get("docker", {}))
    if node_type == config["head_node_type"]:
        options = docker.get("run_options", []) + docker.get("head_run_options", [])
    else:
        docker.update(config["available_node_types"][node_type].get("docker", {}))
        options = docker.get("run_options", []) + docker.get("worker_run_options", [])
    return [token for option in options for token in shlex.split(option)]


def docker_env(tokens: list[str]) -> dict[str, str]:
    env = {}
    for flag, value in zip(tokens, tokens[1:] + [""], strict=True):
        if flag in ("--env", "-e"):
            key, _, val = value.partition("=")
            env[key] = val
        elif flag.startswith("--env="):
            key, _, val = flag.removeprefix("--env=").partition("=")
            env[key] = val
    return env


def docker_shm_bytes(tokens: list[str]) -> int | None:
    for flag, value in zip(tokens, tokens[1:] + [""], strict=True):
        if flag == "--shm-size":
            return docker_size(value)
        if flag.startswith("--shm-size="):
            return docker_size(flag.removeprefix("--shm-size="))
    return None


def start_option(commands: list[str], option: str) -> str | None:
    """The value of a ``ray start`` option in a list of start commands."""
    match = re.search(rf"{re.escape(option)}[= ](\S+)", " ".join(commands))
    return match.group(1) if match else None


def cluster_images(config: dict) -> list[str]:
    docker = config.get("docker", {})
    images = [docker[key] for key in ("image", "head_image", "worker_image") if key in docker]
    images += [spec["docker"]["worker_image"] for spec in config["available_node_types"].values()
               if "worker_image" in spec.get("docker", {})]
    return images


def ray_schema_problems(config: dict) -> list[str]:
    """What Ray's cluster launcher itself rejects (``ray up`` runs prepare_config and then validate_config on the
    loaded YAML; only the AWS lookups that follow are left out)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (jsonschema.ValidationError, ValueError, RuntimeError, AssertionError, KeyError) as err:
        return [f"Ray rejects the config: {type(err).__name__}: {str(err).splitlines()[0]}"]
    return []


def head_problems(config: dict) -> list[str]:
    head = config["available_node_types"][config["head_node_type"]]
    resources = head.get("resources", {})
    problems = []
    if resources.get("CPU") != 0:
        problems.append(f"the head advertises CPUs {resources.get('CPU')!r}: data tasks and training could land there")
    if resources.get("GPU", 0) != 0:
        problems.append("the head advertises GPUs")
    return problems


def dashboard_problems(config: dict) -> list[str]:
    commands = config.get("head_start_ray_commands", [])
    problems = []
    if start_option(commands, "--dashboard-host") != "0.0.0.0":
        problems.append("the dashboard does not listen beyond the head itself: `ray job submit` cannot reach it")
    if int(start_option(commands, "--dashboard-port") or DASHBOARD_PORT) != DASHBOARD_PORT:
        problems.append(f"the dashboard is not on port {DASHBOARD_PORT}")
    return problems


def gpu_worker_problems(config: dict) -> list[str]:
    gpu_types = {name: spec for name, spec in worker_types(config).items() if spec["resources"].get("GPU", 0) > 0}
    if not gpu_types:
        return ["no worker type has GPUs"]
    scaling = yaml.safe_load(TRAIN_CONFIG.read_text())["scaling"]
    gpus_needed = scaling["workers"] * scaling.get("gpus_per_worker", 1.0)  # ScalingSection's default
    cpus_needed = scaling["workers"] * scaling["cpus_per_worker"]
    problems = []
    for name, spec in gpu_types.items():
        if spec.get("min_workers", 0) != 0:
            problems.append(f"{name}: min_workers {spec['min_workers']}, so GPUs are paid for while idle")
        if spec.get("max_workers", config["max_workers"]) < 1:
            problems.append(f"{name}: can never start")
    if not any(spec["resources"]["GPU"] >= gpus_needed and spec["resources"].get("CPU", 0) >= cpus_needed
               for spec in gpu_types.values()):
        problems.append(f"no GPU node holds configs/train_five_task.yaml's {gpus_needed:g} GPUs and "
                        f"{cpus_needed:g} CPUs")
    return problems


def cpu_worker_problems(config: dict) -> list[str]:
    cpu_types = {name: spec for name, spec in worker_types(config).items()
                 if spec["resources"].get("GPU", 0) == 0 and spec["resources"].get("CPU", 0) > 0}
    if not cpu_types:
        return ["no CPU-only worker type for Ray Data synthesis"]
    problems = []
    for name, spec in cpu_types.items():
        if spec.get("min_workers", 0) != 0:
            problems.append(f"{name}: min_workers {spec['min_workers']}")
        if spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType") != "spot":
            problems.append(f"{name}: not on spot")
    return problems


def image_problems(images: list[str], version: str) -> list[str]:
    if not images:
        return ["no image"]
    problems = []
    for image in images:
        tag = image_tag(image)
        if tag is None or tag == "latest":
            problems.append(f"{image}: not pinned to a tag")
        elif not re.fullmatch(rf"{re.escape(version)}-cu\d{{3}}", tag):
            problems.append(f"{image}: tag {tag!r} is not <project version {version}>-cu<CUDA>")
    return problems


def credential_problems(config: dict, text: str) -> list[str]:
    problems = [f"{name}: no IAM instance profile" for name, spec in config["available_node_types"].items()
                if not {"Name", "Arn"} & set(spec["node_config"].get("IamInstanceProfile", {}))]
    if "aws_credentials" in config.get("provider", {}):
        problems.append("credentials in provider.aws_credentials")
    if AWS_KEY_ID.search(text) or SECRET_NAMES.search(text):
        problems.append("something that looks like an AWS key")
    return problems


def environment_problems(config: dict) -> list[str]:
    problems = []
    if f"{image_home()}/.ray/auth_token" not in config.get("file_mounts", {}):
        problems.append("the nodes get no auth token at Ray's default path in the image's home")
    for node_type in config["available_node_types"]:
        options = node_docker_options(config, node_type)
        env = docker_env(options)
        if not re.match(r"https?://", env.get("MLFLOW_TRACKING_URI", "")):
            problems.append(f"{node_type}: no MLFLOW_TRACKING_URI")
        if "MLFLOW_TRACKING_PASSWORD" in env or "--env-file" not in options:
            problems.append(f"{node_type}: the MLflow credentials do not come from a file made on the host")
        if env.get("AWS_REGION") != config["provider"]["region"]:
            problems.append(f"{node_type}: AWS_REGION is not the cluster's region")
        if env.get("RAY_AUTH_MODE") != "token":
            problems.append(f"{node_type}: token authentication is off")
    return problems


def shared_memory_problems(config: dict) -> list[str]:
    """/dev/shm must hold the object store (Ray refuses to start a larger one) with room for NCCL and others."""
    problems = []
    for node_type in config["available_node_types"]:
        is_head = node_type == config["head_node_type"]
        commands = config["head_start_ray_commands" if is_head else "worker_start_ray_commands"]
        store = start_option(commands, "--object-store-memory")
        shm = docker_shm_bytes(node_docker_options(config, node_type))
        if store is None or shm is None:
            problems.append(f"{node_type}: object store ({store}) or /dev/shm ({shm}) left to defaults")
        elif shm < int(store) + GiB:
            problems.append(f"{node_type}: /dev/shm ({shm / GiB:.1f} GiB) does not hold the object store "
                            f"({int(store) / GiB:.1f} GiB) with 1 GiB to spare")
    return problems


# --- infra/node-image/Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())]


def dockerfile_problems(text: str, pins: dict[str, str], python: str, cluster_tag: str) -> list[str]:
    instructions = dockerfile_instructions(text)
    problems = []
    bases = [[word for word in args.split() if not word.startswith("--")][0]
             for name, args in instructions if name == "FROM"]
    for base in bases:
        tag = image_tag(base)
        if tag is None or not re.search(r"\d+\.\d+\.\d+", tag):
            problems.append(f"base image {base} is not pinned to an exact version tag")
    python_bases = [image_tag(base) or "" for base in bases if base.startswith("python:")]
    for tag in python_bases:
        version = tag.split("-", 1)[0]
        if not version.startswith(python + ".") or version not in requires_python():
            problems.append(f"base Python {version} is not the {python} of constraints.txt / pyproject.toml")
    if not python_bases:
        problems.append("no python:<exact version> base image, so the Python version is not pinned")
    installs = [command for name, args in instructions if name == "RUN"
                for command in re.split(r"&&|;", args) if re.search(r"\bpip\b.*\binstall\b", command)]
    if not installs:
        problems.append("installs nothing with pip")
    for command in installs:
        if not re.search(r"(-c|--constraint)[ =]constraints\.txt", command):
            problems.append(f"pip install without -c constraints.txt: {command.strip()}")
    if not any(".[train]" in command for command in installs):
        problems.append("does not install the train extra")
    for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9][^\s\"']*)", " ".join(installs)):
        if pins.get(canonicalize_name(name)) != version:
            problems.append(f"names {name}=={version}, constraints.txt has {pins.get(canonicalize_name(name))}")
    cuda = re.search(r"NVIDIA_REQUIRE_CUDA=\"?cuda>=(\d+)\.(\d+)", text)
    if cuda is None or not cluster_tag.endswith(f"-cu{cuda.group(1)}{cuda.group(2)}"):
        problems.append(f"the CUDA it requires does not match the image tag {cluster_tag}")
    users = [args.split(":")[0] for name, args in instructions if name == "USER"]
    if not users or users[-1] in ("0", "root"):
        problems.append("runs as root")
    if not any(name == "ENV" and re.search(r"\bHOME=/", args) for name, args in instructions):
        problems.append("no HOME in the image, which the cluster launcher reads to place its files")
    return problems


# --- infra/k8s/rayjob.yaml ---------------------------------------------------------------------------------------

def gpu_count(container: dict) -> int:
    resources = container.get("resources", {})
    return max(int(resources.get(kind, {}).get("nvidia.com/gpu", 0)) for kind in ("requests", "limits"))


def k8s_quantity(value: str) -> int:
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(value))
    if not match:
        raise ValueError(f"not a binary quantity: {value!r}")
    return int(match.group(1)) * 1024 ** ([None, "Ki", "Mi", "Gi", "Ti"].index(match.group(2)))


def rayjob_problems(docs: list[dict], image: str) -> list[str]:
    jobs = [doc for doc in docs if doc.get("kind") == "RayJob"]
    if len(jobs) != 1 or jobs[0].get("apiVersion") != "ray.io/v1":
        return ["not exactly one RayJob of apiVersion ray.io/v1"]
    spec = jobs[0]["spec"]
    problems = []
    if not re.search(r"\bpython \S*pipelines/train\.py\b.*--config \S*configs/train_five_task\.yaml",
                     spec.get("entrypoint", "")):
        problems.append("the entrypoint does not run pipelines/train.py on configs/train_five_task.yaml")
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    groups = {"head": head, **{group["groupName"]: group for group in cluster.get("workerGroupSpecs", [])}}
    config_maps = {doc["metadata"]["name"]: doc.get("data", {}) for doc in docs if doc.get("kind") == "ConfigMap"}
    accounts = {doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "ServiceAccount"}
    if any(doc.get("kind") == "Secret" for doc in docs):
        problems.append("a Secret is written in the manifest")
    if str(head.get("rayStartParams", {}).get("num-cpus")) != "0":
        problems.append("the head advertises CPUs")
    gpu_groups = [group for group in cluster.get("workerGroupSpecs", [])
                  if any(gpu_count(c) > 0 for c in group["template"]["spec"]["containers"])]
    if not gpu_groups:
        problems.append("no worker group requests nvidia.com/gpu")
    if any(group.get("minReplicas", 0) != 0 for group in gpu_groups) or not cluster.get("enableInTreeAutoscaling"):
        problems.append("GPU workers do not scale from zero")
    for name, group in groups.items():
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        if container.get("image") != image:
            problems.append(f"{name}: image {container.get('image')} is not ray_cluster.yaml's {image}")
        if name == "head" and gpu_count(container) > 0:
            problems.append("the head requests GPUs")
        account = accounts.get(pod.get("serviceAccountName"), {})
        if "eks.amazonaws.com/role-arn" not in account.get("metadata", {}).get("annotations", {}):
            problems.append(f"{name}: no service account with an IAM role (IRSA) for S3")
        sources = container.get("envFrom", [])
        maps = [config_maps.get(source["configMapRef"]["name"], {}) for source in sources if "configMapRef" in source]
        if not any("MLFLOW_TRACKING_URI" in data for data in maps):
            problems.append(f"{name}: MLFLOW_TRACKING_URI does not come from a ConfigMap")
        if not any("secretRef" in source for source in sources):
            problems.append(f"{name}: the MLflow credentials do not come from a Secret")
        if any(var["name"].startswith("MLFLOW_TRACKING_") and "value" in var for var in container.get("env", [])):
            problems.append(f"{name}: an MLflow setting is written in the manifest")
        mounts = {mount["name"] for mount in container.get("volumeMounts", []) if mount["mountPath"] == "/dev/shm"}
        shm = [volume["emptyDir"] for volume in pod.get("volumes", [])
               if volume["name"] in mounts and volume.get("emptyDir", {}).get("medium") == "Memory"]
        store = group.get("rayStartParams", {}).get("object-store-memory")
        if not shm or "sizeLimit" not in shm[0]:
            problems.append(f"{name}: /dev/shm is not a sized memory-backed emptyDir")
        elif store is None or k8s_quantity(shm[0]["sizeLimit"]) < int(store) + GiB:
            problems.append(f"{name}: /dev/shm does not hold the object store with 1 GiB to spare")
    return problems


# --- the real files ----------------------------------------------------------------------------------------------

def test_ray_accepts_the_cluster_config():
    assert ray_schema_problems(load_cluster()) == []


def test_head_coordinates_and_trains_nothing():
    config = load_cluster()
    assert head_problems(config) == []
    assert dashboard_problems(config) == []


def test_gpu_and_cpu_workers_scale_from_zero():
    config = load_cluster()
    assert gpu_worker_problems(config) == []
    assert cpu_worker_problems(config) == []


def test_every_image_is_pinned_to_the_project_version():
    assert image_problems(cluster_images(load_cluster()), project_version()) == []


def test_nodes_get_s3_through_instance_profiles_and_no_keys_anywhere():
    config = load_cluster()
    assert credential_problems(config, CLUSTER_YAML.read_text()) == []
    for path in (DOCKERFILE, RAYJOB_YAML):
        assert not AWS_KEY_ID.search(path.read_text()) and not SECRET_NAMES.search(path.read_text()), path


def test_containers_get_tracking_uri_region_and_token():
    assert environment_problems(load_cluster()) == []


def test_shared_memory_holds_the_object_store():
    assert shared_memory_problems(load_cluster()) == []


def test_dockerfile_pins_its_base_and_installs_with_constraints():
    image = load_cluster()["docker"]["image"]
    problems = dockerfile_problems(DOCKERFILE.read_text(), constraint_pins(), constraints_python(), image_tag(image))
    assert problems == []
    assert image in DOCKERFILE.read_text(), "the build command in the Dockerfile tags another image"


def test_rayjob_runs_train_on_the_same_image():
    assert rayjob_problems(load_rayjob_docs(), load_cluster()["docker"]["image"]) == []


# --- broken copies: each check rejects what it is there to reject -----------------------------------------------

def _set(path: str, value):
    """A mutation that sets ``value`` at a dotted ``path`` (list indices allowed)."""
    def mutate(tree):
        *parents, last = path.split(".")
        for key in parents:
            tree = tree[int(key)] if isinstance(tree, list) else tree[key]
        tree[int(last) if isinstance(tree, list) else last] = value
    return mutate


def _delete(path: str):
    def mutate(tree):
        *parents, last = path.split(".")
        for key in parents:
            tree = tree[int(key)] if isinstance(tree, list) else tree[key]
        del tree[last]
    return mutate


CLUSTER_BREAKAGES = {
    "a key Ray does not know": (_set("available_node_types.gpu_train.min_worker", 0), ray_schema_problems),
    "fractional resources": (_set("available_node_types.head.resources", {"CPU": 0.5}), ray_schema_problems),
    "an unknown head type": (_set("head_node_type", "ray.head.default"), ray_schema_problems),
    "a head with CPUs": (_set("available_node_types.head.resources", {"CPU": 16}), head_problems),
    "a head with a GPU": (_set("available_node_types.head.resources", {"CPU": 0, "GPU": 1}), head_problems),
    "a local-only dashboard": (_set("head_start_ray_commands", ["ray start --head --dashboard-host=127.0.0.1"]),
                               dashboard_problems),
    "GPU workers kept warm": (_set("available_node_types.gpu_train.min_workers", 1), gpu_worker_problems),
    "GPU workers too small": (_set("available_node_types.gpu_train.resources", {"CPU": 8, "GPU": 1}),
                              gpu_worker_problems),
    "no GPU worker type": (_delete("available_node_types.gpu_train"), gpu_worker_problems),
    "on-demand synthesis": (_delete("available_node_types.cpu_synth.node_config.InstanceMarketOptions"),
                            cpu_worker_problems),
    "no instance profile": (_delete("available_node_types.cpu_synth.node_config.IamInstanceProfile"),
                            lambda c: credential_problems(c, "")),
    "keys in the provider": (_set("provider.aws_credentials", {}), lambda c: credential_problems(c, "")),
    "no tracking URI": (_set("docker.run_options", ["--env AWS_REGION=us-west-2", "--env RAY_AUTH_MODE=token"]),
                        environment_problems),
    "no auth token": (_delete("file_mounts"), environment_problems),
    "a password inline": (_set("docker.run_options", [
        "--env AWS_REGION=us-west-2", "--env MLFLOW_TRACKING_URI=http://mlflow:5000", "--env RAY_AUTH_MODE=token",
        "--env MLFLOW_TRACKING_PASSWORD=x", "--env-file ~/.cpl-mlflow.env"]), environment_problems),
    "/dev/shm smaller than the store": (_set("available_node_types.gpu_train.docker.worker_run_options",
                                             ["--shm-size=32g"]), shared_memory_problems),
    "default object store": (_set("worker_start_ray_commands", ["ray start --address=$RAY_HEAD_IP:6379"]),
                             shared_memory_problems),
}


@pytest.mark.parametrize("breakage", CLUSTER_BREAKAGES, ids=list(CLUSTER_BREAKAGES))
def test_cluster_checks_reject_a_broken_copy(breakage):
    mutate, check = CLUSTER_BREAKAGES[breakage]
    config = load_cluster()
    mutate(config)
    assert check(config), f"{breakage}: not caught"


@pytest.mark.parametrize("image", [
    "<account>.dkr.ecr.us-west-2.amazonaws.com/cpl-restore-node:latest",
    "<account>.dkr.ecr.us-west-2.amazonaws.com/cpl-restore-node",
    "<account>.dkr.ecr.us-west-2.amazonaws.com/cpl-restore-node:9.9.9-cu130",
    "localhost:5000/cpl-restore-node",
])
def test_image_check_rejects_unpinned_or_foreign_tags(image):
    assert image_problems([image], project_version())


def test_key_check_finds_a_key_in_the_text():
    fake_key = "AKIA" + "Q" * 16
    assert credential_problems(load_cluster(), f"aws_key: {fake_key}")
    assert credential_problems(load_cluster(), "aws_secret_access_key: x")


DOCKERFILE_BREAKAGES = {
    "a floating base": ("FROM python:3.11.17-slim-bookworm", "FROM python:3.11-slim"),
    "latest": ("FROM python:3.11.17-slim-bookworm", "FROM python:latest"),
    "another Python": ("FROM python:3.11.17-slim-bookworm", "FROM python:3.12.9-slim-bookworm"),
    "no constraints": ('pip install -c constraints.txt ".[train]"', 'pip install ".[train]"'),
    "a torch pin of its own": ('".[train]"', '".[train]" torch==2.12.0'),
    "another CUDA": ('cuda>=13.0', 'cuda>=12.8'),
    "root": ("USER 1000:1000", "USER root"),
}


@pytest.mark.parametrize("breakage", DOCKERFILE_BREAKAGES, ids=list(DOCKERFILE_BREAKAGES))
def test_dockerfile_check_rejects_a_broken_copy(breakage):
    old, new = DOCKERFILE_BREAKAGES[breakage]
    text = DOCKERFILE.read_text()
    assert old in text, f"{breakage}: the Dockerfile changed; update this test"
    tag = image_tag(load_cluster()["docker"]["image"])
    assert dockerfile_problems(text.replace(old, new), constraint_pins(), constraints_python(), tag)


def _rayjob_spec(docs: list[dict]) -> dict:
    return next(doc for doc in docs if doc["kind"] == "RayJob")["spec"]


def _gpu_group(docs: list[dict]) -> dict:
    return next(group for group in _rayjob_spec(docs)["rayClusterSpec"]["workerGroupSpecs"]
                if group["groupName"] == "gpu-train")


def _head_container(docs: list[dict]) -> dict:
    return _rayjob_spec(docs)["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


RAYJOB_BREAKAGES = {
    "another entrypoint": lambda docs: _rayjob_spec(docs).update(entrypoint="python -m pipelines.evaluate"),
    "another image": lambda docs: _head_container(docs).update(image="rayproject/ray:2.60.0"),
    "a GPU on the head": lambda docs: _head_container(docs)["resources"]["limits"].update({"nvidia.com/gpu": "1"}),
    "no GPU request": lambda docs: _gpu_group(docs)["template"]["spec"]["containers"][0].update(resources={}),
    "GPUs kept warm": lambda docs: _gpu_group(docs).update(minReplicas=1),
    "no service account": lambda docs: _gpu_group(docs)["template"]["spec"].pop("serviceAccountName"),
    "a password in env": lambda docs: _head_container(docs)["env"].append(
        {"name": "MLFLOW_TRACKING_PASSWORD", "value": "x"}),
    "disk-backed /dev/shm": lambda docs: _gpu_group(docs)["template"]["spec"]["volumes"][0].update(emptyDir={}),
    "a Secret in the file": lambda docs: docs.append({"kind": "Secret", "metadata": {"name": "x"}}),
}


@pytest.mark.parametrize("breakage", RAYJOB_BREAKAGES, ids=list(RAYJOB_BREAKAGES))
def test_rayjob_check_rejects_a_broken_copy(breakage):
    docs = load_rayjob_docs()
    RAYJOB_BREAKAGES[breakage](docs)
    assert rayjob_problems(docs, load_cluster()["docker"]["image"]), f"{breakage}: not caught"
