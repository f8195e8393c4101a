"""The registry lock against a real ``mlflow server``: one holder at a time, and a held lock names its holder.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pipelines.registry import lock, promotion

pytestmark = pytest.mark.slow  # against the session's mlflow server


def test_the_registry_lock_admits_one_holder_at_a_time(tracked):
    name = f"lock-{uuid.uuid4().hex[:8]}"
    inside, most, guard = [0], [0], threading.Lock()

    def hold():
        with lock.registry_lock(tracked, name):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.3)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert not tracked.search_registered_models(f"name = '{name}{lock.LOCK_SUFFIX}'")  # released


def test_a_held_lock_times_out_with_its_holder_named(tracked):
    name = f"lock-{uuid.uuid4().hex[:8]}"
    tracked.create_registered_model(name + lock.LOCK_SUFFIX, description="held by someone@elsewhere pid 1")
    with pytest.raises(promotion.PromotionError, match="someone@elsewhere"):
        with lock.registry_lock(tracked, name, wait_s=0.5):
            pass
