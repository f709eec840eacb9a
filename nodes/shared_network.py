"""A model term whose MODEL shares its network with the sampled model.

ModelPatcher.clone() shares the network (and its weight backup) between clones; LoRA loaders and other weight-patch
nodes return such clones with other patches. ComfyUI keeps one set of patched weights on a network at a time: loading
both the sampled model and the term's would leave whichever loaded last on it, for the rows of both. So a term on a
shared network is never loaded by ComfyUI: for each of its calls its weights (and object patches, e.g. another
ModelSamplingFlux shift) are put on the network and the sampled model's put back after, both computed once per run by
ComfyUI's own patch code (ModelPatcher.patch_weight_to_device on the original weights).
"""

from __future__ import annotations

import contextlib

import torch

import comfy.utils

from ..guidance_core.errors import GuidanceConfigError


def same_weights(a, b) -> bool:
    """Two patchers of one network whose weights and object patches are the same (what a model term with the
    sampled model's weights reads; other options, wrappers and callbacks may differ)."""
    return (
        a.model is b.model
        and a.patches_uuid == b.patches_uuid
        and a.hook_patches.keys() == b.hook_patches.keys()
        and object_patches_equal(a, b)
    )


def object_patches_equal(a, b) -> bool:
    return a.object_patches.keys() == b.object_patches.keys() and all(
        a.object_patches[k] is b.object_patches[k] for k in a.object_patches
    )


class SharedNetwork:
    """The term patcher `term` on the network of the sampled patcher `sampled`, for one sampling run."""

    def __init__(self, sampled, term, term_no: int):
        self.sampled, self.term, self.term_no = sampled, term, term_no
        self.weights = None  # {key: the term's weight}, for every key either patcher patches
        self.objects = None  # {attribute: the term's object}, for every object either patcher patches

    def _check_loaded(self):
        model = self.sampled.model
        if getattr(model, "model_lowvram", False) or model.current_weight_patches_uuid != self.sampled.patches_uuid:
            raise GuidanceConfigError(
                f"term {self.term_no}: the model term shares its network with the sampled model (a clone with other "
                "weight patches, e.g. another LoRA), and the sampled model is only partly loaded (low VRAM), so its "
                "weights cannot be swapped per call: load the term's weights as a model of their own (another "
                "checkpoint loader node), or free memory"
            )

    def _prepare(self):
        """The term's weights, by ComfyUI's patch code on the original weights; the network left as it was."""
        self._check_loaded()
        model, backup = self.sampled.model, self.sampled.backup  # clones share the backup of the original weights
        keys = set(self.term.patches) | set(self.sampled.patches)
        current = {k: comfy.utils.get_attr(model, k) for k in keys}
        added = [k for k in self.term.patches if k not in backup]
        try:
            with torch.no_grad():
                for k in keys:
                    if k in backup:
                        comfy.utils.set_attr_param(model, k, backup[k].weight.to(current[k].device))
                for k in self.term.patches:
                    self.term.patch_weight_to_device(k, device_to=current[k].device)
                self.weights = {k: comfy.utils.get_attr(model, k) for k in keys}
        finally:
            for k in keys:
                comfy.utils.set_attr_param(model, k, current[k])
            for k in added:
                backup.pop(k, None)
        self.current = current
        names = set(self.term.object_patches) | set(self.sampled.object_patches)
        originals = self.sampled.object_patches_backup
        self.objects = {
            n: self.term.object_patches[n]
            if n in self.term.object_patches
            else originals.get(n, comfy.utils.get_attr(model, n))
            for n in names
        }

    @contextlib.contextmanager
    def active(self):
        """The term's weights and objects on the network inside the block; the sampled model's after it."""
        if self.weights is None:
            self._prepare()
        else:
            self._check_loaded()
        model = self.sampled.model
        saved_objects = {n: comfy.utils.get_attr(model, n) for n in self.objects}
        for k, w in self.weights.items():
            comfy.utils.set_attr_param(model, k, w)
        for n, o in self.objects.items():
            comfy.utils.set_attr(model, n, o)
        try:
            yield
        finally:
            for k, w in self.current.items():
                comfy.utils.set_attr_param(model, k, w)
            for n, o in saved_objects.items():
                comfy.utils.set_attr(model, n, o)
