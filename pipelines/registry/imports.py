"""Published checkpoints in the registry: PromptIR's and CPLIR's weights mapped onto ``cpl_model``.

    imported = import_weights(config)     # read, map tensor by tensor, register; a DataError names a misfit

Both papers' networks are the PromptIR U-Net that ``cpl_model`` rebuilds; only the names differ
(``MODULES``, the one table of them), and one layout: a prompt bank is stored (1, N, C, S, S), ours is
(N, C, S, S).

- PromptIR (va1shn9v/PromptIR, ``net/model.py``): a PyTorch Lightning checkpoint whose ``state_dict``
  holds the network as ``net.*``. Its prompt mix (a softmax over all components) is our ``dense``
  variant. It also defines six 1x1 convolutions that its forward never calls (``UNUSED``): they are
  dropped and counted. Any other key that our network has no place for is refused.
- CPLIR (Aitical/CPLIR, ``SparsePromptIR``): a BasicSR file ``{"params": ..., "params_ema": ...}``. The
  same network less the unused convolutions, with the top-1 prompt mix of its Sparse Prompt Module:
  our ``sparse`` variant. Its ``num_expert`` (k) is not stored in the file; the released code's is 1.

The hyper-parameters are read from the shapes (``infer_config``), so any width maps; the released files
are the ``full`` preset. Then every tensor of our network must find its counterpart of the same shape,
and every tensor of the file must be used or be one of ``UNUSED``; the first that is not is named.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpl_model import CPLNet, ModelConfig
from cpl_model.checkpoint import load_weights_only

from ..core import console, provenance, storage, tracking
from ..core.errors import DataError
from .config import ImportConfig
from .registration import log_and_register

# Our module (a prefix of our state-dict keys) <- the authors' module, in our network's order. The prompt
# sites count in decoding order (latent, level 3, level 2); the authors number their prompts from level 2
# up, so site 0 is their prompt3. Inside a transformer block the names agree but for the norms (``NORMS``).
MODULES: tuple[tuple[str, str], ...] = (
    ("patch_embed", "patch_embed.proj"),
    ("encoder1", "encoder_level1"),
    ("down1.0", "down1_2.body.0"),
    ("encoder2", "encoder_level2"),
    ("down2.0", "down2_3.body.0"),
    ("encoder3", "encoder_level3"),
    ("down3.0", "down3_4.body.0"),
    ("latent", "latent"),
    ("prompt_sites.0.generator.bank", "prompt3.prompt_param"),
    ("prompt_sites.0.generator.router", "prompt3.linear_layer"),
    ("prompt_sites.0.generator.conv", "prompt3.conv3x3"),
    ("prompt_sites.0.fuse", "noise_level3"),
    ("prompt_sites.0.reduce", "reduce_noise_level3"),
    ("up3.0", "up4_3.body.0"),
    ("reduce3", "reduce_chan_level3"),
    ("decoder3", "decoder_level3"),
    ("prompt_sites.1.generator.bank", "prompt2.prompt_param"),
    ("prompt_sites.1.generator.router", "prompt2.linear_layer"),
    ("prompt_sites.1.generator.conv", "prompt2.conv3x3"),
    ("prompt_sites.1.fuse", "noise_level2"),
    ("prompt_sites.1.reduce", "reduce_noise_level2"),
    ("up2.0", "up3_2.body.0"),
    ("reduce2", "reduce_chan_level2"),
    ("decoder2", "decoder_level2"),
    ("prompt_sites.2.generator.bank", "prompt1.prompt_param"),
    ("prompt_sites.2.generator.router", "prompt1.linear_layer"),
    ("prompt_sites.2.generator.conv", "prompt1.conv3x3"),
    ("prompt_sites.2.fuse", "noise_level1"),
    ("prompt_sites.2.reduce", "reduce_noise_level1"),
    ("up1.0", "up2_1.body.0"),
    ("decoder1", "decoder_level1"),
    ("refinement", "refinement"),
    ("output", "output"),
)
# The authors' LayerNorm keeps its weight and bias in a ``body`` submodule (token-wise in PromptIR,
# channel-wise in CPLIR: the same function, the same names).
NORMS = {"norm1": "norm1.body", "norm2": "norm2.body"}
# The tensor the authors store with a leading batch axis of 1: (1, N, C, S, S) for our (N, C, S, S).
BANK = "prompt_param"
# PromptIR's constructor builds these 1x1 convolutions and its forward never calls them (CPLIR's
# SparsePromptIR comments them out; their sizes: docs/evaluation.md). Dropped wherever they appear, so a
# CPLIR model started from PromptIR's weights imports too; any other extra key is refused.
UNUSED = ("chnl_reduce1.weight", "chnl_reduce2.weight", "chnl_reduce3.weight",
          "reduce_noise_channel_1.weight", "reduce_noise_channel_2.weight", "reduce_noise_channel_3.weight")
# Both authors' constructors default to Restormer's expansion; the file's shapes confirm it block by block.
AUTHORS_FFN_EXPANSION = 2.66
EXAMPLE_SIDE = 64  # pixels: the input example logged with the pyfunc


@dataclass(frozen=True)
class Source:
    """A published checkpoint format: whose it is, under which terms, and what it becomes here."""

    label: str
    paper: str
    repository: str
    license: str
    prompt: str  # our prompt variant


SOURCES = {
    "promptir": Source(
        "PromptIR", "PromptIR: Prompting for All-in-One Blind Image Restoration (Potlapalli et al., NeurIPS 2023)",
        "https://github.com/va1shn9v/PromptIR",
        "the repository's LICENSE.md, an Academic Public License: free for non-commercial use (teaching and "
        "research at academic institutions and non-profit research organisations), modification and "
        "redistribution under the same license with credit to the authors; commercial use only with the "
        "authors' permission.", "dense"),
    "cplir": Source(
        "CPLIR", "Beyond Degradation Redundancy: Contrastive Prompt Learning for All-in-One Image Restoration "
        "(Wu et al., arXiv 2504.09973)", "https://github.com/Aitical/CPLIR",
        "none stated: the repository has no LICENSE file and its README names none, so the authors keep all "
        "rights; ask them before redistributing the weights or using them beyond research.", "sparse"),
}


@dataclass(frozen=True)
class KeyLayout:
    """Where the network's tensors sit in the file, to name a key as the file spells it."""

    uri: str
    entry: str  # the entry of the file that holds them: state_dict, params_ema, params
    prefix: str  # what every key carries there: "net." in a Lightning checkpoint

    def name(self, key: str) -> str:
        return self.prefix + key

    def error(self, message: str) -> DataError:
        """``message`` about the file, and about the BasicSR entry when there is a choice of them."""
        entry = "" if self.entry == "state_dict" else f"{self.entry}: "
        return DataError(f"{self.uri}: {entry}{message}")


