"""Equal-budget ablation: which prompt, and which Contrastive Prompt Regularization, trains the better restorer.

Every variant trains the same preset from the same initialisation seed on the same data stream (the five
tasks in equal shares, synthesized online from the training photos), for the same steps, batch and
learning-rate schedule; only the prompt, the CPR settings and the weight EMA differ. Each run is then
scored on a frozen set that no run trains on: every five-task recipe on crops of held-out photos (by
default the two that the quickstart holds out). Torch, cpl_model and degradation_synth only: no Ray,
DeepSpeed or MLflow, so it also runs on a bare GPU machine.

Each finished run appends one JSON line to --results; a rerun skips the (variant, seed, settings) it
finds there, so an interrupted ablation resumes where it stopped.

    python bench/ablation.py run --results docs/ablation/results.jsonl --seeds 0 1 2 --jobs 2
    python bench/ablation.py report --results docs/ablation/results.jsonl --plot docs/ablation.png
    python bench/ablation.py run --device cuda --preset small --patch 128 --steps 4000 \\
        --results outputs/ablation_gpu.jsonl          # torch only; bf16 autocast on the GPU

``report`` prints, per settings, a markdown table: per-task PSNR/SSIM as mean ± standard deviation over
seeds, and each variant's paired per-seed difference in mean PSNR from ``dense`` (PromptIR's prompt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cpl_model  # noqa: E402
import degradation_synth as ds  # noqa: E402
from cpl_model.ema import WeightAverage  # noqa: E402
from degradation_synth.samples import load_sample_photos  # noqa: E402


@dataclass(frozen=True)
class Variant:
    prompt: str
    cpr: dict[str, Any] | None = None  # cpl_model.CPRConfig fields; None: the reconstruction loss only
    ema_decay: float = 0.0  # 0: evaluate the trained weights themselves
    reconstruction: str = "l1"


# ``cpr`` is SPM + CPR with the candidate defaults: negatives without gradient, a light weight, and L1
# alone for the first half of the steps ("half"); every other ``cpr-*`` variant changes one choice of it.
_CPR = {"detach_negatives": True, "weight": 0.01, "start_step": "half"}
VARIANTS: dict[str, Variant] = {
    "none": Variant("none"),
    "dense": Variant("dense"),
    "sparse": Variant("sparse"),
    "cpr": Variant("sparse", _CPR),
    "cpr-grad": Variant("sparse", {**_CPR, "detach_negatives": False}),
    "cpr-strong": Variant("sparse", {**_CPR, "weight": 0.1}),
    "cpr-early": Variant("sparse", {**_CPR, "start_step": 0}),
    "cpr-ema": Variant("sparse", _CPR, ema_decay=0.99),
    "cpr-infonce": Variant("sparse", {**_CPR, "form": "infonce"}),
    "cpr-3neg": Variant("sparse", {**_CPR, "negatives": 3}),
    "cpr-vgg16": Variant("sparse", {**_CPR, "features": "vgg16"}),  # needs --vgg-weights
    "sparse-psnr": Variant("sparse", reconstruction="psnr"),
    "sparse-ema": Variant("sparse", ema_decay=0.99),
}
DEFAULT_VARIANTS = ("none", "dense", "sparse", "cpr", "cpr-grad", "cpr-strong", "cpr-early", "cpr-ema")
TASKS = ("noise", "haze", "rain", "blur", "low_light")


@dataclass(frozen=True)
class Settings:
    """What every variant shares; runs with different settings are never compared."""

    preset: str = "tiny"
    patch: int = 48
    batch: int = 8
    steps: int = 400
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    recipes: str = "five_task"
    holdout: tuple[str, ...] = ("chelsea", "hubble")
    eval_patch: int = 96
    eval_crops: int = 3
    eval_every: int = 100
    device: str = "cpu"

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    settings: Settings
    threads: int = 1
    vgg_weights: str | None = None

    def key(self) -> tuple[str, int, str]:
        return self.variant, self.seed, self.settings.digest()


@dataclass
class Pairs:
    degraded: torch.Tensor  # (N, 3, H, W) float in [0, 1]
    clean: torch.Tensor
    task: list[str] = field(default_factory=list)


def recipes_by_task(recipes: str) -> dict[str, list[ds.Recipe]]:
    grouped: dict[str, list[ds.Recipe]] = defaultdict(list)
    for recipe in ds.resolve_recipes(recipes):
        grouped[recipe.task].append(recipe)
    return dict(grouped)


def crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    top, left = int(rng.integers(0, image.shape[0] - size + 1)), int(rng.integers(0, image.shape[1] - size + 1))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def pairs_of(degraded: list[np.ndarray], clean: list[np.ndarray], tasks: list[str]) -> Pairs:
    return Pairs(cpl_model.to_tensor(np.stack(degraded)), cpl_model.to_tensor(np.stack(clean)), tasks)


class TrainingStream:
    """Batch ``step`` of a seed: each sample picks a task uniformly (then one of its recipes), a photo and a
    crop, all from a generator keyed by (seed, step, sample), so every variant sees the same pairs."""

    def __init__(self, photos: dict[str, np.ndarray], settings: Settings, seed: int) -> None:
        self.photos = [photos[name] for name in sorted(photos)]
        self.by_task = recipes_by_task(settings.recipes)
        self.tasks = sorted(self.by_task)
        self.settings, self.seed = settings, seed

    def batch(self, step: int) -> dict[str, Any]:
        degraded, clean, tasks = [], [], []
        for sample in range(self.settings.batch):
            rng = ds.rng_for(self.seed, "ablation", step, sample)
            task = self.tasks[int(rng.integers(len(self.tasks)))]
            recipe = self.by_task[task][int(rng.integers(len(self.by_task[task])))]
            patch = crop(self.photos[int(rng.integers(len(self.photos)))], self.settings.patch, rng)
            degraded.append(ds.degrade(patch, recipe, ds.rng_for(self.seed, "ablation", step, sample, recipe.name))[0])
            clean.append(patch)
            tasks.append(task)
        pairs = pairs_of(degraded, clean, tasks)
        return {"degraded": pairs.degraded, "clean": pairs.clean, "task": tasks}


def evaluation_set(photos: dict[str, np.ndarray], settings: Settings) -> Pairs:
    """Every recipe on ``eval_crops`` crops of each held-out photo; the same bytes for every run."""
    degraded, clean, tasks = [], [], []
    for name in settings.holdout:
        for index in range(settings.eval_crops):
            patch = crop(photos[name], settings.eval_patch, ds.rng_for(0, "ablation-eval", name, index))
            for recipe in ds.resolve_recipes(settings.recipes):
                degraded.append(ds.degrade(patch, recipe, ds.rng_for(0, "ablation-eval", name, index, recipe.name))[0])
                clean.append(patch)
                tasks.append(recipe.task)
    return pairs_of(degraded, clean, tasks)


@torch.no_grad()
def evaluate(model: torch.nn.Module, pairs: Pairs, device: torch.device,
             batch: int = 16) -> dict[str, dict[str, float]]:
    """Per task: mean PSNR and SSIM of the restoration and of the degraded input."""
    model.eval()
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for first in range(0, len(pairs.task), batch):
        degraded, clean = pairs.degraded[first:first + batch], pairs.clean[first:first + batch]
        with autocast(device):
            restored = model(degraded.to(device)).float().clamp(0, 1).cpu()
        scores = cpl_model.restoration_metrics(restored, degraded, clean)
        for i, task in enumerate(pairs.task[first:first + batch]):
            sums[task]["count"] += 1
            for name in ("psnr", "ssim", "input_psnr", "input_ssim"):
                sums[task][name] += float(scores[name][i])
    model.train()
    return {task: {name: value / values["count"] for name, value in values.items() if name != "count"}
            for task, values in sorted(sums.items())}


def mean_psnr(per_task: dict[str, dict[str, float]]) -> float:
    return statistics.fmean(values["psnr"] for values in per_task.values())


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def cpr_config(run: Run) -> cpl_model.CPRConfig:
    values = dict(VARIANTS[run.variant].cpr or {})
    if values.get("start_step") == "half":
        values["start_step"] = run.settings.steps // 2
    if values.get("features", "pyramid").startswith("vgg"):
        if run.vgg_weights is None:
            raise SystemExit(f"variant {run.variant} needs --vgg-weights (a torchvision-format state dict)")
        values["vgg_weights"] = run.vgg_weights
    return cpl_model.CPRConfig(enabled=VARIANTS[run.variant].cpr is not None, **values)


def train(run: Run) -> dict[str, Any]:
    """One (variant, seed): train, evaluate along the way and at the end; the JSON record of the run."""
    torch.set_num_threads(run.threads)
    settings, variant = run.settings, VARIANTS[run.variant]
    device = torch.device(settings.device)
    photos = load_sample_photos()
    missing = sorted(set(settings.holdout) - set(photos))
    if missing:
        raise SystemExit(f"held-out photo {missing[0]!r} is not among the sample photos ({', '.join(sorted(photos))})")
    stream = TrainingStream({n: p for n, p in photos.items() if n not in settings.holdout}, settings, run.seed)
    held_out = evaluation_set(photos, settings)

    model = cpl_model.build_model(settings.preset, variant.prompt, seed=run.seed)
    torch.nn.init.zeros_(model.output.weight)  # start from the identity, as pipelines/train.py does
    model = model.to(device)
    loss_config = cpl_model.LossConfig(reconstruction=variant.reconstruction, cpr=cpr_config(run))
    objective = cpl_model.RestorationLoss(loss_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, 1 / settings.warmup, 1.0, settings.warmup),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps - settings.warmup)], [settings.warmup])
    ema = WeightAverage(model, variant.ema_decay) if variant.ema_decay else None
    scored = lambda: ema.module if ema else model  # noqa: E731

    curve, started = [], time.perf_counter()
    for step in range(settings.steps):
        batch = stream.batch(step)
        batch["degraded"], batch["clean"] = batch["degraded"].to(device), batch["clean"].to(device)
        generator = torch.Generator(device).manual_seed(int(ds.rng_for(run.seed, "negatives", step).integers(2**62)))
        with autocast(device):
            loss, _ = cpl_model.training_step(model, batch, objective, step=step, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        schedule.step()
        if ema:
            ema.update(model)
        if (step + 1) % settings.eval_every == 0 or step + 1 == settings.steps:
            scores = evaluate(scored(), held_out, device)
            curve.append([step + 1, round(mean_psnr(scores), 4), {t: round(v["psnr"], 4) for t, v in scores.items()}])
    per_task = scores  # the last step is always scored
    return {"variant": run.variant, "seed": run.seed, "settings": asdict(settings), "digest": settings.digest(),
            "cpr": asdict(cpr_config(run)) if variant.cpr is not None else None, "ema_decay": variant.ema_decay,
            "reconstruction": variant.reconstruction,
            "per_task": per_task, "mean_psnr": mean_psnr(per_task), "curve": curve,
            "seconds": round(time.perf_counter() - started, 1), "threads": run.threads,
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus"
                       + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, record: dict[str, Any]) -> None:
    """One line, flushed and synced, so a kill leaves whole lines only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def run_all(args: argparse.Namespace) -> None:
    settings = Settings(preset=args.preset, patch=args.patch, batch=args.batch, steps=args.steps, lr=args.lr,
                        warmup=args.warmup, holdout=tuple(args.holdout), eval_every=args.eval_every,
                        device=args.device)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    done = {(r["variant"], r["seed"], r["digest"]) for r in read_results(args.results)}
    runs = [Run(v, s, settings, args.threads, args.vgg_weights) for s in args.seeds for v in args.variants]
    todo = [run for run in runs if run.key() not in done]
    print(f"settings {settings.digest()}: {len(runs) - len(todo)} of {len(runs)} runs already in {args.results}",
          flush=True)
    if args.jobs == 1:
        for run in todo:
            finished(args.results, train(run))
        return
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for future in as_completed([pool.submit(train, run) for run in todo]):
            finished(args.results, future.result())


