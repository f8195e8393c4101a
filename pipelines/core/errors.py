"""The errors that are the user's to fix, and how to find one inside the wrappers Ray puts around it.

Every entry point prints a ``PipelineError`` as one line (``error: <message>``, exit status 2) and lets
any other exception, a bug in our code or a library's, propagate with its traceback. The subclasses
keep the builtin base they replaced (``ValueError``, ``RuntimeError``...), so callers that caught those
still do:

- ``config.ConfigError``: a key, value or file of a config, or a setting that cannot work here;
- ``storage.StorageError``: a URI that cannot be read or written;
- ``references.ModelNotFound``: a model reference that names nothing;
- ``tracking.TrackingUnreachable``: an MLflow tracking server that does not answer;
- ``lock.PromotionError``: a promotion or rollback that left the registry unchanged;
- ``DataError``: data that cannot be used (a malformed manifest, an empty split, too many bad sources);
- ``SetupError``: this machine lacks what the command needs (an install extra, a GPU).
"""

from __future__ import annotations

import re
import sys


class PipelineError(Exception):
    """An error the user can fix; its message names the key, file, URI or reference at fault."""


class DataError(PipelineError, ValueError):
    """Data that cannot be used as it is: the message names the dataset, split or file."""


class SetupError(PipelineError, RuntimeError):
    """This machine lacks something the command needs (an install extra, a CUDA device)."""


def user_error(err: BaseException) -> PipelineError | None:
    """The ``PipelineError`` that ``err`` is or wraps, else None.

    Ray wraps an exception raised in a task or actor (``RayTaskError``, holding it as ``cause``) and in a
    Ray Train worker (``WorkerGroupError.worker_failures``, ``ControllerError.controller_failure``). A
    ``RayTaskError`` is also made an instance of its cause's class, but its message is the whole remote
    traceback, so the wrapped original is preferred to it. Ray Data's map functions and actors that fail
    to start arrive with the original only as the text of their traceback; it is rebuilt from there.
    """
    chain = _chain(err)
    for current in chain:
        if isinstance(current, PipelineError) and getattr(current, "cause", None) is None:
            return current
    for current in chain:
        if type(current).__module__.startswith("ray."):
            found = _from_traceback(str(current))
            if found is not None:
                return found
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and every exception it wraps, outermost first."""
    chain, pending = [], [err]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        inner = [getattr(current, "cause", None), getattr(current, "controller_failure", None),
                 *getattr(current, "worker_failures", {}).values(), current.__cause__]
        pending += [item for item in inner if isinstance(item, BaseException)]
    return chain


# The line of a remote traceback that names one of our errors: ``pipelines.core.storage.StorageError: ...``.
_NAMED = re.compile(r"^(pipelines(?:\.\w+)+)\.(\w+): (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _from_traceback(text: str) -> PipelineError | None:
    """The last of our errors that a traceback's text names, rebuilt from its class name and message.

    Only classes of modules already imported here count: the text names them, it never imports anything.
    """
    lines = _ANSI.sub("", text).splitlines()
    found = None
    for index, line in enumerate(lines):
        named = _NAMED.match(line)
        module = sys.modules.get(named.group(1)) if named else None
        kind = getattr(module, named.group(2), None) if named else None
        if isinstance(kind, type) and issubclass(kind, PipelineError):
            message = [named.group(3)]
            for more in lines[index + 1:]:
                if not more.strip():
                    break  # a message ends where the traceback's next paragraph begins
                message.append(more)
            found = kind("\n".join(message))
    return found