@dataclass
class Imported:
    """What an import did: the checkpoint, what it became, and where it is registered."""

    source: str
    sha256: str
    format: str
    entry: str
    config: ModelConfig
    parameters: int
    dropped: dict[str, int]  # unused key -> its parameter count
    tracking_uri: str
    run_name: str
    run_id: str
    model_uri: str
    version: str | None

    def lines(self) -> list[str]:
        source = SOURCES[self.format]
        rows = [f"imported {source.label} weights from {self.source} ({self.entry}, sha256 {self.sha256[:12]})",
                f"  network:  {self.parameters:,} parameters, {self.config.prompt} prompts, dim {self.config.dim}"]
        if self.dropped:
            rows.append(f"  dropped:  {len(self.dropped)} tensors its forward never uses "
                        f"({sum(self.dropped.values()):,} parameters)")
        rows += [f"  model:    {self.model_uri}" + (f" (version {self.version})" if self.version else ""),
                 f"  run:      {self.run_name} ({self.run_id}) at {self.tracking_uri}",
                 f"  license:  {source.license}"]
        return rows


def run(config: ImportConfig) -> int:
    """What ``import_weights.py`` runs: import, then print the summary. Returns the exit status (0)."""
    imported = import_weights(config)
    print("\n".join(imported.lines()), flush=True)
    return 0


