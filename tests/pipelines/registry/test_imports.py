"""Importing published weights (``import_weights.py``): PromptIR's Lightning checkpoint and CPLIR's BasicSR file,
built from ``authors_network`` (the authors' layout, written independently of ``cpl_model``), mapped onto our
network and registered; the registered version computes what the authors' network computes. Files that do not
fit are refused in one line naming the file and the first key at fault.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

import cpl_model
from pipelines import import_weights
from pipelines.core import references, storage, tracking
from pipelines.registry import imports
from pipelines.registry.config import ImportConfig

from ..conftest import REPO_ROOT, unique
from .authors_network import promptir, sparse_promptir

# Small widths for the forward passes (the mapping reads them from the shapes); prompt fusion widths
# 2*8+8, 4*8+16 and 8*8+24 are divisible by heads[2].
SMALL = {"dim": 8, "num_blocks": (1, 2, 1, 2), "num_refinement_blocks": 1, "heads": (1, 2, 2, 4),
         "prompt_dims": (8, 16, 24), "prompt_sizes": (8, 4, 4), "prompt_len": 3}
TOLERANCE = 1e-5


def authors(make, seed: int, **sizes):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make(**{**SMALL, **sizes}).eval()


def lightning_checkpoint(network) -> dict:
    """What PromptIR's training saves: the LightningModule's state dict (its network as ``net``), and more."""
    return {"epoch": 119, "global_step": 534120, "pytorch-lightning_version": "2.0.0",
            "state_dict": {f"net.{key}": value for key, value in network.state_dict().items()},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}], "lr_schedulers": []}


def basicsr_checkpoint(params, params_ema=None) -> dict:
    """What BasicSR's ``save_network`` writes: the network under ``params`` (and its EMA under ``params_ema``)."""
    saved = {"params": params.state_dict()}
    if params_ema is not None:
        saved["params_ema"] = params_ema.state_dict()
    return saved


def image(seed: int = 0, height: int = 32, width: int = 48) -> torch.Tensor:
    return torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(seed))


def imported(fmt: str, payload: dict, param_key: str = "auto"):
    """Our network from ``payload`` as the import maps it (no registry), and the layout it was found in."""
    config = ImportConfig(format=fmt, checkpoint="mem.ckpt", param_key=param_key)
    state, layout = imports.authors_state(payload, config)
    model_config = imports.infer_config(state, imports.SOURCES[fmt].prompt, layout)
    mapped, dropped = imports.map_state(state, model_config, layout)
    return imports.build_model(model_config, mapped), layout, dropped


# --- the mapping ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["promptir", "cplir"])
def test_the_released_networks_map_onto_the_full_preset_key_for_key(fmt):
    """At full size, on the meta device (shapes only): every tensor has its place, one to one."""
    with torch.device("meta"):
        network = promptir() if fmt == "promptir" else sparse_promptir()
    payload = lightning_checkpoint(network) if fmt == "promptir" else basicsr_checkpoint(network)
    state, layout = imports.authors_state(payload, ImportConfig(format=fmt, checkpoint="mem.ckpt"))
    config = imports.infer_config(state, imports.SOURCES[fmt].prompt, layout)
    assert config == cpl_model.preset("full", prompt=imports.SOURCES[fmt].prompt)
    mapped, dropped = imports.map_state(state, config, layout)
    ours = sum(tensor.numel() for tensor in mapped.values())
    assert ours == 35_376_967  # SparsePromptIR's count, and our full network's
    if fmt == "promptir":  # the six unused convolutions, and only they, are dropped
        assert sorted(dropped) == sorted(imports.UNUSED)
        assert sum(p.numel() for p in network.parameters()) == ours + sum(dropped.values()) == 35_592_263
    else:
        assert dropped == {} and sum(p.numel() for p in network.parameters()) == ours
    names = {imports.authors_key(key) for key in mapped}
    assert len(names) == len(mapped) and names | set(dropped) == set(state)


@pytest.mark.parametrize("fmt", ["promptir", "cplir"])
@pytest.mark.parametrize("sizes", [{}, {"dim": 16, "heads": (1, 1, 4, 2), "num_blocks": (2, 1, 1, 1),
                                        "prompt_sizes": (4, 8, 2), "prompt_len": 5}], ids=["small", "other"])
def test_the_mapped_network_computes_what_the_authors_network_does(fmt, sizes):
    network = authors(promptir if fmt == "promptir" else sparse_promptir, seed=1, **sizes)
    payload = lightning_checkpoint(network) if fmt == "promptir" else basicsr_checkpoint(network)
    model, _, _ = imported(fmt, payload)
    x = image()
    with torch.inference_mode():
        expected, got = network(x), model(x)
    assert (got - expected).abs().max().item() < TOLERANCE
    assert model.config.prompt == ("dense" if fmt == "promptir" else "sparse")


