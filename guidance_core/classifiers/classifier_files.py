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
Reads are bounded before anything large is parsed or allocated: the safetensors header (at most 8 MiB), the labels
(at most 100000, each at most 1000 characters), the metadata's types, the network the config asks for (built on the
meta device and compared with the file's tensor shapes first); NaN or infinite weights are refused.
"""

from __future__ import annotations

import json
import math
import os

import torch
from safetensors import safe_open

from .. import parameterization
from ..errors import ClassifierFileError, GuidanceConfigError
from ..files import atomic_save, check_safetensors
from .noise_aware import ClassifierConfig, NoiseAwareClassifier

FORMAT, VERSION = "guidance-lab-classifier", 1
META_KEY = "guidance_lab"
ARCHITECTURES = {"noise_aware": (ClassifierConfig, NoiseAwareClassifier)}
REQUIRED = ("format", "version", "architecture", "config", "labels", "latent_channels", "parameterization")
# Bounds that keep a hostile or damaged file from costing memory or time before it is refused: the number and
# length of labels, the network the config asks for (the header's bound is files.MAX_HEADER_BYTES).
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 1_000
MAX_PARAMETERS = 2_000_000_000
PARAMETERIZATIONS = ("eps", "v", "flow")


def input_scaling_of(meta: dict) -> dict:
    """The classifier's input scaling: its `input_scaling` field, or for files without one the convention
    they were trained with (parameterization.default_input_scaling)."""
    if "input_scaling" in meta:
        return parameterization.check_input_scaling(meta["input_scaling"])
    return parameterization.default_input_scaling(meta.get("parameterization", "eps"))


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


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_metadata_types(name: str, meta: dict) -> None:
    """The fields guidance reads, with the types and sizes it accepts (a damaged or hostile file is refused here,
    not by a TypeError somewhere later)."""
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels:
        raise ClassifierFileError(f"{name}: labels={_short(labels)}; expected a non-empty list of label names")
    if len(labels) > MAX_LABELS:
        raise ClassifierFileError(f"{name}: {len(labels)} labels; at most {MAX_LABELS} are accepted")
    for i, lb in enumerate(labels):
        if isinstance(lb, bool) or not isinstance(lb, (str, int)) or len(str(lb)) > MAX_LABEL_CHARS:
            raise ClassifierFileError(
                f"{name}: labels[{i}]={_short(lb)}; expected a name (text or number) of "
                f"at most {MAX_LABEL_CHARS} characters"
            )
    if not isinstance(meta["config"], dict):
        raise ClassifierFileError(
            f"{name}: config={_short(meta['config'])}; expected an object of the architecture's settings"
        )
    ch = meta["latent_channels"]
    if isinstance(ch, bool) or not isinstance(ch, int) or not 1 <= ch <= 4096:
        raise ClassifierFileError(f"{name}: latent_channels={ch!r}; expected a whole number from 1 to 4096")
    if meta["parameterization"] not in PARAMETERIZATIONS:
        raise ClassifierFileError(
            f"{name}: parameterization={meta['parameterization']!r}; accepted: {', '.join(PARAMETERIZATIONS)}"
        )
    v = meta["version"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ClassifierFileError(f"{name}: version={v!r}; expected a whole number")
    for key in ("sigma_min", "sigma_max"):
        x = meta.get(key)
        if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)):
            raise ClassifierFileError(f"{name}: {key}={x!r}; expected a finite number")


def _build_network(name: str, meta: dict, shapes: dict):
    """The architecture's network for the file's config, checked against the file's tensor shapes on the meta
    device first (no memory is allocated for a config that does not match its weights or asks for a huge network)."""
    cfg_cls, net_cls = ARCHITECTURES[meta["architecture"]]
    try:
        cfg = cfg_cls.from_dict(meta["config"])
        with torch.device("meta"):
            probe = net_cls(cfg)
    except (TypeError, ValueError, KeyError, RuntimeError, ZeroDivisionError, OverflowError) as e:
        raise ClassifierFileError(
            f"{name}: config {json.dumps(meta['config'])[:200]} does not build a "
            f"{meta['architecture']} network ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    want = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    n_params = sum(math.prod(s) for s in want.values())
    if n_params > MAX_PARAMETERS:
        raise ClassifierFileError(
            f"{name}: its config asks for {n_params} parameters; at most {MAX_PARAMETERS} are accepted"
        )
    if want != shapes:
        diff = sorted(k for k in set(want) | set(shapes) if want.get(k) != shapes.get(k))
        raise ClassifierFileError(
            f"{name}: weights do not match its config: {len(diff)} tensors differ, e.g. "
            f"{diff[0]!r}: the config needs {want.get(diff[0])}, the file has "
            f"{shapes.get(diff[0])}"
        )
    return net_cls(cfg)


def read_metadata(path: str) -> dict:
    check_safetensors(path)
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
        raise ClassifierFileError(
            f"{os.path.basename(path)}: version {meta.get('version')} is newer than this "
            f"Guidance Lab reads ({VERSION}); update the pack"
        )
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ClassifierFileError(f"{os.path.basename(path)}: metadata lacks {missing}")
    _check_metadata_types(os.path.basename(path), meta)
    if meta["architecture"] not in ARCHITECTURES:
        raise ClassifierFileError(
            f"{os.path.basename(path)}: architecture={meta['architecture']!r}; known: {', '.join(ARCHITECTURES)}"
        )
    try:
        input_scaling_of(meta)
    except GuidanceConfigError as e:
        raise ClassifierFileError(f"{os.path.basename(path)}: {e}") from None
    return meta


def load_classifier(path: str, device="cpu"):
    """(module in eval mode, metadata). Weights are plain (non-inference) tensors, so gradients work
    even if this is called under torch.inference_mode."""
    meta = read_metadata(path)
    name = os.path.basename(path)
    with torch.inference_mode(False):
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types
            raise ClassifierFileError(f"{name} cannot be read as safetensors: {e}") from None
        module = _build_network(name, meta, shapes)
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                state = {k: f.get_tensor(k).clone() for k in f.keys()}
            module.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError) as e:
            raise ClassifierFileError(f"{name}: weights do not match its config ({e})") from None
        except Exception as e:
            raise ClassifierFileError(f"{name} cannot be read as safetensors: {e}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ClassifierFileError(
            f"{name}: {len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]!r}); "
            "the file is damaged or its training diverged: retrain or restore it"
        )
    module.eval().requires_grad_(False)
    if len(meta["labels"]) != module.config.num_classes:
        raise ClassifierFileError(
            f"{os.path.basename(path)}: {len(meta['labels'])} labels but the network has "
            f"{module.config.num_classes} outputs"
        )
    return module, meta