def import_weights(config: ImportConfig) -> Imported:
    """Read ``config.checkpoint``, map it onto our network and register it as a new version of ``config.name``.

    Raises:
        TrackingUnreachable: the tracking server does not answer (checked before the file is read).
        StorageError, DataError: the file cannot be read, is not a weights-only torch file of the format, or
            a key or shape does not fit; the message names the file and the first key at fault.
    """
    uri = tracking.resolve_tracking_uri()
    tracking.check_reachable(uri)
    print(f"reading {config.checkpoint} ({SOURCES[config.format].label}) ...", flush=True)
    payload, digest = read_checkpoint(config.checkpoint)
    state, layout = authors_state(payload, config)
    model_config = infer_config(state, SOURCES[config.format].prompt, layout)
    mapped, dropped = map_state(state, model_config, layout)
    model = build_model(model_config, mapped)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"mapped {len(mapped)} tensors ({parameters:,} parameters); registering {config.name} ...", flush=True)
    run_name, run_id, model_uri, version = register(model, config, layout, digest, dropped, uri)
    return Imported(config.checkpoint, digest, config.format, layout.entry, model_config, parameters, dropped, uri,
                    run_name, run_id, model_uri, version)


def read_checkpoint(uri: str) -> tuple[Any, str]:
    """The file at ``uri`` (local or s3://) loaded with ``torch.load(weights_only=True)``, and its SHA-256.

    Raises:
        StorageError: an s3:// object that cannot be read. DataError: a missing local file, or one that is not
            a weights-only torch file (e.g. a pickle that needs code to load).
    """
    if storage.is_s3(uri):
        data = storage.read_bytes(uri)
        with tempfile.TemporaryDirectory(prefix="cpl-import-") as scratch:
            path = Path(scratch) / "checkpoint"
            path.write_bytes(data)
            return _load(path, uri), hashlib.sha256(data).hexdigest()
    path = Path(uri)
    if not path.is_file():
        raise DataError(f"{uri}: no such file")
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return _load(path, uri), digest.hexdigest()


def _load(path: Path, uri: str) -> Any:
    try:
        return load_weights_only(path)
    except ValueError as err:
        raise DataError(str(err).replace(str(path), uri)) from None


def authors_state(payload: Any, config: ImportConfig) -> tuple[dict[str, Any], KeyLayout]:
    """The network's tensors in ``payload`` by the authors' key names (the file's prefix taken off), and where
    they were.

    Raises:
        DataError: the payload is not a checkpoint of ``config.format``, or a key lacks the prefix all share.
    """
    uri = config.checkpoint
    if isinstance(payload, dict):
        found = ", ".join([repr(key) for key in list(payload)[:4]] + (["..."] if len(payload) > 4 else []))
    else:
        found = f"a {type(payload).__name__}"
    if config.format == "promptir":
        if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
            hint = "; is it --format cplir?" if isinstance(payload, dict) and "params" in payload else ""
            raise DataError(f"{uri}: not a PyTorch Lightning checkpoint: no 'state_dict' entry (found {found}){hint}")
        layout = KeyLayout(uri, "state_dict", "net.")
        entries = payload["state_dict"]
    else:
        keys = ("params_ema", "params") if config.param_key == "auto" else (config.param_key,)
        entry = next((key for key in keys if isinstance(payload, dict) and isinstance(payload.get(key), dict)), None)
        if entry is None:
            hint = "; is it --format promptir?" if isinstance(payload, dict) and "state_dict" in payload else ""
            raise DataError(f"{uri}: not a BasicSR checkpoint: no {' or '.join(repr(k) for k in keys)} entry "
                            f"(found {found}){hint}")
        entries = payload[entry]
        # BasicSR strips DistributedDataParallel's "module." when it saves and again when it loads; so do we.
        prefix = "module." if entries and all(str(key).startswith("module.") for key in entries) else ""
        layout = KeyLayout(uri, entry, prefix)
    state = {}
    for key, value in entries.items():
        if not str(key).startswith(layout.prefix):
            raise layout.error(f"unexpected key {key}")
        state[str(key)[len(layout.prefix):]] = value
    return state, layout


