"""Aspect-ratio buckets match kohya's, so the report's plan is what training will do."""
from __future__ import annotations

import pytest

from harness import runtime

buckets = runtime.pack("trainer.data.buckets")


def test_512_gives_kohyas_17_buckets_of_at_most_512_squared_area():
    plan = buckets.make_buckets(512)
    assert len(plan) == 17
    assert (512, 512) in plan and (256, 1024) in plan and (1024, 256) in plan and (448, 576) in plan
    for width, height in plan:
        assert width % 64 == 0 and height % 64 == 0
        assert 256 <= width <= 1024 and 256 <= height <= 1024
        assert width * height <= 512 * 512


def test_sdxl_resolution_scales_the_side_limits_and_has_the_familiar_buckets():
    assert buckets.default_side_limits(1024) == (512, 2048)
    plan = buckets.make_buckets(1024)
    assert {(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (640, 1536)} <= set(plan)
    assert min(min(bucket) for bucket in plan) == 512


def test_images_go_to_the_bucket_of_nearest_aspect_ratio():
    plan = buckets.make_buckets(512)
    assert buckets.nearest_bucket(1000, 1500, plan) == (384, 640)
    assert buckets.nearest_bucket(3000, 3000, plan) == (512, 512)
    assert buckets.nearest_bucket(4000, 1000, plan) == (1024, 256)
    assert buckets.nearest_bucket(625, 1000, [(128, 512), (512, 512)]) == (512, 512)  # equally near: larger wins
    assert buckets.upscale_factor(256, 256, (512, 512)) == 2.0
    assert buckets.upscale_factor(1024, 1024, (512, 512)) == 0.5


def test_explicit_limits_and_bad_arguments():
    assert buckets.make_buckets(512, min_side=512, max_side=512) == [(512, 512)]
    with pytest.raises(ValueError, match="bucket step"):
        buckets.make_buckets(32)
    with pytest.raises(ValueError, match="no buckets"):
        buckets.nearest_bucket(10, 10, [])
