"""Training speed on this machine: the DeepSpeed engine against plain DDP, and the whole Ray Train job.

``engine``: the same model, batches and optimiser in N gloo processes (no Ray), stepped by a
DeepSpeed engine (ZeRO stage 1, fp32, the configuration ``pipelines/training/loop.py`` builds on CPU) and by
``torch.nn.parallel.DistributedDataParallel`` + AdamW, alternating blocks of steps so that both see
the same machine load. Reports the median step time of each and their ratio.

``job``: ``pipelines/train.py``'s code path (local Ray, online synthesis, Ray Train + DeepSpeed,
a local MLflow store in a temporary folder) with 1 and 2 workers; samples/s and the input-wait
fraction are the medians of what rank 0 logged, after the first steps.

    python bench/train_speed.py engine --workers 1 2 --steps 20
    python bench/train_speed.py job --workers 1 2 --steps 40
``checkpoint``: the bytes one training checkpoint takes per preset: the DeepSpeed engine's state (fp32
weights and AdamW moments, as ``pipelines/training/loop.py`` saves it, ZeRO-1 in one process) and the consolidated
``model.pt`` written beside it, after one step.

    python bench/train_speed.py engine --workers 1 2 --steps 20
    python bench/train_speed.py job --workers 1 2 --steps 40
    python bench/train_speed.py job --gpu --preset full --patch 128 --batch 8 --workers 1 --steps 200 \
        --peak-tflops 989          # on one H100 (dense bf16 peak); 1979/2 etc. for other cards
    python bench/train_speed.py checkpoint --presets tiny small full
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cpl_model  # noqa: E402
from degradation_synth.bench import keep_freed_memory  # noqa: E402


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def macs_per_sample(preset: str, patch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        cpl_model.build_model(preset)(torch.rand(1, 3, patch, patch))
    return counter.get_total_flops() / 2


def _engine_worker(rank: int, world: int, port: int, args: argparse.Namespace, results) -> None:
    import deepspeed

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    keep_freed_memory()
    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    objective = cpl_model.RestorationLoss(cpl_model.LossConfig(cpr=cpl_model.CPRConfig(enabled=args.cpr)))
    generator = torch.Generator().manual_seed(rank)
    batches = [{"degraded": torch.rand(args.batch, 3, args.patch, args.patch, generator=generator),
                "clean": torch.rand(args.batch, 3, args.patch, args.patch, generator=generator)} for _ in range(4)]

    def timed(model, backward, step, count: int) -> list[float]:
        times = []
        for index in range(count):
            started = time.perf_counter()
            loss, _ = cpl_model.training_step(model, batches[index % 4], objective, step=index)
            backward(loss)
            step()
            times.append(time.perf_counter() - started)
        return times

    plain = cpl_model.build_model(args.preset, seed=0)
    ddp = torch.nn.parallel.DistributedDataParallel(plain)
    ddp_optimizer = torch.optim.AdamW(plain.parameters(), lr=2e-4)

    def ddp_step() -> None:
        ddp_optimizer.step()
        ddp_optimizer.zero_grad(set_to_none=True)

    engine_model = cpl_model.build_model(args.preset, seed=0)
    engine, _, _, _ = deepspeed.initialize(
        model=engine_model, optimizer=torch.optim.AdamW(engine_model.parameters(), lr=2e-4),
        config={"train_micro_batch_size_per_gpu": args.batch, "train_batch_size": args.batch * world,
                "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 1}, "bf16": {"enabled": False},
                "steps_per_print": 10**9})

    timings: dict[str, list[float]] = {"ddp": [], "deepspeed": []}
    for block in range(args.steps // 5 + 1):  # alternate blocks; the first block of each is warm-up
        ddp_times = timed(ddp, lambda loss: loss.backward(), ddp_step, 5)
        engine_times = timed(engine, engine.backward, engine.step, 5)
        if block:
            timings["ddp"] += ddp_times
            timings["deepspeed"] += engine_times
    if rank == 0:
        results.put(timings)
    dist.destroy_process_group()


def engine_bench(args: argparse.Namespace) -> None:
    print(f"# engine: {args.preset}, batch {args.batch} x {args.patch}² per worker, CPR {'on' if args.cpr else 'off'}, "
          f"{args.threads} threads in all")
    print("| workers | DDP s/step | DeepSpeed s/step | DeepSpeed / DDP |")
    print("|---|---|---|---|")
    context = mp.get_context("spawn")
    for world in args.workers:
        results = context.SimpleQueue()
        mp.start_processes(_engine_worker, args=(world, _free_port(), args, results), nprocs=world, join=True,
                           start_method="spawn")
        timings = results.get()
        ddp, engine = statistics.median(timings["ddp"]), statistics.median(timings["deepspeed"])
        print(f"| {world} | {ddp:.3f} | {engine:.3f} | {engine / ddp:.3f} |", flush=True)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _checkpoint_worker(rank: int, port: int, args: argparse.Namespace, results) -> None:
    import deepspeed

    from pipelines.training.loop import DS_TAG

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    batch = {"degraded": torch.rand(1, 3, 32, 32), "clean": torch.rand(1, 3, 32, 32)}
    objective = cpl_model.RestorationLoss(cpl_model.LossConfig())
    for preset in args.presets:
        model = cpl_model.build_model(preset, seed=0)
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=2e-4),
            config={"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1, "zero_optimization": {"stage": 1},
                    "bf16": {"enabled": False}, "steps_per_print": 10**9})
        loss, _ = cpl_model.training_step(engine, batch, objective, step=0)
        engine.backward(loss)
        engine.step()
        with tempfile.TemporaryDirectory() as folder:
            engine.save_checkpoint(folder, tag=DS_TAG)
            state = _folder_bytes(Path(folder))
            weights = cpl_model.save_checkpoint(engine.module, Path(folder) / cpl_model.WEIGHTS).stat().st_size
        params = sum(p.numel() for p in model.parameters())
        results.put((preset, params, state, weights))
    dist.destroy_process_group()


def checkpoint_bench(args: argparse.Namespace) -> None:
    print(f"| preset | parameters | DeepSpeed state | {cpl_model.WEIGHTS} | checkpoint | bytes/parameter |")
    print("|---|---:|---:|---:|---:|---:|")
    results = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_checkpoint_worker, args=(_free_port(), args, results), nprocs=1, join=True,
                       start_method="spawn")
    for _ in args.presets:
        preset, params, state, weights = results.get()
        print(f"| {preset} | {params / 1e6:.2f} M | {state / 2**20:.1f} MiB | {weights / 2**20:.1f} MiB "
              f"| {(state + weights) / 2**20:.1f} MiB | {(state + weights) / params:.1f} |", flush=True)


def job_bench(args: argparse.Namespace) -> None:
    from mlflow import MlflowClient

    from pipelines.core.config import load_config
    from pipelines.training.config import TrainConfig
    from pipelines.training.driver import train

    device = torch.cuda.get_device_name() if args.gpu else "CPU"
    print(f"# job: {args.preset} on {device}, batch {args.batch} x {args.patch}² per worker, {args.steps} steps, "
          f"CPR {'on' if args.cpr else 'off'}, online five_task synthesis")
    print("| workers | samples/s | input wait | seconds (whole job) | model TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    for world in args.workers:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
            config = load_config(TrainConfig, None, [
                f"run.storage={scratch}/runs", f"optim.max_steps={args.steps}", "optim.warmup_steps=1",
                f"checkpoint.every={args.steps}", f"data.batch_size={args.batch}", f"data.synthesis.patch={args.patch}",
                f"model.preset={args.preset}", f"scaling.workers={world}", f"scaling.use_gpu={str(args.gpu).lower()}",
                f"scaling.cpus_per_worker={0.5 if world > 1 and not args.gpu else 1}",
                f"loss.cpr.start_step={0 if args.cpr else args.steps + 1}", "tracking.register_model=false"])
            started = time.perf_counter()
            summary = train(config)
            seconds = time.perf_counter() - started
            client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
            skip = min(5, args.steps // 3)  # the first steps include start-up work
            rate, wait = (statistics.median(m.value for m in client.get_metric_history(summary.run_id, metric)
                                            if m.step > skip)
                          for metric in ("train/samples_per_s", "train/input_wait"))
            # Model FLOP utilisation: a training step costs ~3x the forward pass (backward ~2x), plus the
            # negative decoder passes of CPR, which this estimate leaves out.
            tflops = rate * 3 * 2 * macs_per_sample(args.preset, args.patch) / 1e12
            mfu = f"{tflops / args.peak_tflops:.1%}" if args.peak_tflops else "-"
            print(f"| {world} | {rate:.2f} | {wait:.1%} | {seconds:.0f} | {tflops:.3f} | {mfu} |", flush=True)
            import ray

            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("engine", "job", "checkpoint"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per configuration")
    parser.add_argument("--batch", type=int, default=8, help="micro-batch per worker")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--preset", default="tiny", help="tiny, small or full")
    parser.add_argument("--cpr", action="store_true", help="include CPR's negative decoder pass")
    parser.add_argument("--gpu", action="store_true", help="job only: one GPU per worker (bf16)")
    parser.add_argument("--peak-tflops", type=float, help="job only: the device's dense bf16 peak, for MFU")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="engine only: torch threads in all")
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "full"], help="checkpoint only")
    args = parser.parse_args(argv)
    {"engine": engine_bench, "job": job_bench, "checkpoint": checkpoint_bench}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
