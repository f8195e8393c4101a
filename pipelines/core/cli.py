"""The command line every entry point shares: its flags, the YAML file and ``--set`` make one config, and
one error policy decides what reaches the terminal.

    command = Command("cpl-evaluate", EvaluateConfig, HELP, plan=plan)
    command.flag("--model", "model", "model reference")    # `--model X` is `--set model=X`
    return command.main(argv, work)                         # work(config, options) -> exit status

Precedence, lowest first: the model's defaults, the ``--config`` file, presets such as ``--smoke``, the
command's own flags, ``--set``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from . import console
from .config import Frozen, load_config, model_defaults
from .errors import user_error

DEBUG_VARIABLE = "CPL_DEBUG"
ERROR_STATUS = 2

EPILOG = f"""\
Each flag above sets the config key shown beside it; --set sets any key.
Exit status: 0 on success; {ERROR_STATUS} with one line on stderr ("error: ...") when a key, file, URI,
model reference or data is at fault. Any other failure ends with its traceback; --debug or
{DEBUG_VARIABLE}=1 shows the traceback of every error."""


@dataclass(frozen=True)
class Options:
    """What the common flags asked for, beside the config."""

    dry_run: bool = False
    verbose: bool = False
    action: str | None = None  # the mode flag given (``pack`` for ``--pack``), for commands that have modes


class Command:
    """One entry point's command line: its flags, each mapped onto a config key, plus the common flags.

    Args:
        prog: the name shown in usage lines (the console script).
        model: the config model, validated before any work starts.
        description: the help text above the flags.
        plan: ``plan(config, options) -> dict``, printed beside the resolved config by ``--dry-run``; it
            must do nothing heavy (no Ray, no model).
        dry_run_runs: ``--dry-run`` prints the config and plan and then still calls ``work`` with
            ``options.dry_run`` set, for a command whose dry run means "decide, change nothing".
        dry_run_help: the help of ``--dry-run`` when it means more than printing the plan.
    """

    def __init__(self, prog: str, model: type[Frozen], description: str,
                 plan: Callable[[Any, Options], dict[str, Any]] | None = None, dry_run_runs: bool = False,
                 dry_run_help: str = "print the resolved config and the plan as JSON; do nothing") -> None:
        self.model, self.plan, self.dry_run_runs = model, plan, dry_run_runs
        self.parser = argparse.ArgumentParser(prog=prog, description=description, epilog=EPILOG,
                                              formatter_class=argparse.RawDescriptionHelpFormatter)
        self._keys: dict[str, str] = {}  # argparse dest -> config key
        self._flags: dict[str, str] = {}  # config key -> the flag, which a config error names
        self._presets: dict[str, list[str]] = {}  # argparse dest -> its overrides
        self._modes: Any = None  # the argparse group of the mode switches, made by the first one
        self._defaults = _flatten(model_defaults(model))
        self._dry_run_help, self._common_added = dry_run_help, False

    def flag(self, name: str, key: str, help: str, **kwargs: Any) -> None:
        """Add the flag ``name`` as a way to set config ``key``; ``kwargs`` as for ``add_argument``."""
        if kwargs.get("action") in ("store_true", "store_const"):
            shown = f"{key}={json.dumps(kwargs.get('const', True))}"
        else:
            shown = f"{key}, default {json.dumps(self._defaults[key], default=str)}" if key in self._defaults else key
        action = self.parser.add_argument(name, default=argparse.SUPPRESS, help=f"{help} [{shown}]", **kwargs)
        self._keys[action.dest] = key
        self._flags[key] = name

    def preset(self, name: str, overrides: list[str], help: str) -> None:
        """Add the switch ``name``, which applies ``overrides`` (``key=value`` items) before the flags."""
        action = self.parser.add_argument(name, action="store_true", help=help)
        self._presets[action.dest] = list(overrides)

    def action(self, name: str, help: str) -> None:
        """Add the mode switch ``name`` (exclusive with the other modes), passed on as ``options.action``."""
        if self._modes is None:
            self._modes = self.parser.add_mutually_exclusive_group()
        self._modes.add_argument(name, action="store_const", const=name.removeprefix("--"), dest="action",
                                 default=None, help=help)

    def parse_args(self, argv: list[str] | None) -> argparse.Namespace:
        """``argv`` parsed, the common flags added after the command's own (so usage and help list them last)."""
        if not self._common_added:
            self._common_added = True
            common = self.parser.add_argument_group("common flags")
            common.add_argument("--config", metavar="FILE", help="YAML config file (sections as in --dry-run's output)")
            common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                                help="set a config key, e.g. a.b=3 (value read as YAML; repeatable; applied last)")
            common.add_argument("--dry-run", action="store_true", help=self._dry_run_help)
            common.add_argument("--verbose", action="store_true", help="show the libraries' INFO logs too")
            common.add_argument("--debug", action="store_true",
                                help=f"print the traceback of an error too (or set {DEBUG_VARIABLE}=1)")
        return self.parser.parse_args(argv)

    def load(self, args: argparse.Namespace) -> Any:
        """The validated config that ``args`` describe.

        Raises:
            ConfigError: naming the key (and the flag that sets it) or the file at fault.
        """
        overrides = [item for dest, items in self._presets.items() if getattr(args, dest) for item in items]
        overrides += [f"{key}={json.dumps(getattr(args, dest))}" for dest, key in self._keys.items()
                      if hasattr(args, dest)]
        return load_config(self.model, args.config, overrides + args.set, flags=self._flags)

    def main(self, argv: list[str] | None, work: Callable[[Any, Options], int | None]) -> int:
        """Parse ``argv``, validate the config, then ``work(config, options)``; returns the exit status.

        A ``PipelineError``, also one raised inside a Ray task or Train worker, becomes one line
        ``error: <message>`` on stderr and exit status 2 (after its traceback with ``--debug``). Any other
        exception propagates with its traceback.
        """
        args = self.parse_args(argv)
        debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
        console.configure(args.verbose)
        try:
            config = self.load(args)
            options = Options(args.dry_run, args.verbose, getattr(args, "action", None))
            if args.dry_run:
                plan = self.plan(config, options) if self.plan else {}
                print(json.dumps({"config": config.model_dump(mode="json"), **plan}, indent=2), flush=True)
                if not self.dry_run_runs:
                    return 0
            return work(config, options) or 0
        except Exception as err:
            found = user_error(err)
            if found is None:
                raise
            if debug:
                traceback.print_exception(err)
            print(f"error: {' '.join(str(found).splitlines())}", file=sys.stderr)
            return ERROR_STATUS


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
