"""The training driver's console (pipelines/training/progress.py): the progress line and the lines that stay."""

from __future__ import annotations

import io

from pipelines.training import progress


def run_view(events: list, live: bool = False) -> str:
    out = io.StringIO()
    view = progress.ProgressView(20, out, live=live)
    for now, event in enumerate(events):
        view.handle(event, now=float(now))
    view.close()
    return out.getvalue()


def steps(first: int, last: int) -> list[progress.Stepped]:
    return [progress.Stepped(step, 0.5 / step, 4.0, 0.25) for step in range(first, last + 1)]


def test_the_progress_line_shows_step_loss_rate_input_wait_eta_and_last_validation():
    text = progress.progress_text(120, 300, loss=0.041234, samples_per_s=5.26, input_wait=0.031, eta_s=161,
                                  val_psnr=21.066)
    assert text == ("step 120/300 [########............]  loss 0.0412  5.3 samples/s  input wait 3%  ETA 2m41s  "
                    "val PSNR 21.07 dB")
    assert progress.progress_text(0, 300) == "step   0/300 [....................]"  # nothing known yet: nothing shown
    assert progress.progress_text(300, 300, eta_s=0).startswith("step 300/300 [####################]")


def test_durations_read_at_a_glance():
    assert [progress.duration(s) for s in (0, 45.4, 161, 3600 + 125)] == ["0s", "45s", "2m41s", "1h02m"]


def test_a_log_gets_a_progress_line_at_the_first_step_and_each_tenth_and_each_checkpoint_once():
    checkpoint = progress.Checkpointed(10, "step-00000010", 21.5, 20.0, 21.5, -0.125)
    lines = run_view([progress.Started(0), *steps(1, 10), checkpoint, *steps(11, 20)]).splitlines()
    bars = [line for line in lines if line.startswith("step") and "[" in line]
    assert [int(line.split("/")[0].split()[-1]) for line in bars] == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert bars[-1].startswith("step 20/20 [####################]")
    assert lines.count("step 10/20: checkpoint step-00000010, validation PSNR 21.50 dB (input 20.00, best 21.50), "
                       "worst task -0.12 dB") == 1
    assert "val PSNR" not in bars[5] and "val PSNR 21.50 dB" in bars[6]
    # One step per second after the first: the ETA at step 4 is 16 steps away; none before a rate is known.
    assert "ETA" not in bars[0] and "ETA 16s" in bars[2] and "ETA 0s" in bars[-1]
    assert not any("resum" in line or "failed" in line for line in lines)


def test_a_restarted_worker_group_is_one_line_naming_the_failure_and_the_step_it_resumes_from():
    failed = progress.Failed("rank 1: ActorDiedError: the actor died unexpectedly")
    lines = run_view([progress.Started(0), *steps(1, 12), failed, progress.Started(10),
                      *steps(11, 20)]).splitlines()
    restarts = [line for line in lines if "failed" in line]
    assert restarts == [("worker group failed (rank 1: ActorDiedError: the actor died unexpectedly); "
                         "restarted from the checkpoint at step 10")]
    assert lines[lines.index(restarts[0]) + 1].startswith("step 11/20 [")  # the new group's first step shows


def test_ranks_spread_over_nodes_are_named_by_node_after_each_start_and_not_on_one_node():
    one_node = (("127.0.0.1", "aa" * 28),) * 2
    spread = (("10.0.0.5", "1a2b3c4d" + "0" * 48), ("10.0.0.6", "9f8e7d6c" + "0" * 48),
              ("10.0.0.5", "1a2b3c4d" + "0" * 48))
    failed = progress.Failed("rank 1: ActorDiedError: the actor died unexpectedly")
    lines = run_view([progress.Started(0, one_node), *steps(1, 12), failed, progress.Started(10, spread),
                      *steps(11, 20)]).splitlines()
    assert [line for line in lines if line.startswith("placement")] == [
        "placement: ranks 0,2 on 10.0.0.5 (node 1a2b3c4d), rank 1 on 10.0.0.6 (node 9f8e7d6c)"]
    assert lines[lines.index("placement: ranks 0,2 on 10.0.0.5 (node 1a2b3c4d), rank 1 on 10.0.0.6 (node 9f8e7d6c)")
                 - 1].startswith("worker group failed (rank 1")
    assert progress.rank_ranges([0, 1, 2, 3, 5, 6, 8]) == "0-3,5,6,8"


class HealthCheckFailed(Exception):
    """Shaped like Ray Train's WorkerHealthCheckFailedError: a message, and the error beneath it."""

    def __init__(self, failure: Exception) -> None:
        super().__init__("A worker health check failed. Worker info: Worker(actor=...)")
        self.health_check_failure = failure


class ActorDiedError(Exception):
    pass


def test_a_failure_names_the_rank_whose_process_died_not_the_ranks_it_took_down():
    errors = {0: RuntimeError("Connection closed by peer [127.0.0.1]:18833. This is typically caused by ..."),
              1: HealthCheckFailed(ActorDiedError("The actor died unexpectedly before finishing this task.\n\t"
                                                  "class_name: RayTrainWorker")),
              2: RuntimeError("Connection closed by peer")}
    assert progress.failure_reason(errors) == ("rank 1: ActorDiedError: The actor died unexpectedly before "
                                               "finishing this task; 2 other rank(s) failed with it")
    assert progress.failure_reason({3: ValueError("x" * 300)}) == "rank 3: ValueError: " + "x" * 85 + "..."


def test_a_resumed_run_says_where_it_resumes():
    lines = run_view([progress.Started(14), *steps(15, 20)]).splitlines()
    assert lines[0] == "resuming from the checkpoint at step 14"


def test_on_a_terminal_the_progress_line_is_redrawn_in_place_under_the_lines_that_stay():
    checkpoint = progress.Checkpointed(2, "step-00000002", 21.5, 20.0, 21.5)
    text = run_view([progress.Started(0), *steps(1, 2), checkpoint, *steps(3, 4)], live=True)
    lines = text.split("\n")
    assert len(lines) == 3 and lines[-1] == ""  # the checkpoint line, the last state of the bar, the end
    assert lines[0].endswith("step 2/20: checkpoint step-00000002, validation PSNR 21.50 dB (input 20.00, best 21.50)")
    assert lines[1].rsplit("\r", 1)[-1].startswith("step  4/20 [####")
    assert lines[1].count("\r") == 3  # redrawn after the checkpoint line, then at steps 3 and 4
