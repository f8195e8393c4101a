"""What the training driver shows while Ray Train runs: one progress line, and a line per checkpoint.

    channel = ProgressChannel(total_steps, verbose)          # on the driver, once Ray is up
    TorchTrainer(..., train_loop_config={..., "progress": channel.queue},
                 run_config=RunConfig(callbacks=[channel.relay()]))
    with channel:                                            # a thread renders what arrives
        trainer.fit()

Events travel through one Ray queue. Rank 0's reporter (``loop.RankZeroReporter``) sends ``Started`` whenever
a worker group starts (a restart resumes from the last checkpoint; the line names each rank's node once the
ranks span nodes) and ``Stepped`` every step; Ray
Train's controller sends ``Checkpointed`` once per checkpoint, after every rank has reported it, and
``Failed`` when a worker group fails. The workers' own output stays out of the console (Ray starts with
``log_to_driver`` off unless verbose), so these lines are all the console shows of the fit.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Self, TextIO

from ray.train import UserCallback

BAR_WIDTH = 20  # characters of the bar itself
LINES = 10  # progress lines of a whole run when the console cannot redraw one in place


@dataclass(frozen=True)
class Started:
    """A worker group started at ``step`` (above 0 when it resumed from a checkpoint), with the node of each
    rank (``placement``, in rank order: (IP, Ray node id))."""

    step: int
    placement: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stepped:
    step: int
    loss: float
    samples_per_s: float
    input_wait: float  # fraction of the step spent waiting for data


@dataclass(frozen=True)
class Checkpointed:
    step: int
    name: str  # the checkpoint's folder under the run's storage
    val_psnr: float
    input_psnr: float
    best_psnr: float
    worst_gain: float = math.nan  # the least PSNR gain over the input of any task, in dB


@dataclass(frozen=True)
class Failed:
    reason: str  # one line, see ``failure_reason``


def duration(seconds: float) -> str:
    """``45s``, ``2m41s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_text(step: int, total: int, loss: float = math.nan, samples_per_s: float = math.nan,
                  input_wait: float = math.nan, eta_s: float | None = None, val_psnr: float | None = None) -> str:
    """The progress line: ``step 120/300 [######......] loss 0.0412  5.3 samples/s  input wait 3%  ETA 2m41s
    val PSNR 21.07 dB``; values not known yet are left out."""
    filled = BAR_WIDTH * min(step, total) // max(1, total)
    parts = [f"step {step:>{len(str(total))}}/{total} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"]
    if not math.isnan(loss):
        parts.append(f"loss {loss:.4f}")
    if not math.isnan(samples_per_s):
        parts.append(f"{samples_per_s:.1f} samples/s")
    if not math.isnan(input_wait):
        parts.append(f"input wait {100 * input_wait:.0f}%")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    if val_psnr is not None:
        parts.append(f"val PSNR {val_psnr:.2f} dB")
    return "  ".join(parts)


def placement_text(placement: tuple[tuple[str, str], ...]) -> str:
    """``ranks 0-3 on 10.0.0.5 (node 1a2b3c4d), ranks 4-7 on 10.0.0.6 (node 9f8e7d6c)``: the nodes in the order
    of their first rank; a node by its IP and the start of its Ray node id (IPs alone can repeat)."""
    held: dict[tuple[str, str], list[int]] = {}
    for rank, node in enumerate(placement):
        held.setdefault(node, []).append(rank)
    return ", ".join(f"{'rank' if len(ranks) == 1 else 'ranks'} {rank_ranges(ranks)} on {ip} (node {node_id[:8]})"
                     for (ip, node_id), ranks in held.items())


def rank_ranges(ranks: list[int]) -> str:
    """``0-3,6``: ascending ranks, runs of three or more as ranges."""
    runs: list[list[int]] = []
    for rank in ranks:
        if runs and rank == runs[-1][-1] + 1:
            runs[-1].append(rank)
        else:
            runs.append([rank])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 2 else ",".join(map(str, run)) for run in runs)


def checkpoint_text(event: Checkpointed, total: int) -> str:
    return (f"step {event.step}/{total}: checkpoint {event.name}, validation PSNR {event.val_psnr:.2f} dB "
            f"(input {event.input_psnr:.2f}, best {event.best_psnr:.2f})"
            + ("" if math.isnan(event.worst_gain) else f", worst task {event.worst_gain:+.2f} dB"))


