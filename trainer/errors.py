"""Errors users see: each names the setting or file at fault and what to change."""


class LoraLabError(ValueError):
    """Base of every error LoRA Lab raises on purpose; the message is written for the user."""


class DatasetError(LoraLabError):
    """The training folder, an image or a caption cannot be used."""


class SettingsError(LoraLabError):
    """A node input has a value or combination that cannot work."""


class TrainingDiverged(LoraLabError):
    """The loss became NaN or infinite; the last good epoch is kept."""


class OutOfMemory(LoraLabError):
    """The device ran out of memory; the message lists the settings that lower the peak."""


class LoraFileError(LoraLabError):
    """A LoRA file cannot be written or read."""


class CaptionerError(LoraLabError):
    """A captioning model is missing, cannot be downloaded, or failed."""


class TrainingStateError(LoraLabError):
    """A resumable training state cannot be written, or a stored one does not parse."""


class DiskFull(LoraLabError):
    """A write ran out of disk space (or quota); nothing partial was left, and the message says how much is needed."""

    def __init__(self, message: str, folder: str, needed: int) -> None:
        super().__init__(message)
        self.folder = folder
        self.needed = needed
