"""Numbers a user (or a remote client) typed: nan and inf pass ComfyUI's min/max checks, so they are refused here."""
from __future__ import annotations

import math

from .errors import SettingsError


def require_finite(name: str, value: float) -> None:
    """SettingsError naming `name` when `value` is nan or infinite (every comparison with nan is false)."""
    if not math.isfinite(value):
        raise SettingsError(f"{name} is {value}; it must be a finite number. Set an ordinary value (the input's "
                            "default, for instance).")
