"""Auto Caption: tag or describe every image with WD14, BLIP or Florence-2, without losing existing text."""
from __future__ import annotations

import dataclasses

import comfy.model_management
import comfy.utils

from ..trainer.captioning import CaptionRun, CaptionSettings, caption_dataset, register_model_folder
from ..trainer.data.findings import caption_findings
from ..trainer.data.loading import display_name
from ..trainer.data.roots import comfy_dataset_roots
from ..trainer.data.tokens import clip_token_counter
from .comfy_progress import log
from .finite_inputs import refuse_non_finite_floats
from .setting_inputs import setting_inputs, settings_from
from .types import DATASET, DatasetTextNode

register_model_folder()  # models/captioners shows in /models and honours extra_model_paths.yaml

ACTION_LABELS = {"written": "written", "replaced": "replaced, old text in {backup}", "unchanged": "unchanged",
                 "kept": "kept the existing caption", "memory": "in memory only", "failed": "not captioned: {detail}"}


class AutoCaption(DatasetTextNode):
    DESCRIPTION = "Captions the dataset's images; the trigger word goes first; existing captions are kept or backed up."
    RETURN_NAMES = ("dataset", "captions")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"dataset": (DATASET,), **setting_inputs(CaptionSettings)},
                "optional": setting_inputs(CaptionSettings, optional=True)}

    @refuse_non_finite_floats
    def run(self, dataset, **inputs):
        settings = settings_from(CaptionSettings, inputs)
        progress: list[comfy.utils.ProgressBar] = []

        def after_image(done: int, total: int) -> None:
            if not progress:
                progress.append(comfy.utils.ProgressBar(total))
            progress[0].update_absolute(done, total)

        run = caption_dataset(dataset, settings, should_stop=comfy.model_management.processing_interrupted,
                              after_image=after_image, roots=comfy_dataset_roots())
        text = summarise(run, settings)
        if comfy.model_management.processing_interrupted():  # stopped before an image: say what was written
            log.warning("Auto Caption cancelled after %d of %d images:\n%s", len(run.outcomes), run.to_caption, text)
            comfy.model_management.throw_exception_if_processing_interrupted()  # clears the stop flag as it raises
        captioned = dataclasses.replace(run.dataset, report=f"{dataset.report}\n\n{text}".strip())
        return self.shown(captioned, text)


def summarise(run: CaptionRun, settings: CaptionSettings) -> str:
    """Counts, each image's caption and what happened to its file, then the caption problems that remain."""
    counts = ", ".join(f"{run.count(action)} {action}" for action in ACTION_LABELS if run.count(action))
    lines = [f"Auto Caption with {settings.captioner} ({settings.mode}): {counts or 'nothing to caption'}."]
    if not run.outcomes and settings.mode == "fill_missing":
        lines.append("Every image already has a caption file; use overwrite to replace them (old text kept as .bak).")
    for outcome in run.outcomes:
        label = ACTION_LABELS[outcome.action].format(backup=outcome.backup.name if outcome.backup else "",
                                                     detail=outcome.detail)
        lines.append(f"{display_name(outcome.path)}: {outcome.caption}  [{label}]")
    findings = caption_findings(run.dataset.images, settings.trigger_word, clip_token_counter())
    lines += [f"WARNING: {finding.message}" for finding in findings if finding.severity == "warning"]
    return "\n".join(lines)