class ProgressView:
    """Turns events into console lines.

    ``live``: redraw one progress line in place (a terminal); otherwise print it at each tenth of the run
    (``LINES``), so a log file gets a few lines, not one per step.
    """

    def __init__(self, total: int, out: TextIO | None = None, live: bool = False) -> None:
        self.total, self.out, self.live = total, out or sys.stdout, live
        self.starts = 0
        self.failure: str | None = None
        self.last: Stepped | None = None
        self.val_psnr: float | None = None
        self.origin: tuple[float, int] | None = None  # (time, step) of the first step since the last start
        self.eta_s: float | None = None
        self.shown = 0  # width of the line drawn in place, to blank it
        self.printed_tenth = -1

    def handle(self, event: Any, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if isinstance(event, Started):
            self._started(event)
        elif isinstance(event, Stepped):
            self._stepped(event, now)
        elif isinstance(event, Checkpointed):
            self.val_psnr = event.val_psnr
            self.line(checkpoint_text(event, self.total))
        elif isinstance(event, Failed):
            self.failure = event.reason

    def _started(self, event: Started) -> None:
        self.starts += 1
        self.last, self.origin, self.eta_s = None, None, None
        self.printed_tenth = event.step * LINES // max(1, self.total) - 1  # the first step shows it is running
        where = f"the checkpoint at step {event.step}" if event.step else "step 0 (no checkpoint yet)"
        if self.starts > 1:
            self.line(f"worker group failed ({self.failure or 'no reason given'}); restarted from {where}")
            self.failure = None
        elif event.step:
            self.line(f"resuming from {where}")
        if len({node_id for _, node_id in event.placement}) > 1:  # where the ranks went, once they span nodes
            self.line(f"placement: {placement_text(event.placement)}")
        if self.live:  # a terminal shows the bar from the start, while the first batches are made
            self._draw(progress_text(event.step, self.total, val_psnr=self.val_psnr))

    def _stepped(self, event: Stepped, now: float) -> None:
        self.last = event
        if self.origin is None:
            self.origin = (now, event.step)
        elif event.step > self.origin[1]:
            per_step = (now - self.origin[0]) / (event.step - self.origin[1])
            self.eta_s = per_step * max(0, self.total - event.step)
        if self.live:
            self._draw(self.text())
            return
        tenth = event.step * LINES // max(1, self.total)
        if tenth > self.printed_tenth:
            self.printed_tenth = tenth
            self.line(self.text())

    def text(self) -> str:
        last = self.last or Stepped(0, math.nan, math.nan, math.nan)
        return progress_text(last.step, self.total, last.loss, last.samples_per_s, last.input_wait, self.eta_s,
                             self.val_psnr)

    def line(self, text: str) -> None:
        """A line that stays, printed above the live progress line."""
        if self.live and self.shown:
            self.out.write("\r" + " " * self.shown + "\r")
        self.out.write(text + "\n")
        if self.live and self.last is not None:
            self._draw(self.text())
        self.out.flush()

    def _draw(self, text: str) -> None:
        self.out.write("\r" + text + " " * max(0, self.shown - len(text)))
        self.shown = len(text)
        self.out.flush()

    def close(self) -> None:
        if self.live and self.shown:
            self.out.write("\n")
            self.out.flush()
            self.shown = 0


class Relay(UserCallback):
    """Runs in Ray Train's controller: puts each checkpoint (once, with rank 0's validation) and each worker
    group failure on the queue."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is None or not metrics:
            return
        first = metrics[0]
        val_psnr = first.get("val_psnr", math.nan)
        send(self.queue, Checkpointed(int(first.get("step", 0)), PurePosixPath(checkpoint.path).name, val_psnr,
                                      first.get("input_psnr", math.nan), first.get("best_psnr", val_psnr),
                                      first.get("worst_gain", math.nan)))

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        if worker_exceptions:
            send(self.queue, Failed(failure_reason(worker_exceptions)))


def failure_reason(errors: dict[int, BaseException], limit: int = 100) -> str:
    """A failed worker group in one line: a rank, its error's type and first sentence, and how many ranks
    failed with it.

    One rank's failure takes the others down (their collectives lose a peer), so the rank named is the
    lowest whose health check failed (its process died; the error beneath is shown), else the lowest.
    """
    died = sorted(rank for rank, error in errors.items() if getattr(error, "health_check_failure", None))
    rank = (died or sorted(errors))[0]
    error = getattr(errors[rank], "health_check_failure", None) or errors[rank]
    sentence = " ".join(str(error).split()).split(". ", 1)[0].rstrip(".")
    text = f"{type(error).__name__}: {sentence}" if sentence else type(error).__name__
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    others = len(errors) - 1
    return f"rank {rank}: {text}" + (f"; {others} other rank(s) failed with it" if others else "")


def send(queue: Any | None, event: Any) -> None:
    """Put ``event`` on the driver's progress ``queue`` (None: nobody listens).

    Progress is for people: a queue that is gone (its driver died, Ray is shutting down) must not fail
    the training, so errors are dropped here.
    """
    if queue is not None:
        with contextlib.suppress(Exception):
            queue.put(event, block=False)


class ProgressChannel:
    """The driver's end: a Ray queue that rank 0 and the controller write to, and a thread that renders it.

    Needs Ray to be initialised. The queue's actor reserves no CPU, so it never keeps a training worker or
    the data pipeline from being scheduled, and lives on the driver's node: on another node it would be
    lost with that node, and the run would go on without a line.
    """

    def __init__(self, total: int, verbose: bool = False, out: TextIO | None = None) -> None:
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out = out or sys.stdout
        # Redrawing in place is for a terminal that shows nothing else; with the libraries' logs
        # interleaved (verbose), separate lines read better.
        self.view = ProgressView(total, out, live=out.isatty() and not verbose)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._render, name="training-progress", daemon=True)

    def relay(self) -> Relay:
        return Relay(self.queue)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._drain()
        self.view.close()
        self.queue.shutdown(force=True)

    def _render(self) -> None:
        from ray.util.queue import Empty

        while not self._stop.is_set():
            try:
                event = self.queue.get(timeout=0.5)
            except Empty:
                continue
            except Exception:  # noqa: BLE001 - Ray went away under us; the fit itself reports why
                return
            self.view.handle(event)

    def _drain(self) -> None:
        try:
            events = self.queue.get_nowait_batch(self.queue.qsize())
        except Exception:  # noqa: BLE001 - as in _render
            return
        for event in events:
            self.view.handle(event)
