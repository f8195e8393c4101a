"""Shared fixtures for the pipelines tests: a real S3-API server (moto), a local Ray, real photo folders.

A Ray job costs seconds on a 2-core machine (starting Ray about 10 more), so the datasets that several tests
read are built once per session (``local_dataset``, ``s3_dataset``). Tests never modify them: a test that
tampers with or adds to a dataset works on a copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from degradation_synth.samples import sample_photo_paths

REPO_ROOT = Path(__file__).resolve().parents[2]

# The configuration of the shared datasets: cheap recipes, one 64x64 crop per image, large val/test
# fractions so that every split gets sources, and two rows per shard so that each split has several shards.
SYNTHESIS = {"seed": 3, "recipes": "noise25,haze", "patch": 64, "crops_per_image": 1,
             "val_fraction": 0.3, "test_fraction": 0.3}
ROWS_PER_SHARD = 2
SOURCE_COUNT = 12
SOURCE_SIDE = 160  # long side of every source image, in pixels


# --- small shared helpers ------------------------------------------------------------------------------

def unique(prefix: str) -> str:
    """A fresh name (of a run, a registered model, a bucket prefix...) that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def train_config(*overrides: str):
    """The default ``TrainConfig`` with ``--set``-style overrides, validated as the CLI does."""
    from pipelines.core.config import load_config
    from pipelines.training.config import TrainConfig

    return load_config(TrainConfig, None, list(overrides))


def latest(dataset: str) -> str:
    """The version a dataset's LATEST names."""
    from pipelines.core import storage
    from pipelines.data import versions

    return storage.read_bytes(storage.join(dataset, versions.LATEST)).decode().strip()


# --- source images ---------------------------------------------------------------------------------

