"""Error type shared by the core: every message names the bad value and what is accepted."""


class GuidanceConfigError(ValueError):
    """A guidance setting is invalid. The message names the field, the value and what is accepted."""


def require_finite(field: str, value: float) -> float:
    """Return float(value) or raise naming `field` when it is NaN or infinite."""
    import math

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise GuidanceConfigError(f"{field}={value!r} is not a number; use a finite number") from None
    if not math.isfinite(v):
        raise GuidanceConfigError(f"{field}={value!r} is not finite; use a finite number")
    return v


class ClassifierFileError(GuidanceConfigError):
    """A classifier file (or another safetensors file the pack reads) cannot be used; the message says why and what
    is accepted."""
