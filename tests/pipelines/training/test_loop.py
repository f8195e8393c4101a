"""The per-worker loop's pieces: the LR schedule, the DeepSpeed config, batch decoding, and the objective
with its VGG weights from a local file or S3.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import cpl_model
from pipelines.core import storage
from pipelines.core.config import ConfigError
from pipelines.core.errors import PipelineError
from pipelines.training import loop
from pipelines.training.config import TrainConfig

from ..conftest import train_config

COMPOSITE = "low_light+haze+rain"


def test_warmup_ramps_linearly_and_reaches_one_on_its_last_step():
    factor = loop.warmup_cosine(warmup=10, total=100, floor=0.1)
    ramp = [factor(step) for step in range(10)]
    assert ramp[-1] == pytest.approx(1.0)
    assert np.diff(ramp) == pytest.approx(np.full(9, 0.1))  # equal increments: linear
    assert 0 < ramp[0] < ramp[-1]


def test_after_warmup_the_cosine_decays_monotonically_to_the_floor_and_stays_there():
    factor = loop.warmup_cosine(warmup=10, total=100, floor=0.1)
    assert factor(10) == pytest.approx(1.0)
    decay = [factor(step) for step in range(10, 101)]
    assert (np.diff(decay) <= 1e-12).all()  # non-increasing
    assert factor(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay: half-way down
    assert factor(100) == pytest.approx(0.1)
    assert [factor(step) for step in (101, 150, 10_000)] == pytest.approx([0.1] * 3)


def test_without_warmup_the_schedule_starts_at_one():
    factor = loop.warmup_cosine(warmup=0, total=20, floor=0.0)
    assert factor(0) == pytest.approx(1.0)
    assert factor(20) == pytest.approx(0.0)


def test_deepspeed_global_batch_is_micro_batch_times_accumulation_times_world_size():
    config = train_config("data.batch_size=3", "optim.accumulation=4")
    ds_config = loop.deepspeed_config(config, world_size=2, on_gpu=False)
    assert ds_config["train_micro_batch_size_per_gpu"] == 3
    assert ds_config["gradient_accumulation_steps"] == 4
    assert ds_config["train_batch_size"] == 3 * 4 * 2


@pytest.mark.parametrize(("precision", "on_gpu", "bf16"), [
    ("auto", True, True), ("auto", False, False),
    ("fp32", True, False), ("fp32", False, False),
    ("bf16", True, True), ("bf16", False, True),
])
def test_precision_auto_means_bf16_on_gpu_only_and_explicit_choices_are_honoured(precision, on_gpu, bf16):
    config = train_config(f"optim.precision={precision}")
    assert loop.deepspeed_config(config, world_size=1, on_gpu=on_gpu)["bf16"] == {"enabled": bf16}


def test_zero_stage_and_gradient_clipping_reach_deepspeed():
    config = TrainConfig.model_validate({"optim": {"zero_stage": 2, "grad_clip": 0.25}})
    ds_config = loop.deepspeed_config(config, world_size=1, on_gpu=False)
    assert ds_config["zero_optimization"] == {"stage": 2}
    assert ds_config["gradient_clipping"] == 0.25


def test_to_tensors_decodes_raw_uint8_rows_into_exact_float_images_and_keeps_the_tasks():
    rng = np.random.default_rng(0)
    height, width = 5, 7
    degraded = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    clean = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    degraded[0, 0, 0] = (0, 255, 128)  # both ends of the range
    batch = {"degraded": np.array([image.tobytes() for image in degraded], dtype=object),
             "clean": np.array([image.tobytes() for image in clean], dtype=object),
             "task": np.array(["noise", COMPOSITE, "haze"], dtype=object),
             "height": np.full(3, height, np.int32), "width": np.full(3, width, np.int32)}
    out = loop.to_tensors(batch)
    assert out["task"] == ["noise", COMPOSITE, "haze"]
    for name, images in (("degraded", degraded), ("clean", clean)):
        tensor = out[name]
        assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, height, width)
        assert tensor.min() >= 0 and tensor.max() <= 1
        np.testing.assert_array_equal(cpl_model.to_uint8(tensor), images)
    assert out["degraded"][0, :, 0, 0].tolist() == [0.0, 1.0, pytest.approx(128 / 255)]


VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512)  # up to relu5_1


@pytest.fixture(scope="module")
def vgg16_bytes() -> bytes:
    """A torchvision-style VGG-16 state dict (``features.<i>.weight`` ...), each tensor filled with its index ``i``."""
    state, index, channels = {}, 0, 3
    for item in VGG16:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.full((item, channels, 3, 3), float(index))
        state[f"features.{index}.bias"] = torch.full((item,), float(index))
        index, channels = index + 2, item
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def vgg_loss(features: str, weights: str):
    return train_config("loss.cpr.enabled=true", f"loss.cpr.features={features}",
                        f"loss.cpr.vgg_weights={weights}").loss


@pytest.mark.parametrize("where", ["local", "s3"])
def test_vgg_weights_are_read_from_a_local_file_or_fetched_from_s3(request, tmp_path, vgg16_bytes, where):
    uri = str(tmp_path / "vgg16.pth")
    if where == "s3":
        uri = f"s3://{request.getfixturevalue('bucket')}/weights/vgg16.pth"
    storage.write_bytes(uri, vgg16_bytes)
    objective = loop.build_objective(vgg_loss("vgg16", uri))
    loaded = objective.cpr.features.state_dict()
    assert loaded["features.24.weight"].unique().tolist() == [24.0] and loaded["features.0.bias"].eq(0).all()


def one_line_config_error(loss, *named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        loop.build_objective(loss)
    message = str(raised.value)
    assert isinstance(raised.value, PipelineError) and "\n" not in message
    assert message.startswith("config error: loss.cpr.vgg_weights: ")
    for text in named:
        assert text in message, message


def test_a_missing_vgg_weights_file_is_a_one_line_error_naming_the_key_and_the_uri(bucket, tmp_path):
    for uri in (str(tmp_path / "nowhere.pth"), f"s3://{bucket}/nowhere/vgg19.pth"):
        one_line_config_error(vgg_loss("vgg19", uri), uri, "no such file")


@pytest.mark.parametrize(("content", "reason"), [
    (b"not a torch file", "as a weights-only torch file"),
    (None, "features.19.weight has shape"),  # VGG-16's weights where VGG-19's are asked for
])
def test_a_file_that_is_not_vgg_weights_is_a_one_line_error_naming_the_uri(bucket, vgg16_bytes, content, reason):
    uri = f"s3://{bucket}/weights/vgg.pth"
    storage.write_bytes(uri, vgg16_bytes if content is None else content)
    one_line_config_error(vgg_loss("vgg19", uri), uri, reason)