def photo_halves(count: int, side: int = SOURCE_SIDE) -> dict[str, np.ndarray]:
    """``count`` distinct real photos (BGR, as OpenCV writes them): halves of the sample photos, downscaled."""
    paths = sample_photo_paths()
    if not paths:
        pytest.fail("no sample photos: install the samples extra (pip install -e '.[samples]')")
    images: dict[str, np.ndarray] = {}
    for name, path in sorted(paths.items()):
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        height, width = photo.shape[:2]
        if width >= height:
            halves = (photo[:, :width // 2], photo[:, width // 2:])
        else:
            halves = (photo[:height // 2], photo[height // 2:])
        for index, half in enumerate(halves):
            scale = side / max(half.shape[:2])
            images[f"{name}-{index}"] = cv2.resize(half, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if len(images) == count:
                return images
    if len(images) < count:
        pytest.fail(f"only {len(images)} sample photo halves available, {count} needed")
    return images


def write_photo_folder(folder: Path, count: int = SOURCE_COUNT) -> list[str]:
    """Write ``count`` real photos into ``folder`` (JPEG and PNG alternately); return their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, (name, image) in enumerate(photo_halves(count).items()):
        file_name = f"{name}.{'jpg' if index % 2 else 'png'}"
        assert cv2.imwrite(str(folder / file_name), image)
        names.append(file_name)
    return sorted(names)


TRANSFORM_PATCH = 64  # patch side of the transform and shard tests


def transform_config(**changes: Any):
    """The synthesis config of the transform and shard tests: two crops per source, large val/test splits."""
    from pipelines.data import synthesis

    return synthesis.SynthesisConfig(**{"seed": 1, "recipes": "noise25,haze", "patch": TRANSFORM_PATCH,
                                        "crops_per_image": 2, "val_fraction": 0.3, "test_fraction": 0.3, **changes})


def source_batch(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Source rows of ``files`` (id -> encoded bytes) as the numpy batch Ray Data hands to ``map_batches``."""
    import hashlib

    ids = list(files)
    return {"id": np.array(ids, dtype=object),
            "sha256": np.array([hashlib.sha256(files[i]).hexdigest() for i in ids], dtype=object),
            "bytes": np.array([files[i] for i in ids], dtype=object)}


@pytest.fixture
def few_photos(tmp_path) -> Path:
    """Four real photos: enough for every property, cheap for a 2-CPU Ray."""
    folder = tmp_path / "photos"
    write_photo_folder(folder, count=4)
    return folder


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Four real photos as encoded files (PNG and JPEG), by source id."""
    images = photo_halves(4)
    return {f"dir/{name}.{'png' if i % 2 else 'jpg'}": cv2.imencode(f".{'png' if i % 2 else 'jpg'}", image)[1].tobytes()
            for i, (name, image) in enumerate(images.items())}


@dataclass(frozen=True)
class BadInputs:
    """What a folder written by ``write_bad_inputs`` must produce in a manifest."""

    skipped: dict[str, list[str]]  # reason -> source ids
    converted: dict[str, list[str]]  # conversion -> source ids
    ignored: list[str]  # files that are not images by name: neither sources nor skipped


def write_bad_inputs(folder: Path, *, patch: int, max_pixels: int) -> BadInputs:
    """Add one file of every bad-input class to ``folder`` (real photo content where an image is needed).

    The images to be converted are at least ``patch`` on each side and below ``max_pixels``; ``huge.png``
    is above ``max_pixels`` and ``tiny.png`` below ``patch``.
    """
    from pipelines.data import sources

    folder.mkdir(parents=True, exist_ok=True)
    photo = next(iter(photo_halves(1, side=3 * patch).values()))  # BGR, long side 3 * patch
    crop = np.ascontiguousarray(photo[:patch + 8, :patch + 16])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not an image, whatever the name says\n" * 20)
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    png = cv2.imencode(".png", photo)[1].tobytes()
    (folder / "truncated.png").write_bytes(png[:len(png) // 2])
    cv2.imwrite(str(folder / "tiny.png"), crop[:patch // 2, :patch // 2])
    side = int(np.sqrt(max_pixels)) + 8
    cv2.imwrite(str(folder / "huge.png"), cv2.resize(photo, (side, side)))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([crop, np.full(crop.shape[:2], 200, np.uint8)]))
    cv2.imwrite(str(folder / "deep.png"), crop.astype(np.uint16) * 257)
    (folder / "README.txt").write_text("a non-image file: not a source at all\n")
    return BadInputs(
        skipped={sources.EMPTY: ["empty.jpg"], sources.UNDECODABLE: ["notes.jpg", "truncated.jpg", "truncated.png"],
                 sources.TOO_SMALL: ["tiny.png"], sources.TOO_LARGE: ["huge.png"]},
        converted={"grayscale": ["gray.png"], "rgba": ["rgba.png"], "16-bit": ["deep.png"]},
        ignored=["README.txt"],
    )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """A folder of ``SOURCE_COUNT`` real photos, ``SOURCE_SIDE`` px on the long side."""
    folder = tmp_path / "photos"
    write_photo_folder(folder)
    return folder


def run_together(count: int, work) -> list:
    """Run ``work(i)`` for i in range(count) on ``count`` threads released at the same moment.

    Returns each call's result, or the exception it raised.
    """
    barrier = threading.Barrier(count)

    def call(index: int):
        barrier.wait()
        try:
            return work(index)
        except Exception as err:  # noqa: BLE001 - the caller inspects it
            return err

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


# --- S3 (moto) -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3-API server on 127.0.0.1 for the whole session, with the AWS environment pointing at it.

    The environment is set before Ray starts (``ray_cluster`` depends on this), so Ray workers inherit it.
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        try:
            yield endpoint
        finally:
            server.stop()


def new_bucket() -> str:
    from pipelines.core import storage

    name = f"bucket-{uuid.uuid4().hex[:8]}"
    storage.s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the session's S3 server."""
    return new_bucket()


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """An empty storage root: a local folder or a prefix in a fresh bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("s3_endpoint")
    return f"s3://{new_bucket()}/root"


# --- Ray -------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """A local 2-CPU Ray instance on loopback, started after the S3 environment is set; no progress bars."""
    import ray
    from ray.data import DataContext

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind every Ray listener to 127.0.0.1
        patch.delenv("RAY_ADDRESS", raising=False)
        # Workers import ``pipelines`` by name; make that work whatever the install looks like.
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
        # "local": a new instance, whatever cluster Ray's record on disk names (ray_nodes writes one).
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        # Ray Data logs every operator's metrics at DEBUG; a failing test's report would drown in them.
        data_logger = logging.getLogger("ray.data")
        level, data_logger.level = data_logger.level, logging.INFO
        try:
            yield
        finally:
            data_logger.setLevel(level)
            ray.shutdown()


# A worker node's CPUs: one training rank at scaling.cpus_per_worker=2, and one CPU left for its Ray Data tasks.
NODE_CPUS = 3


@dataclass
class RayNodes:
    """A Ray cluster on 127.0.0.1 (``ray.cluster_utils``: a raylet per node, as Ray's own tests run several
    nodes on one machine). Its head runs no work, as on our production cluster: tasks and training ranks go
    to the worker nodes. The test process does not join it; CLIs do, with ``env``."""

    cluster: Any
    env: dict[str, str]  # cli_environment() with RAY_ADDRESS naming this cluster

    @property
    def workers(self) -> list:
        return list(self.cluster.worker_nodes)

    def add_worker(self):
        return self.cluster.add_node(num_cpus=NODE_CPUS, node_ip_address="127.0.0.1")

    def kill(self, node) -> None:
        """SIGKILL the node's raylet and everything it started, as when its machine is lost."""
        self.cluster.remove_node(node, allow_graceful=False)


def ray_head(**head_args: Any):
    """A ``ray.cluster_utils.Cluster`` whose head, on 127.0.0.1, runs no work and serves a dashboard, as
    production's does (Ray Train's controller queries it). It becomes the cluster that Ray's record of the
    machine's latest cluster (``ray_current_cluster``) names."""
    from ray.cluster_utils import Cluster

    return Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": free_port(), **head_args})


@pytest.fixture(scope="module")
def ray_nodes(s3_endpoint) -> RayNodes:
    """A head and two worker nodes (``RayNodes``), fresh for each test file; tests may kill and add nodes."""
    with pytest.MonkeyPatch.context() as patch:
        environment = cli_environment()
        for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH"):  # inherited by every node's processes
            patch.setenv(key, environment[key])
        # A lost node is declared dead within ten seconds, not Ray's default half minute; not less, for nodes
        # slowed by a busy machine.
        cluster = ray_head(_system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 10})
        nodes = RayNodes(cluster, {**environment, "RAY_ADDRESS": cluster.address})
        for _ in range(2):
            nodes.add_worker()
        try:
            yield nodes
        finally:
            cluster.shutdown()


@contextlib.contextmanager
def another_ray_instance():
    """A second Ray instance on this machine (``ray_head`` alone), which Ray's record now names."""
    other = ray_head()
    try:
        yield other
    finally:
        other.shutdown()


def synthesis_config(**changes: Any):
    from pipelines.data import synthesis

    return synthesis.SynthesisConfig(**{**SYNTHESIS, **changes})


def run_job(source: str, out: str, name: str, rows_per_shard: int = ROWS_PER_SHARD, **changes: Any) -> dict:
    """``job.synthesize`` as the CLI calls it (the resolved config recorded); returns the manifest."""
    from pipelines.data import job
    from pipelines.data.job import SynthesizeConfig

    config = SynthesizeConfig(source=source, output=job.OutputConfig(uri=out, name=name,
                                                                          rows_per_shard=rows_per_shard),
                              synthesis=synthesis_config(**changes))
    return job.synthesize(config.source, config.output, config.synthesis, config.model_dump(mode="json"))


@pytest.fixture(scope="module")
def local_train_rows(local_dataset):
    """The train split of ``local_dataset``: its column names and every row."""
    from pipelines.data import versions

    dataset = versions.open_dataset(local_dataset.uri, "train")
    return SimpleNamespace(columns=dataset.schema().names, rows=dataset.take_all())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (hidden ones included) with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class Published:
    """A dataset published by a session fixture. Read it; copy it before changing it."""

    source: str  # the clean images it was made from
    uri: str  # <out>/<name>
    manifest: dict


@pytest.fixture(scope="session")
def local_dataset(ray_cluster, tmp_path_factory) -> Published:
    """``SOURCE_COUNT`` real photos in a local folder, synthesized with ``SYNTHESIS`` into a local dataset."""
    base = tmp_path_factory.mktemp("local-dataset")
    write_photo_folder(base / "photos")
    manifest = run_job(str(base / "photos"), str(base / "datasets"), "pairs")
    return Published(str(base / "photos"), str(base / "datasets" / "pairs"), manifest)


@pytest.fixture(scope="session")
def s3_dataset(ray_cluster, tmp_path_factory) -> Published:
    """The same photos packed into an S3 table, synthesized with the same config into an S3 dataset."""
    from pipelines.data import sources

    folder = tmp_path_factory.mktemp("s3-dataset") / "photos"
    write_photo_folder(folder)
    name = new_bucket()
    sources.pack(str(folder), f"s3://{name}/packed", rows_per_file=5)
    manifest = run_job(f"s3://{name}/packed", f"s3://{name}/datasets", "pairs")
    return Published(f"s3://{name}/packed", f"s3://{name}/datasets/pairs", manifest)


def shard_checksums(manifest: dict) -> dict[str, str]:
    return {shard["path"]: shard["sha256"] for shard in manifest["shards"]}


# --- the CLI ---------------------------------------------------------------------------------------

def cli_environment() -> dict[str, str]:
    """The environment for a CLI subprocess: this process's, Ray on loopback, no Ray cluster address."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def cli_env(s3_endpoint) -> dict[str, str]:
    """``cli_environment()`` with the session's S3 server."""
    return cli_environment()


@pytest.fixture
def run_cli(cli_env):
    """``run_cli(*args, timeout=...)``: ``python pipelines/synthesize.py ...`` from the repository root."""

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "pipelines/synthesize.py", *args], cwd=REPO_ROOT, env=cli_env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    return run


# --- MLflow ----------------------------------------------------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(s3_endpoint, tmp_path_factory) -> str:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, artifacts proxied to the S3 server); its URL."""
    import time
    import urllib.request

    base = tmp_path_factory.mktemp("mlflow")
    artifacts = new_bucket()
    port = free_port()
    # No job runner: the GenAI features it serves are unused here, and it is eight more processes.
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint, "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(base / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}", "--artifacts-destination", f"s3://{artifacts}/mlflow"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(base / 'server.log').read_text()[-2000:]}") \
                        from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()


# --- models in a registry ----------------------------------------------------------------------------
# Models of known quality without a training job: a tiny network trained for a few seconds to undo a
# darkening (clean x 0.5), then its output layer scaled. Scale 0 is the identity (exactly the input),
# 0.5 and 1 restore increasingly well, -1 is worse than the input. On the dim benchmark below, PSNR
# rises with the scale from 0 to 1 by several dB per step.

DIM_TASKS = {"dim": 0.5, "dimmer": 0.45}  # task folder -> brightness factor of the degraded input


def write_dim_benchmark(root: Path, count: int = 3, side: int = 64) -> Path:
    """A paired benchmark folder: ``<task>/input/<i>.png`` darkened from ``<task>/target/<i>.png``."""
    photos = list(photo_halves(count * len(DIM_TASKS), side).values())
    for t, (task, factor) in enumerate(DIM_TASKS.items()):
        for i in range(count):
            clean = photos[t * count + i]
            for kind, image in (("input", (clean * factor).astype(np.uint8)), ("target", clean)):
                (root / task / kind).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / task / kind / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="session")
def brightener() -> dict[str, Any]:
    """The state dict of a tiny network trained (about 10 s, seeded) to undo a x0.5 darkening."""
    import torch

    import cpl_model

    model = cpl_model.build_model("tiny", seed=0)
    torch.nn.init.zeros_(model.output.weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    photos = list(photo_halves(8, 96).values())
    rng = np.random.default_rng(0)
    for _ in range(40):
        crops = []
        for _ in range(4):
            photo = photos[int(rng.integers(len(photos)))]
            y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
            crops.append(photo[y:y + 32, x:x + 32])
        clean = cpl_model.to_tensor(crops)
        degraded = cpl_model.to_tensor((np.stack(crops) * 0.5).astype(np.uint8))
        loss = (model(degraded) - clean).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def scaled_model(state: dict[str, Any], scale: float):
    """The brightener with its output layer times ``scale`` (0: identity; 1: the trained model)."""
    import cpl_model

    model = cpl_model.build_model("tiny", seed=0)
    model.load_state_dict(state)
    model.output.weight.data.mul_(scale)
    return model.eval()


def register_model(tracking_uri: str, name: str, model) -> str:
    """Log ``model`` the way training does (pyfunc, card, grid) into a new run and register it; its version."""
    from mlflow import MlflowClient

    import cpl_model
    from pipelines.registry.registration import log_and_register
    from pipelines.training.config import TrainConfig
    from pipelines.training.model_card import model_card
    from pipelines.training.validation import image_grid

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("registry-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("registry-tests")
    run_id = client.create_run(experiment_id).info.run_id
    config = TrainConfig(tracking={"model_name": name})
    photo = list(photo_halves(1, 64).values())[0]
    validation = {"degraded": (photo[None] * 0.5).astype(np.uint8), "clean": photo[None], "task": ["dim"]}
    per_task = {"dim": {"input_psnr": 0.0, "psnr": 0.0, "input_ssim": 0.0, "ssim": 0.0}}
    example = cpl_model.to_tensor(validation["degraded"]).contiguous().numpy()
    _, version = log_and_register(model, run_id, tracking_uri, config=config.model_dump(mode="json"),
                                  card=model_card(config, "registry-test", "dim benchmark", per_task, 1),
                                  grid=image_grid(model, validation, 1), example=example, step=1, model_name=name)
    client.set_terminated(run_id)
    return version


BRIGHTENER_SCALES = (0.0, 0.5, 1.0, -1.0)


@pytest.fixture(scope="session")
def registered_brighteners(mlflow_server, brightener) -> dict[float, str]:
    """``models:/<base>/<version>`` of the brightener at each of ``BRIGHTENER_SCALES``, registered once."""
    base = f"brighteners-{uuid.uuid4().hex[:8]}"
    return {scale: f"models:/{base}/{register_model(mlflow_server, base, scaled_model(brightener, scale))}"
            for scale in BRIGHTENER_SCALES}


@pytest.fixture
def registered_model(mlflow_server, registered_brighteners):
    """``registered_model(*scales) -> (name, [versions])``: a fresh registered model holding copies of those
    brighteners, in that order (a copy is a registry entry, nothing is uploaded again)."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)

    def make(*scales: float, prefix: str = "model") -> tuple[str, list[str]]:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        client.create_registered_model(name)
        return name, [str(client.copy_model_version(registered_brighteners[scale], name).version) for scale in scales]

    return make


def save_model(folder: Path, state: dict, scale: float) -> Path:
    """A checkpoint folder holding ``model.pt``, as a Ray Train checkpoint does."""
    import cpl_model

    cpl_model.save_checkpoint(scaled_model(state, scale), folder / cpl_model.WEIGHTS)
    return folder


# --- promotion ---------------------------------------------------------------------------------------------

@pytest.fixture
def registry(registered_model):
    """``registry(*scales) -> (name, [versions])``: a fresh registered model holding those brighteners."""
    return lambda *scales: registered_model(*scales, prefix="promote")


@pytest.fixture(scope="module")
def dim_data(tmp_path_factory) -> str:
    """A paired benchmark folder of the dim tasks, on which the brighteners' quality is known."""
    return str(write_dim_benchmark(tmp_path_factory.mktemp("dim")))


@pytest.fixture
def tracked(monkeypatch, mlflow_server):
    """An MlflowClient for in-process promotions against the session's server, on one torch thread (two
    spin against each other on 2 cores shared with the MLflow and S3 servers)."""
    import torch
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MlflowClient(mlflow_server)
    torch.set_num_threads(threads)


def aliases(client, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def promotion_tags(client, name: str, version: str) -> dict[str, str]:
    """The ``cpl.promotion.*`` tags of a version, without their prefix."""
    from pipelines.registry import promotion

    found = client.get_model_version(name, version).tags
    return {key.removeprefix(promotion.TAG): value for key, value in found.items() if key.startswith(promotion.TAG)}


def quick_choice(data: str):
    """Benchmark ``data``, scored with one grid case (the promotion tests' setting)."""
    from pipelines.evaluation.config import BenchmarkChoice, EvalSettings

    return BenchmarkChoice(data=data, evaluation=EvalSettings(grid_cases=1))


def promote(name: str, version: str, data: str, tmp_path: Path, gate=None):
    """Propose and apply the promotion of ``name`` v``version`` in process (the gate's defaults unless ``gate``)."""
    from pipelines.registry import promotion
    from pipelines.registry.config import Gate

    decision = promotion.propose(f"models:/{name}/{version}", quick_choice(data), gate or Gate(),
                                 tmp_path / uuid.uuid4().hex)
    promotion.apply(decision, tmp_path / uuid.uuid4().hex)
    return decision


@pytest.fixture(scope="module")
def train_env(s3_endpoint, mlflow_server) -> dict[str, str]:
    return {**cli_environment(), "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
            "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0"}