def finished(path: Path, record: dict[str, Any]) -> None:
    append(path, record)
    print(f"{record['variant']:<14} seed {record['seed']}  mean PSNR {record['mean_psnr']:.2f} dB  "
          f"({record['seconds']:.0f} s)", flush=True)


def mean_std(values: list[float]) -> str:
    """``mean ± sample standard deviation``; a single value alone."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(records: list[dict[str, Any]]) -> str:
    """The markdown table of one settings digest."""
    by_variant: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for record in records:
        by_variant[record["variant"]][record["seed"]] = record
    tasks = sorted({task for record in records for task in record["per_task"]}, key=_task_order)
    first = next(iter(records))["per_task"]
    header = ["variant", "seeds", *[f"{t} PSNR / SSIM" for t in tasks], "mean PSNR", "Δ vs dense (paired)"]
    rows = [header, ["---"] * len(header),
            ["degraded input", "", *[f"{first[t]['input_psnr']:.2f} / {first[t]['input_ssim']:.3f}" for t in tasks],
             f"{statistics.fmean(first[t]['input_psnr'] for t in tasks):.2f}", ""]]
    dense = by_variant.get("dense", {})
    for variant in [v for v in VARIANTS if v in by_variant]:
        runs = by_variant[variant]
        cells = [f"{mean_std([r['per_task'][t]['psnr'] for r in runs.values()])} / "
                 f"{statistics.fmean(r['per_task'][t]['ssim'] for r in runs.values()):.3f}" for t in tasks]
        paired = [runs[s]["mean_psnr"] - dense[s]["mean_psnr"] for s in sorted(runs) if s in dense]
        rows.append([variant, str(len(runs)), *cells, mean_std([r["mean_psnr"] for r in runs.values()]),
                     mean_std(paired) if paired and variant != "dense" else ""])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _task_order(task: str) -> tuple[int, str]:
    return (TASKS.index(task) if task in TASKS else len(TASKS), task)


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[list[list[float]]]] = defaultdict(list)
    for record in records:
        curves[record["variant"]].append(record["curve"])
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for variant in [v for v in VARIANTS if v in curves]:
        steps = [point[0] for point in curves[variant][0]]
        values = np.array([[point[1] for point in curve] for curve in curves[variant]])
        seeds = f"{len(values)} seed" + ("s" if len(values) > 1 else "")
        axes.plot(steps, values.mean(axis=0), marker="o", markersize=3, label=f"{variant} ({seeds})")
    first = records[0]["per_task"]
    axes.axhline(statistics.fmean(v["input_psnr"] for v in first.values()), color="grey", linestyle="--",
                 label="degraded input")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel("held-out PSNR, mean over tasks (dB)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"wrote {path}")


def report(args: argparse.Namespace) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_results(args.results):
        groups[record["digest"]].append(record)
    if not groups:
        raise SystemExit(f"no results in {args.results}")
    for digest, records in groups.items():
        settings = records[0]["settings"]
        minutes = sum(r["seconds"] for r in records) / 60
        print(f"### settings {digest}\n\n`{json.dumps(settings)}`; {len(records)} runs, {minutes:.0f} run-minutes "
              f"on {records[0]['machine']}\n\n{table(records)}\n")
    if args.plot:
        plot(max(groups.values(), key=len), args.plot)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score the variants (resumes from --results)")
    run.add_argument("--results", type=Path, default=Path("outputs/ablation/results.jsonl"))
    run.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help=f"of {', '.join(VARIANTS)}")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    defaults = Settings()
    run.add_argument("--preset", default=defaults.preset, choices=list(cpl_model.PRESETS))
    run.add_argument("--patch", type=int, default=defaults.patch)
    run.add_argument("--batch", type=int, default=defaults.batch)
    run.add_argument("--steps", type=int, default=defaults.steps)
    run.add_argument("--lr", type=float, default=defaults.lr)
    run.add_argument("--warmup", type=int, default=defaults.warmup)
    run.add_argument("--eval-every", type=int, default=defaults.eval_every)
    run.add_argument("--holdout", nargs="+", default=list(defaults.holdout), help="sample photos never trained on")
    run.add_argument("--device", default=defaults.device, choices=["cpu", "cuda"])
    run.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    run.add_argument("--threads", type=int, default=1, help="torch threads per run")
    run.add_argument("--vgg-weights", help="torchvision-format VGG-16 state dict, for cpr-vgg16")
    show = commands.add_parser("report", help="the markdown table (and --plot) from --results")
    show.add_argument("--results", type=Path, default=Path("outputs/ablation/results.jsonl"))
    show.add_argument("--plot", type=Path, help="PNG of held-out PSNR against step per variant")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device")
        run_all(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
