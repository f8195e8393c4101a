"""The console helpers: progress bars only where there is something to count, and lines dropped by prefix."""

from __future__ import annotations

import sys

from pipelines.core import console


def test_a_bar_counts_the_items_on_stderr_and_yields_them_all(capsys):
    assert list(console.progress_bar(iter(range(3)), desc="restoring", unit="image", total=3)) == [0, 1, 2]
    assert "restoring" in capsys.readouterr().err


def test_nothing_to_count_or_a_disabled_bar_draws_nothing(capsys):
    items = iter(())
    assert console.progress_bar(items, desc="evaluating", unit="pair", total=0) is items
    assert list(console.progress_bar(iter(range(2)), desc="evaluating", unit="pair", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""


def test_without_lines_drops_the_named_notices_and_passes_the_rest(capsys):
    with console.without_lines(("Registered model",)):
        print("Registered model 'x' ...", file=sys.stderr)
        print("error: something else", file=sys.stderr)
    assert capsys.readouterr().err == "error: something else\n"


def test_the_indented_lines_that_continue_a_dropped_notice_go_with_it(capsys):
    with console.without_lines(console.RAYLET_NOTICES, stream="stdout"):
        print("step 3/36: checkpoint step-00000003")
        print("(raylet, ip=10.0.3.7) A worker died or was killed while executing a task:\n"
              "    - objects spillable: 17\n\n    [2026-12-04 23:43:05,389 W 10041] (raylet) store.cc:366: ...\n")
        print("run lost-nodes (c0a5e140) at http://127.0.0.1:5000\n  model:      models:/cpl-restore/1")
    assert capsys.readouterr().out == ("step 3/36: checkpoint step-00000003\n"
                                       "run lost-nodes (c0a5e140) at http://127.0.0.1:5000\n"
                                       "  model:      models:/cpl-restore/1\n")