def test_cplir_prefers_params_ema_unless_told_otherwise():
    trained, averaged = authors(sparse_promptir, seed=1), authors(sparse_promptir, seed=2)
    payload = basicsr_checkpoint(trained, averaged)
    x = image()
    with torch.inference_mode():
        for key, network in (("auto", averaged), ("params_ema", averaged), ("params", trained)):
            model, layout, _ = imported("cplir", payload, key)
            assert layout.entry == ("params_ema" if key == "auto" else key)
            assert (model(x) - network(x)).abs().max().item() < TOLERANCE


def test_a_data_parallel_prefix_in_a_basicsr_file_is_taken_off():
    network = authors(sparse_promptir, seed=1)
    payload = {"params": {f"module.{key}": value for key, value in network.state_dict().items()}}
    model, layout, _ = imported("cplir", payload)
    assert layout.prefix == "module."
    with torch.inference_mode():
        assert (model(image()) - network(image())).abs().max().item() < TOLERANCE


def test_the_model_card_names_the_source_the_license_and_every_mapped_module():
    model, layout, dropped = imported("promptir", lightning_checkpoint(authors(promptir, seed=1)))
    config = ImportConfig(format="promptir", checkpoint="ckpt/model.ckpt")
    card = imports.model_card(model, config, layout, "ab" * 32, dropped)
    assert "`ckpt/model.ckpt`" in card and "ab" * 32 in card and "https://github.com/va1shn9v/PromptIR" in card
    assert "Academic Public License" in card and "commercial use only with the authors' permission" in card
    assert "| `prompt_sites.0.generator.bank` | `net.prompt3.prompt_param` |" in card
    assert all(f"`net.{key}`" in card for key in imports.UNUSED)

    network = authors(sparse_promptir, seed=1)
    model, layout, dropped = imported("cplir", basicsr_checkpoint(network, network))
    card = imports.model_card(model, ImportConfig(format="cplir", checkpoint="CPLIR.pth"), layout, "cd" * 32, dropped)
    assert "entry `params_ema`" in card and "https://github.com/Aitical/CPLIR" in card
    assert "no LICENSE file" in card and "top-1 routing" in card and "**Dropped:** nothing" in card
    assert "| `prompt_sites.2.fuse` | `noise_level1` |" in card


# --- refusals: one line naming the file and the key ------------------------------------------------------

