"""A batch's conditioning, concatenated with ComfyUI's own rules: one forward for samples whose conds can share it,
and one per run of samples where a per-caption constant differs (Lumina 2 and Z-Image pass each caption's token
count), as ComfyUI's sampler batches conds."""
from __future__ import annotations

import comfy.conds
import torch

from harness import runtime

batches = runtime.pack("trainer.training.batches")


def conds(tokens: int, length: int) -> dict:
    return {"c_crossattn": comfy.conds.CONDRegular(torch.full((1, length, 4), float(tokens))),
            "num_tokens": comfy.conds.CONDConstant(tokens)}


def test_samples_that_share_their_constants_run_as_one_forward_over_the_whole_batch():
    runs = batches.batch_conds([conds(5, 5), conds(5, 5), conds(5, 5)])
    assert len(runs) == 1 and runs[0][0] == slice(None)
    assert runs[0][1]["c_crossattn"].shape == (3, 5, 4) and runs[0][1]["num_tokens"] == 5


def test_a_differing_constant_splits_the_batch_into_consecutive_runs_in_order():
    runs = batches.batch_conds([conds(5, 5), conds(5, 5), conds(7, 7), conds(5, 5)])
    assert [run for run, _ in runs] == [slice(0, 2), slice(2, 3), slice(3, 4)]
    assert [run_conds["num_tokens"] for _, run_conds in runs] == [5, 7, 5]
    assert [run_conds["c_crossattn"].shape[0] for _, run_conds in runs] == [2, 1, 1]
