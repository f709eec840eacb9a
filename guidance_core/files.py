"""Files written and read safely: atomic writes (a temporary name in the target's folder, then a rename, so no
half-written file is ever seen or left behind) and the check that a file is laid out as safetensors before it is
opened as one (pickled checkpoints can run code when loaded; they are refused by name and by their first bytes).
"""

from __future__ import annotations

import os
import tempfile

from safetensors.torch import save_file

from .errors import ClassifierFileError, GuidanceConfigError

PICKLE_EXTS = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
# The safetensors header (tensor index + metadata JSON) is bounded before it is parsed, so a hostile or damaged
# file cannot cost memory or time before it is refused.
MAX_HEADER_BYTES = 8 << 20


def _atomic_write(path: str, write, suffix: str = "") -> str:
    """write(tmp_path) to a temporary name in the target's folder, then rename into place: a reader
    never sees a half-written file, and an interrupted write leaves nothing behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a written file is readable like any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_save(tensors: dict, path: str, metadata: dict) -> str:
    """safetensors file with string metadata, written atomically."""
    return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), ".safetensors")


def atomic_bytes(path: str, data: bytes) -> str:
    """Bytes written atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return _atomic_write(path, write)


def check_safetensors(path: str, what: str = "classifier", error: type[GuidanceConfigError] = None):
    """Refuse anything but a safetensors file before it is opened as one: pickled checkpoints can run code when
    loaded. Safetensors layout: an 8-byte little-endian header length N, then N bytes of JSON starting with '{'.
    Only a file that is not laid out so is judged by its first bytes: a header length whose low byte is 0x80, or
    whose low bytes spell 'PK', is a valid safetensors file, not a pickle or zip. `what` names the file's role in
    the messages; `error` is the exception type raised (ClassifierFileError by default)."""
    error = error or ClassifierFileError
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise error(f"{what} file {name!r} does not exist (deleted or moved?)")
    if path.lower().endswith(PICKLE_EXTS):
        raise error(
            f"{name}: pickled checkpoints ({', '.join(PICKLE_EXTS)}) are refused because loading them can "
            "run code; convert it to .safetensors"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        n = int.from_bytes(head[:8], "little")
        if n > MAX_HEADER_BYTES:
            raise error(
                f"{name}: safetensors header of {n} bytes; a {what} file's header (tensor index, labels, "
                f"config) is at most {MAX_HEADER_BYTES >> 20} MiB"
            )
        return
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise error(f"{name} is a pickle/zip checkpoint, not safetensors; refused")
    raise error(f"{name} is not a safetensors file (corrupt or truncated)")