def authors_key(key: str) -> str:
    """The authors' name of our state-dict key ``key``, by ``MODULES`` and ``NORMS``."""
    for ours, theirs in MODULES:
        if key == ours or key.startswith(ours + "."):
            rest = key[len(ours) + 1:]
            return ".".join([theirs, *(NORMS.get(part, part) for part in rest.split(".") if rest)])
    raise KeyError(f"{key}: no module of the authors' network is mapped to it (see MODULES)")


def infer_config(state: dict[str, Any], prompt: str, layout: KeyLayout) -> ModelConfig:
    """Our network's config from the authors' shapes: widths, depths, heads, prompt banks.

    Raises:
        DataError: a key it reads is missing or of the wrong rank, or the shapes describe no valid network.
    """
    def shape(key: str, rank: int, what: str) -> tuple[int, ...]:
        if key not in state:
            raise layout.error(f"missing key {layout.name(key)}")
        found = tuple(getattr(state[key], "shape", ()))
        if len(found) != rank:
            raise layout.error(f"key {layout.name(key)} has shape {_shape(found)}, expected {what}")
        return found

    stages = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    heads = tuple(shape(f"{stage}.0.attn.temperature", 3, "(heads, 1, 1)")[0] for stage in stages)
    banks = [shape(f"prompt{level}.{BANK}", 5, "(1, components, channels, size, size)") for level in (1, 2, 3)]
    try:
        return ModelConfig(
            dim=shape("patch_embed.proj.weight", 4, "(dim, 3, 3, 3)")[0],
            blocks=tuple(_depth(state, stage) for stage in stages), refinement_blocks=_depth(state, "refinement"),
            heads=heads, ffn_expansion=AUTHORS_FFN_EXPANSION, prompt=prompt,
            prompt_dims=tuple(bank[2] for bank in banks), prompt_sizes=tuple(bank[3] for bank in banks),
            prompt_components=banks[0][1], top_k=1)
    except ValueError as err:
        raise layout.error(f"its shapes describe no network we can build: {err}") from None


def _depth(state: dict[str, Any], stage: str) -> int:
    """How many blocks ``stage`` (an ``nn.Sequential``) has: one more than its highest index."""
    indices = [key[len(stage) + 1:].split(".", 1)[0] for key in state if key.startswith(stage + ".")]
    return 1 + max((int(index) for index in indices if index.isdigit()), default=-1)


def map_state(state: dict[str, Any], config: ModelConfig, layout: KeyLayout) -> tuple[dict[str, torch.Tensor],
                                                                                    dict[str, int]]:
    """Our state dict from the authors' tensors, and the unused keys dropped (with their parameter counts).

    Raises:
        DataError: naming the first key our network needs that the file lacks or holds in another shape, else
            the first key of the file that is neither used nor one of ``UNUSED``.
    """
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        reference = CPLNet(config)
    mapped, used = {}, set()
    for key, expected in reference.state_dict().items():
        theirs = authors_key(key)
        if theirs not in state:
            raise layout.error(f"missing key {layout.name(theirs)}")
        tensor = state[theirs]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise layout.error(f"key {layout.name(theirs)} holds {kind}, expected floating-point weights")
        stored = (1, *expected.shape) if theirs.endswith("." + BANK) else tuple(expected.shape)
        if tuple(tensor.shape) != stored:
            raise layout.error(f"key {layout.name(theirs)} has shape {_shape(tensor.shape)}, expected {_shape(stored)}")
        mapped[key] = tensor.reshape(expected.shape).to(torch.float32).contiguous()
        used.add(theirs)
    dropped = {}
    for key, tensor in state.items():
        if key in used:
            continue
        if key not in UNUSED:
            raise layout.error(f"unexpected key {layout.name(key)}")
        dropped[key] = tensor.numel() if isinstance(tensor, torch.Tensor) else 0
    return mapped, dropped


def _shape(shape: Any) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"


