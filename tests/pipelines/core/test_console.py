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
