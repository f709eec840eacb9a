"""The pack's subgraph blueprints, subgraphs/<name>.json: built in ComfyUI's own frontend (headless Chromium against a
real server) from the pack's nodes and stock nodes, converted to a subgraph by the frontend and saved the way its
"Publish subgraph" command saves one (one subgraph node in a graph with the subgraph's definition). ComfyUI 0.3.75
and later serve custom_nodes/<pack>/subgraphs/*.json on GET /global_subgraphs and the frontend lists each under its
file name in the node library ("Subgraph Blueprints"); 0.3.52 has no such route and ignores the folder. Not shipped.

    .venv/bin/python -m scripts.make_blueprints
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from devkit import ROOT

SUBGRAPHS = os.path.join(ROOT, "subgraphs")

# name: the blueprint's file name and display name. nodes: (key, type, position, widget values); links:
# (from key, output slot name, to key, input name); the nodes under `inner` become the subgraph, the others only give
# it its inputs and output (a link crossing the boundary is a subgraph input or output); inputs / outputs: the
# subgraph slots' names, by the inner slot ("<node type>.<slot name>") each one links to.
BLUEPRINTS = [
    {
        "name": "Autoguidance sampler (Guidance Lab)",
        "description": "Autoguidance (Karras et al. 2024) on SamplerCustomAdvanced: the CFG Guider at cfg 1 with a "
        "Model Term of weight 1 (Karras's w = 2) whose model is a weaker version of the sampled one "
        "(smaller or trained less, same family). Open the subgraph to change the seed, steps, "
        "sampler and weight.",
        "nodes": [
            ("model", "GuidanceLabToyModelLoader", [0, 0], {}),
            ("weak", "GuidanceLabToyModelLoader", [0, 150], {"toy_model": "fashion_diffusion_weak.safetensors"}),
            ("cond", "GuidanceLabToyClass", [0, 300], {}),
            ("latent", "EmptyLatentImage", [0, 450], {}),
            ("term", "GuidanceLabModelTerm", [350, 150], {"weight": 1.0}),
            ("guider", "GuidanceLabCFGGuider", [650, 0], {"cfg": 1.0, "neg_scale": 0.0}),
            ("noise", "RandomNoise", [650, 350], {"noise_seed": 0, "control_after_generate": "fixed"}),
            ("select", "KSamplerSelect", [650, 500], {"sampler_name": "euler"}),
            ("sigmas", "BasicScheduler", [650, 600], {"scheduler": "normal", "steps": 20, "denoise": 1.0}),
            ("sample", "SamplerCustomAdvanced", [1000, 200], {}),
            ("decode", "GuidanceLabToyDecode", [1350, 200], {}),
        ],
        "links": [
            ("model", "model", "guider", "model"),
            ("model", "model", "sigmas", "model"),
            ("weak", "model", "term", "model"),
            ("term", "terms", "guider", "terms"),
            ("cond", "conditioning", "guider", "positive"),
            ("noise", "NOISE", "sample", "noise"),
            ("guider", "guider", "sample", "guider"),
            ("select", "SAMPLER", "sample", "sampler"),
            ("sigmas", "SIGMAS", "sample", "sigmas"),
            ("latent", "LATENT", "sample", "latent_image"),
            ("sample", 0, "decode", "samples"),
        ],
        "inner": ["term", "guider", "noise", "select", "sigmas", "sample"],
        "inputs": {
            "GuidanceLabCFGGuider.model": "model",
            "GuidanceLabModelTerm.model": "weak_model",
            "GuidanceLabCFGGuider.positive": "positive",
            "SamplerCustomAdvanced.latent_image": "latent_image",
        },
        "outputs": {"SamplerCustomAdvanced.output": "LATENT"},
    },
    {
        "name": "CFG with schedule (Guidance Lab)",
        "description": "The stock KSampler with a per-step CFG schedule: a Guidance Schedule (cosine, full strength "
        "at high noise down to 0.25 of it) on a CFG Patch. Open the subgraph to change the schedule, "
        "cfg, seed and steps.",
        "nodes": [
            ("model", "GuidanceLabToyModelLoader", [0, 0], {}),
            ("pos", "GuidanceLabToyClass", [0, 150], {}),
            ("neg", "GuidanceLabToyClass", [0, 300], {"label": "empty"}),
            ("latent", "EmptyLatentImage", [0, 450], {}),
            ("schedule", "GuidanceLabSchedule", [350, 0], {"kind": "cosine", "start": 1.0, "end": 0.25}),
            ("patch", "GuidanceLabCFGPatch", [700, 0], {"neg_scale": 0.0}),
            (
                "ksampler",
                "KSampler",
                [1000, 150],
                {
                    "seed": 0,
                    "control_after_generate": "fixed",
                    "steps": 20,
                    "cfg": 5.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                },
            ),
            ("decode", "GuidanceLabToyDecode", [1350, 150], {}),
        ],
        "links": [
            ("model", "model", "patch", "model"),
            ("schedule", "schedule", "patch", "cfg_schedule"),
            ("patch", "model", "ksampler", "model"),
            ("pos", "conditioning", "ksampler", "positive"),
            ("neg", "conditioning", "ksampler", "negative"),
            ("latent", "LATENT", "ksampler", "latent_image"),
            ("ksampler", "LATENT", "decode", "samples"),
        ],
        "inner": ["schedule", "patch", "ksampler"],
        "inputs": {
            "GuidanceLabCFGPatch.model": "model",
            "KSampler.positive": "positive",
            "KSampler.negative": "negative",
            "KSampler.latent_image": "latent_image",
        },
        "outputs": {"KSampler.LATENT": "LATENT"},
    },
]

BUILD_JS = """(bp) => {
    app.graph.clear();
    const nodes = {};
    for (const [key, type, pos, widgets] of bp.nodes) {
        const n = LiteGraph.createNode(type);
        if (!n) throw new Error(`no node type ${type}`);
        n.pos = pos;
        app.graph.add(n);
        for (const [name, value] of Object.entries(widgets)) {
            const w = n.widgets?.find((w) => w.name === name);
            if (!w) throw new Error(`${type} has no widget ${name}`);
            w.value = value;
        }
        nodes[key] = n;
    }
    const slot = (list, name) => typeof name === "number" ? name : list.findIndex((s) => s.name === name || s.type === name);
    for (const [from, out, to, inp] of bp.links) {
        const o = slot(nodes[from].outputs, out), i = slot(nodes[to].inputs, inp);
        if (o < 0 || i < 0) throw new Error(`no slot for ${from}.${out} -> ${to}.${inp}`);
        if (!nodes[from].connect(o, nodes[to], i)) throw new Error(`${from}.${out} -> ${to}.${inp} did not connect`);
    }
    const { node, subgraph } = app.graph.convertToSubgraph(new Set(bp.inner.map((k) => nodes[k])));
    // the frontend names a subgraph slot after an inner slot it links to ("model", "model_1", ...): named here by
    // the inner slot ("<node type>.<slot name>") its first link reaches
    const inner = (slot, input) => {
        const link = subgraph.links.get(slot.linkIds[0]);
        const n = subgraph.getNodeById(input ? link.target_id : link.origin_id);
        return `${n.type}.${(input ? n.inputs[link.target_slot] : n.outputs[link.origin_slot]).name}`;
    };
    const made = {};
    for (const [input, slots, outer, names] of [[true, subgraph.inputs, node.inputs, bp.inputs],
                                                [false, subgraph.outputs, node.outputs, bp.outputs]]) {
        slots.forEach((s, i) => {
            const key = inner(s, input), name = names[key];
            if (name === undefined) throw new Error(`no name for the subgraph slot of ${key}`);
            made[key] = s.name;
            for (const x of [s, outer[i]]) { x.name = x.localized_name = name; x.label = undefined; }
        });
    }
    const unused = [...Object.keys(bp.inputs), ...Object.keys(bp.outputs)].filter((k) => !(k in made));
    if (unused.length) throw new Error(`no subgraph slot for ${unused}`);
    subgraph.name = node.title = bp.name;
    const { nodes: serialized, subgraphs } = app.canvas._serializeItems([node]);
    return { made, blueprint: { revision: 0, last_node_id: node.id, last_link_id: 0, nodes: serialized, links: [],
             version: 0.4, definitions: { subgraphs }, extra: { BlueprintDescription: bp.description } } };
}"""


def build(page, bp: dict) -> dict:
    out = page.js(BUILD_JS, bp)
    print(f"{bp['name']}: slots {out['made']} named {bp['inputs'] | bp['outputs']}")
    return out["blueprint"]


def main() -> int:
    from playwright.sync_api import sync_playwright

    from devkit.browser import BROWSER_ARGS, CHROMIUM, Page, tree_args
    from devkit.comfy_server import ComfyServer
    from guidance_core.files import atomic_bytes

    work = tempfile.mkdtemp(prefix="make-blueprints-")
    try:
        with ComfyServer(work, extra_args=tree_args(work)) as srv, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = Page(browser, srv)
            for bp in BLUEPRINTS:
                data = build(page, bp)
                path = os.path.join(SUBGRAPHS, f"{bp['name']}.json")
                atomic_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
                print(f"wrote {path}")
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