class Hyperparameters:
    """Stands for any pickled object in a checkpoint: weights-only loading refuses to rebuild it."""

    def __init__(self) -> None:
        self.lr = 2e-4


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def local_tracking(monkeypatch, tmp_path) -> str:
    """A local tracking store the refused imports never get to write in."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _set(key: str, tensor: torch.Tensor):
    return lambda state: state.update({key: tensor})


# How a PromptIR file is spoiled (a change to its state_dict), and what the refusal says after the file name.
REFUSALS = {
    "wrong-shape": (_set("net.decoder_level2.0.attn.qkv.weight", torch.zeros(48, 15, 1, 1)),
                    "key net.decoder_level2.0.attn.qkv.weight has shape (48, 15, 1, 1), expected (48, 16, 1, 1)"),
    "bank-without-its-batch-axis": (_set("net.prompt1.prompt_param", torch.zeros(3, 8, 8, 8)),
                                    ("key net.prompt1.prompt_param has shape (3, 8, 8, 8), "
                                     "expected (1, components, channels, size, size)")),
    "missing": (lambda state: state.pop("net.noise_level2.ffn.dwconv.weight"),
                "missing key net.noise_level2.ffn.dwconv.weight"),
    "unexpected": (_set("net.var_conv.0.weight", torch.zeros(3)), "unexpected key net.var_conv.0.weight"),
    "outside-the-network": (_set("loss_fn.weight", torch.zeros(3)), "unexpected key loss_fn.weight"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_promptir_file_that_does_not_fit_is_refused_naming_the_first_misfit(case, tmp_path, local_tracking,
                                                                             capsys):
    change, message = REFUSALS[case]
    payload = lightning_checkpoint(authors(promptir, seed=1))
    change(payload["state_dict"])
    path = tmp_path / "model.ckpt"
    torch.save(payload, path)
    assert import_weights.main(["--format", "promptir", "--checkpoint", str(path)]) == 2
    assert one_error_line(capsys) == f"error: {path}: {message}"


def test_a_basicsr_file_given_as_promptir_is_refused_with_a_hint(tmp_path, local_tracking, capsys):
    path = tmp_path / "net_g.pth"
    torch.save(basicsr_checkpoint(authors(sparse_promptir, seed=1)), path)
    assert import_weights.main(["--format", "promptir", "--checkpoint", str(path)]) == 2
    assert one_error_line(capsys) == (f"error: {path}: not a PyTorch Lightning checkpoint: no 'state_dict' entry "
                                      "(found 'params'); is it --format cplir?")


@pytest.mark.parametrize(("case", "message"), [
    ("unexpected", "params_ema: unexpected key prompt4.prompt_param"),
    ("missing", "params_ema: missing key refinement.0.norm2.body.bias"),
    ("no-params", ("not a BasicSR checkpoint: no 'params_ema' or 'params' entry (found 'epoch', 'global_step', "
                   "'pytorch-lightning_version', 'state_dict', ...); is it --format promptir?")),
])
def test_a_cplir_file_that_does_not_fit_is_refused_naming_the_entry_and_key(case, message, tmp_path,
                                                                           local_tracking, capsys):
    network = authors(sparse_promptir, seed=1)
    payload = basicsr_checkpoint(network, network)
    if case == "unexpected":
        payload["params_ema"]["prompt4.prompt_param"] = torch.zeros(1, 3, 8, 8, 8)
    elif case == "missing":
        del payload["params_ema"]["refinement.0.norm2.body.bias"]
    else:
        payload = lightning_checkpoint(network)
    path = tmp_path / "net_g.pth"
    torch.save(payload, path)
    assert import_weights.main(["--format", "cplir", "--checkpoint", str(path)]) == 2
    assert one_error_line(capsys) == f"error: {path}: {message}"


def test_files_that_are_not_weights_only_checkpoints_are_refused_in_one_line(tmp_path, local_tracking, capsys):
    text = tmp_path / "model.ckpt"
    text.write_text("not a checkpoint\n")
    assert import_weights.main(["--format", "promptir", "--checkpoint", str(text)]) == 2
    assert one_error_line(capsys).startswith(f"error: cannot load {text} as a weights-only torch file: ")

    pickled = tmp_path / "pickled.ckpt"
    torch.save({**lightning_checkpoint(authors(promptir, seed=1)), "hyper_parameters": Hyperparameters()}, pickled)
    assert import_weights.main(["--format", "promptir", "--checkpoint", str(pickled)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot load {pickled} as a weights-only torch file: it pickles ")
    assert line.endswith(".Hyperparameters, code that weights-only loading refuses to run")

    assert import_weights.main(["--format", "cplir", "--checkpoint", str(tmp_path / "nothing.pth")]) == 2
    assert one_error_line(capsys) == f"error: {tmp_path / 'nothing.pth'}: no such file"


# --- registered, against a real MLflow server ----------------------------------------------------------------

def import_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "pipelines/import_weights.py", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["promptir", "cplir"])
def test_an_imported_version_restores_as_the_authors_network_does(fmt, cli_env, mlflow_server, bucket, tmp_path):
    """PromptIR's file from s3://, CPLIR's from a local path; each registered, loaded back and compared."""
    if fmt == "promptir":
        network = authors(promptir, seed=3)
        payload = lightning_checkpoint(network)
    else:
        network = authors(sparse_promptir, seed=4)
        payload = basicsr_checkpoint(authors(sparse_promptir, seed=5), network)  # the EMA is what gets imported
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    checkpoint = str(path)
    if fmt == "promptir":
        checkpoint = f"s3://{bucket}/published/model.ckpt"
        storage.write_bytes(checkpoint, path.read_bytes())
    name = unique(f"imported-{fmt}")
    env = {**cli_env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true"}

    result = import_cli(env, "--format", fmt, "--checkpoint", checkpoint, "--name", name)
    assert result.returncode == 0, result.stderr
    assert f"models:/{name}/1 (version 1)" in result.stdout and "license:" in result.stdout

    ref = references.resolve(f"models:/{name}/1", mlflow_server)
    model = references.load(ref, mlflow_server)
    x = image(seed=7)
    with torch.inference_mode():
        expected = network(x)
        difference = (model(x) - expected).abs().max().item()
    assert difference < TOLERANCE, difference
    assert model.config.prompt == imports.SOURCES[fmt].prompt

    client = MlflowClient(mlflow_server)
    version = client.get_model_version(name, "1")
    assert checkpoint in version.description and imports.SOURCES[fmt].repository in version.description
    tags = client.get_run(version.run_id).data.tags
    assert tags[tracking.MODEL_VERSION_TAG] == "1" and tags["cpl.import.source"] == checkpoint
    assert {"config.yaml", "model_card.md"} <= {item.path for item in client.list_artifacts(version.run_id)}
    if fmt == "cplir":  # the pyfunc as served: the same numbers, clipped to [0, 1] as restore() clips them
        import mlflow

        mlflow.set_tracking_uri(mlflow_server)
        served = mlflow.pyfunc.load_model(f"models:/{name}/1").predict(x.numpy())
        assert np.abs(served - expected.clamp(0, 1).numpy()).max() < TOLERANCE


def test_the_registered_file_is_our_checkpoint_of_the_mapped_network(tmp_path):
    """What ``log_and_register`` saves round-trips through ``cpl_model.load_checkpoint``."""
    model, _, _ = imported("promptir", lightning_checkpoint(authors(promptir, seed=1)))
    path = cpl_model.save_checkpoint(model, tmp_path / cpl_model.WEIGHTS)
    loaded, _ = cpl_model.load_checkpoint(Path(path))
    x = image()
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
