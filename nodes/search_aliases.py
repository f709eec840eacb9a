"""Node search aliases: the other names users type into the node search (abbreviations, paper names, the names of
similar nodes of other packs). ComfyUI's node schema has `search_aliases` from 0.33.0 on (io.Schema field, sent in
/object_info, searched by the frontend); on an older ComfyUI (0.3.52, 0.3.75) the schema has no such field and the
nodes get none: feature-detected, never an error."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

# node_id -> aliases
ALIASES = {
    "GuidanceLabSchedule": [
        "guidance schedule",
        "CFG schedule",
        "guidance interval",
        "limited interval guidance",
        "dynamic CFG",
        "adaptive guidance",
    ],
    "GuidanceLabTerm": ["composable diffusion", "prompt weight", "multi prompt guidance", "conditioning term"],
    "GuidanceLabPerturbedTerm": [
        "PAG",
        "perturbed attention guidance",
        "SEG",
        "smoothed energy guidance",
        "SLG",
        "skip layer guidance",
    ],
    "GuidanceLabModelTerm": ["autoguidance", "auto guidance", "bad model guidance", "weak model guidance"],
    "GuidanceLabNAGTerm": ["NAG", "normalized attention guidance", "negative prompt at cfg 1"],
    "GuidanceLabPostProcess": [
        "CFG rescale",
        "RescaleCFG",
        "CFG-Zero*",
        "CFGZeroStar",
        "APG",
        "adaptive projected guidance",
        "Perp-Neg",
    ],
    "GuidanceLabCFGGuider": ["CFG", "classifier-free guidance", "CFG guider"],
    "GuidanceLabCFGPatch": ["CFG", "classifier-free guidance", "KSampler CFG schedule"],
    "GuidanceLabDistilledGuidance": ["FluxGuidance schedule", "distilled guidance", "Flux guidance"],
    "GuidanceLabClassifierLoader": ["classifier guidance", "load classifier"],
    "GuidanceLabClassifierGuidance": ["classifier guidance", "gradient guidance", "Dhariwal Nichol"],
    "GuidanceLabClassifierSampler": ["classifier guidance", "guided sampler"],
    "GuidanceLabCLIPClassifierLoader": ["CLIP guidance", "zero-shot classifier", "open_clip"],
    "GuidanceLabTrainClassifier": ["train classifier", "noise-aware classifier"],
    "GuidanceLabToyModelLoader": ["Fashion-MNIST", "toy model"],
    "GuidanceLabToyClass": ["Fashion-MNIST", "toy prompt"],
    "GuidanceLabToyDecode": ["Fashion-MNIST", "toy decode"],
}


def supported() -> bool:
    """Whether the running ComfyUI's node schema has search aliases."""
    return dataclasses.is_dataclass(io.Schema) and "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}


def with_search_aliases(nodes: list) -> list:
    """The node classes, each one's define_schema adding its ALIASES where the schema supports them (the classes
    are changed in place, once; without support they are returned unchanged)."""
    if not supported():
        return list(nodes)
    for node in nodes:
        define = node.__dict__.get("define_schema")
        if define is None or getattr(define.__func__, "_guidance_lab_aliases", False):
            continue

        def define_schema(cls, _define=define.__func__):
            schema = _define(cls)
            schema.search_aliases = list(
                dict.fromkeys([*(schema.search_aliases or []), *ALIASES.get(schema.node_id, [])])
            )
            return schema

        define_schema._guidance_lab_aliases = True
        node.define_schema = classmethod(define_schema)
    return list(nodes)
