"""Classifier files: safetensors weights + JSON metadata. No pickle, ever.

Metadata (stored under the safetensors metadata key "guidance_lab", as JSON):
  format            "guidance-lab-classifier"
  version           1
  architecture      "noise_aware" (or another registered name)
  config            the architecture's config dict
  labels            list of label names, in logit order
  latent_channels   channels of the latents it reads
  latent_format     ComfyUI latent format (class name) it was trained on, e.g. "SD15", "SDXL"; guidance refuses
                    a model with another one unless the user opts in ("" = not recorded: not checked)
  parameterization  "eps" | "v" | "flow": the model family whose sampling space it was trained in
  input_scaling     the input the classifier reads, c_in(sigma)*x: {"kind": "edm", "sigma_data": s} |
                    {"kind": "identity"} | {"kind": "cosmos_rflow"} (parameterization.INPUT_SCALINGS); used by
                    the trainer and by guidance, and must equal the model's. Absent in older files: the
                    convention they were trained with, x/sqrt(1 + sigma^2) for eps/v and x for flow
  sigma_min, sigma_max  the noise range it was trained on
Writes go to a temporary name first and are renamed into place (no half-written files).
"""
from __future__ import annotations

import json
import os
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import parameterization as P
from .classifiers.noise_aware import ClassifierConfig, NoiseAwareClassifier
from .errors import GuidanceConfigError

FORMAT, VERSION = "guidance-lab-classifier", 1
META_KEY = "guidance_lab"
PICKLE_EXTS = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
ARCHITECTURES = {"noise_aware": (ClassifierConfig, NoiseAwareClassifier)}
REQUIRED = ("format", "version", "architecture", "config", "labels", "latent_channels", "parameterization")


class ClassifierFileError(GuidanceConfigError):
    """A classifier file cannot be used; the message says why and what is accepted."""


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


def input_scaling_of(meta: dict) -> dict:
    """The classifier's input scaling: its `input_scaling` field, or for files without one the convention
    they were trained with (parameterization.default_input_scaling)."""
    if "input_scaling" in meta:
        return P.check_input_scaling(meta["input_scaling"])
    return P.default_input_scaling(meta.get("parameterization", "eps"))


def save_classifier(path: str, module: torch.nn.Module, meta: dict) -> str:
    """Write weights + metadata atomically (temporary file in the same folder, then rename)."""
    if not path.endswith(".safetensors"):
        raise ClassifierFileError(f"classifier path {path!r} must end with .safetensors")
    full = {"format": FORMAT, "version": VERSION, **meta}
    missing = [k for k in REQUIRED if k not in full]
    if missing:
        raise ClassifierFileError(f"classifier metadata lacks {missing}")
    input_scaling_of(full)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    atomic_save(tensors, path, {META_KEY: json.dumps(full)})
    return path


def _check_not_pickle(path: str):
    """Safetensors layout: an 8-byte little-endian header length N, then N bytes of JSON starting with '{'.
    Only a file that is not laid out so is judged by its first bytes: a header length whose low byte is 0x80,
    or whose low bytes spell 'PK', is a valid safetensors file, not a pickle or zip."""
    low = path.lower()
    if low.endswith(PICKLE_EXTS):
        raise ClassifierFileError(f"{os.path.basename(path)}: pickled checkpoints ({', '.join(PICKLE_EXTS)}) are "
                                  "refused because loading them can run code; convert it to .safetensors")
    with open(path, "rb") as f:
        head = f.read(9)
    size = os.path.getsize(path)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise ClassifierFileError(f"{os.path.basename(path)} is a pickle/zip checkpoint, not safetensors; refused")
    raise ClassifierFileError(f"{os.path.basename(path)} is not a safetensors file (corrupt or truncated)")


def read_metadata(path: str) -> dict:
    _check_not_pickle(path)
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ClassifierFileError(f"{os.path.basename(path)} cannot be read as safetensors: {e}") from None
    if raw is None:
        raise ClassifierFileError(f"{os.path.basename(path)} has no Guidance Lab metadata; it is not a classifier file")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ClassifierFileError(f"{os.path.basename(path)}: metadata is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise ClassifierFileError(f"{os.path.basename(path)}: format={meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("version", 0)) > VERSION:
        raise ClassifierFileError(f"{os.path.basename(path)}: version {meta.get('version')} is newer than this "
                                  f"Guidance Lab reads ({VERSION}); update the pack")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ClassifierFileError(f"{os.path.basename(path)}: metadata lacks {missing}")
    if meta["architecture"] not in ARCHITECTURES:
        raise ClassifierFileError(f"{os.path.basename(path)}: architecture={meta['architecture']!r}; "
                                  f"known: {', '.join(ARCHITECTURES)}")
    try:
        input_scaling_of(meta)
    except GuidanceConfigError as e:
        raise ClassifierFileError(f"{os.path.basename(path)}: {e}") from None
    return meta


def load_classifier(path: str, device="cpu"):
    """(module in eval mode, metadata). Weights are plain (non-inference) tensors, so gradients work
    even if this is called under torch.inference_mode."""
    meta = read_metadata(path)
    cfg_cls, net_cls = ARCHITECTURES[meta["architecture"]]
    with torch.inference_mode(False):
        module = net_cls(cfg_cls.from_dict(meta["config"]))
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                state = {k: f.get_tensor(k).clone() for k in f.keys()}
            module.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError) as e:
            raise ClassifierFileError(f"{os.path.basename(path)}: weights do not match its config ({e})") from None
        except Exception as e:
            raise ClassifierFileError(f"{os.path.basename(path)} cannot be read as safetensors: {e}") from None
    module.eval().requires_grad_(False)
    if len(meta["labels"]) != module.config.num_classes:
        raise ClassifierFileError(f"{os.path.basename(path)}: {len(meta['labels'])} labels but the network has "
                                  f"{module.config.num_classes} outputs")
    return module, meta