def build_model(config: ModelConfig, state: dict[str, torch.Tensor]) -> CPLNet:
    """Our network holding ``state`` (built on the meta device and given the tensors: no random init)."""
    with torch.device("meta"):
        model = CPLNet(config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def register(model: CPLNet, config: ImportConfig, layout: KeyLayout, digest: str, dropped: dict[str, int],
             uri: str) -> tuple[str, str, str, str | None]:
    """Log and register ``model`` in a new run of ``config.experiment``, the way training registers its best
    checkpoint; returns (run name, run id, model URI, version)."""
    source = SOURCES[config.format]
    run_name = f"import-{config.format}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:4]}"
    resolved = {"import": config.model_dump(mode="json"), "model": model.config.to_dict(),
                "source": {"uri": config.checkpoint, "sha256": digest, "entry": layout.entry,
                           "repository": source.repository, "dropped": sorted(dropped)}}
    run_id, _ = tracking.start_or_resume_run(
        uri, config.experiment, run_name, tracking.flatten(resolved),
        {"code_version": provenance.code_version(), "cpl.import.format": config.format,
         "cpl.import.source": config.checkpoint, "cpl.import.sha256": digest})
    try:
        card = model_card(model, config, layout, digest, dropped)
        with console.without_lines(console.REGISTRY_NOTICES):
            model_uri, version = log_and_register(model, run_id, uri, config=resolved, card=card, grid=None,
                                                  example=example_input(), step=0, model_name=config.name)
    except BaseException:
        tracking.finish_run(uri, run_id, "FAILED")
        raise
    tracking.finish_run(uri, run_id, tags={tracking.MODEL_VERSION_TAG: version or ""})
    return run_name, run_id, model_uri, version


def example_input() -> np.ndarray:
    """A smooth (1, 3, H, W) float32 image in [0, 1]: the pyfunc's input example."""
    ramp = np.linspace(0.0, 1.0, EXAMPLE_SIDE, dtype=np.float32)
    return np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 1 - ramp) / 2,
                     np.outer(ramp, ramp)])[None].copy()


def model_card(model: CPLNet, config: ImportConfig, layout: KeyLayout, digest: str, dropped: dict[str, int]) -> str:
    """The card registered with an imported version: what it is, where it came from, its terms, the mapping."""
    source, c = SOURCES[config.format], model.config
    parameters = sum(p.numel() for p in model.parameters())
    routing = "the dense softmax mix of all components" if c.prompt == "dense" else f"top-{c.top_k} routing (SPM)"
    gone = (f"{', '.join(f'`{layout.prefix}{key}`' for key in dropped)}: convolutions the authors' forward never "
            f"calls ({sum(dropped.values()):,} parameters)" if dropped else "nothing")
    rows = "\n".join(f"| `{ours}` | `{layout.prefix}{theirs}` |" for ours, theirs in MODULES)
    return f"""# cpl-restore: {source.label}'s published weights, imported

{source.paper}: the authors' trained weights on this project's network, not retrained. The network computes
what theirs does: on the same input the outputs agree to float32 rounding (within 1e-5, checked by this
project's tests against a forward pass in the authors' layout).

- **Source:** `{config.checkpoint}`, entry `{layout.entry}`, SHA-256 `{digest}`; the authors' code:
  {source.repository}.
- **License:** {source.license}
- **Network:** {parameters:,} parameters; {c.prompt} prompts ({routing}); dim {c.dim}, blocks {list(c.blocks)},
  refinement {c.refinement_blocks}, heads {list(c.heads)}, prompt channels {list(c.prompt_dims)} and sizes
  {list(c.prompt_sizes)} (level 2, level 3, latent), {c.prompt_components} components.
- **Dropped:** {gone}.
- **Intended use:** the authors' tasks and data (see their paper); this project has not evaluated it at import.
  Run evaluate.py on the benchmark you care about before promoting it.

## Key mapping (ours <- the file's)

Inside every transformer block the names agree, except `norm1`/`norm2` <- `norm1.body`/`norm2.body`. A prompt
bank (N, C, S, S) is the authors' `prompt_param` (1, N, C, S, S) without its leading axis.

| ours | the file's |
|---|---|
{rows}
"""
