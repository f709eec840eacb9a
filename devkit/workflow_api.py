"""Workflow files: the UI format that ComfyUI's frontend saves (and that example_workflows/ holds) to the API
format that POST /prompt takes, and validation of both against a server's /object_info. Not shipped.

    python -m devkit.workflow_api example_workflows/toy_cfg_guider.json [--server URL] > prompt.json

The conversion follows what the frontend's graphToPrompt does (ComfyUI frontend 1.32):
- `widgets_values` are matched to the node's widget inputs in /object_info order (`input_order`: required,
  then optional); an INT or COMBO input with `control_after_generate` (and, by the frontend's legacy rule, an
  INT named seed or noise_seed) is followed by one more value, the "fixed / increment / randomize" choice,
  which is not an input. A dict of widget values (some packs save that) is matched by name.
- an input slot with a link gives [source node id, output slot]; a linked widget input takes the link's
  value instead of its widget value;
- frontend-only nodes: Note / MarkdownNote are dropped, Reroute passes its input through, a PrimitiveNode
  gives its value to the widgets it feeds; a muted node (mode 2) is dropped, a bypassed node (mode 4)
  passes its first input of the output's type through (as the frontend does).
Subgraphs (frontend 1.24+ `definitions.subgraphs`) are not supported and are refused with a clear error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
# COMBO inputs whose options are the files of a model folder: a value missing there is a file the user
# supplies (validate_api reports it apart from the errors).
MODEL_FILE_INPUTS = {
    "CheckpointLoaderSimple": {"ckpt_name"},
    "GuidanceLabClassifierLoader": {"classifier_name"},
    "GuidanceLabCLIPClassifierLoader": {"checkpoint"},
    "GuidanceLabToyModelLoader": {"toy_model"},
}


class WorkflowError(ValueError):
    """A workflow that cannot be converted (unknown node type, broken link, wrong widget count...)."""


# ---------------------------------------------------------------- node definitions (/object_info)


def input_type(spec) -> str:
    """'COMBO' for a list of options (V1) or COMBO (V3), else the type name."""
    t = spec[0]
    return "COMBO" if isinstance(t, list) else str(t)


def input_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec) -> list:
    return list(spec[0]) if isinstance(spec[0], list) else list(input_options(spec).get("options", []))


def ordered_inputs(node_def: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, required) in the order the frontend creates slots and widgets."""
    inputs = node_def.get("input", {})
    order = node_def.get("input_order") or {s: list(inputs.get(s, {})) for s in ("required", "optional")}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            out.append((name, inputs[section][name], section == "required"))
    return out


def is_widget(spec) -> bool:
    return input_type(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput", False)


def has_control_widget(name: str, spec) -> bool:
    """The frontend adds a 'control_after_generate' widget after this one (its value is saved, not sent)."""
    opts = input_options(spec)
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return input_type(spec) == "INT" and name in ("seed", "noise_seed")  # the frontend's legacy rule


def widget_inputs(node_def: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, has_control) of the node's widgets, in widgets_values order."""
    return [(n, s, has_control_widget(n, s)) for n, s, _ in ordered_inputs(node_def) if is_widget(s)]


def widget_value_count(node_def: dict) -> int:
    return sum(1 + int(c) for _, _, c in widget_inputs(node_def))


# ---------------------------------------------------------------- UI -> API


def _links(workflow: dict) -> dict:
    """link id -> (origin id, origin slot, target id, target slot, type); list and dict link forms."""
    out = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            lid, o, os_, t, ts, typ = (
                link[k] for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
            )
        else:
            lid, o, os_, t, ts, typ = link[:6]
        out[lid] = (o, os_, t, ts, typ)
    return out


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt ({id: {class_type, inputs, _meta}}) of a UI-format workflow."""
    if (workflow.get("definitions") or {}).get("subgraphs"):
        raise WorkflowError("workflows with subgraphs are not supported by this converter")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = _links(workflow)

    def resolve(link_id, seen=()):
        """('link', node id, slot) or ('value', v) for what a link delivers, through frontend-only nodes."""
        if link_id in seen:
            raise WorkflowError(f"link {link_id} loops through reroutes/bypassed nodes")
        if link_id not in links:
            raise WorkflowError(f"link {link_id} is not in the workflow's links")
        origin, slot, _, _, typ = links[link_id]
        if origin not in nodes:
            raise WorkflowError(f"link {link_id} comes from node {origin}, which is not in the workflow")
        src = nodes[origin]
        mode = src.get("mode", MODE_ALWAYS)
        if src["type"] == "Reroute":
            up = (src.get("inputs") or [{}])[0].get("link")
            return resolve(up, (*seen, link_id)) if up is not None else None
        if src["type"] == "PrimitiveNode":
            return ("value", (src.get("widgets_values") or [None])[0])
        if mode == MODE_NEVER:
            return None
        if mode == MODE_BYPASS:
            outs = src.get("outputs") or []
            out_type = outs[slot].get("type", typ) if slot < len(outs) else typ
            for inp in src.get("inputs") or []:
                if inp.get("link") is not None and inp.get("type") == out_type:
                    return resolve(inp["link"], (*seen, link_id))
            return None
        return ("link", str(origin), slot)

    prompt = {}
    for node in sorted(nodes.values(), key=lambda n: n.get("order", 0)):
        ctype = node["type"]
        if ctype in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) in (MODE_NEVER, MODE_BYPASS):
            continue
        if ctype not in object_info:
            raise WorkflowError(f"node {node['id']}: type {ctype!r} is not installed on this server")
        ndef = object_info[ctype]
        inputs = {}
        values = node.get("widgets_values")
        widgets = widget_inputs(ndef)
        if isinstance(values, dict):
            for name, _, _ in widgets:
                if name in values:
                    inputs[name] = values[name]
        elif values is not None:
            if len(values) < widget_value_count(ndef):
                raise WorkflowError(
                    f"node {node['id']} ({ctype}): {len(values)} widget values, the node has "
                    f"{widget_value_count(ndef)} ({', '.join(n for n, _, _ in widgets)} + controls)"
                )
            i = 0
            for name, _, control in widgets:
                inputs[name] = values[i]
                i += 2 if control else 1
        for inp in node.get("inputs") or []:
            if inp.get("link") is None:
                continue
            name = (inp.get("widget") or {}).get("name", inp["name"])
            got = resolve(inp["link"])
            if got is None:
                inputs.pop(name, None)
            elif got[0] == "value":
                inputs[name] = got[1]
            else:
                inputs[name] = [got[1], got[2]]
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": ctype,
            "_meta": {"title": node.get("title") or ndef.get("display_name") or ctype},
        }
    return prompt


# ---------------------------------------------------------------- validation


def _type_matches(out_type: str, in_type: str) -> bool:
    """ComfyUI's rule (execution.validate_node_input): equal, '*' on either side, or a shared member
    of comma-separated unions."""
    if out_type == in_type or "*" in (out_type, in_type):
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


def check_value(name: str, spec, value) -> str | None:
    """Why a widget value does not fit its input (None when it does)."""
    t, opts = input_type(spec), input_options(spec)
    if t == "COMBO":
        return None if value in combo_options(spec) else f"{name}={value!r} is not one of the options"
    if t == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name}={value!r} is not an integer"
    elif t == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name}={value!r} is not a finite number"
    elif t == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    elif t == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    if t in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            return f"{name}={value} is below min {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"{name}={value} is above max {opts['max']}"
    return None


def validate_api(prompt: dict, object_info: dict, user_files: dict | None = None):
    """(errors, missing): everything wrong with an API prompt, and the COMBO values that name a file the
    server does not have but that `user_files` ({class_type: {input: ...}}) marks as user-supplied
    (e.g. a checkpoint), as sorted (node id, class_type, input, value) tuples."""
    user_files = user_files or {}
    errors, missing = [], []
    for nid, node in prompt.items():
        ctype = node.get("class_type")
        if ctype not in object_info:
            errors.append(f"node {nid}: unknown type {ctype!r}")
            continue
        ndef = object_info[ctype]
        declared = {n: (s, req) for n, s, req in ordered_inputs(ndef)}
        for name in node["inputs"]:
            if name not in declared:
                errors.append(f"node {nid} ({ctype}): input {name!r} does not exist")
        for name, (spec, required) in declared.items():
            where = f"node {nid} ({ctype})"
            if name not in node["inputs"]:
                if required:
                    errors.append(f"{where}: required input {name!r} is missing")
                continue
            value = node["inputs"][name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = prompt.get(value[0])
                if src is None:
                    errors.append(f"{where}: input {name!r} links to node {value[0]}, which does not exist")
                    continue
                outs = (object_info.get(src["class_type"]) or {}).get("output", [])
                if not (isinstance(value[1], int) and 0 <= value[1] < len(outs)):
                    errors.append(
                        f"{where}: input {name!r} links to output {value[1]} of node {value[0]}, "
                        f"which has {len(outs)} outputs"
                    )
                    continue
                out_t = outs[value[1]]
                out_t = "COMBO" if isinstance(out_t, list) else out_t
                if not _type_matches(out_t, input_type(spec)):
                    errors.append(f"{where}: input {name!r} ({input_type(spec)}) is linked to a {out_t} output")
                continue
            if not is_widget(spec):
                errors.append(f"{where}: input {name!r} ({input_type(spec)}) needs a link, got {value!r}")
                continue
            why = check_value(name, spec, value)
            if why and input_type(spec) == "COMBO" and name in user_files.get(ctype, ()):
                missing.append((nid, ctype, name, value))
            elif why:
                errors.append(f"{where}: {why}")
    return errors, sorted(missing)


def validate_ui(workflow: dict, object_info: dict) -> list[str]:
    """Structure of a UI-format workflow: version, unique ids, links consistent on both ends with the
    slots' types, widget value counts as the frontend would save them."""
    errors = []
    if workflow.get("version") != 0.4:
        errors.append(f"version {workflow.get('version')!r}, expected 0.4")
    nodes = {}
    for n in workflow["nodes"]:
        if n["id"] in nodes:
            errors.append(f"node id {n['id']} is used twice")
        nodes[n["id"]] = n
    links = _links(workflow)
    if workflow.get("last_node_id", 0) < max(nodes, default=0):
        errors.append("last_node_id is smaller than a node id")
    if workflow.get("last_link_id", 0) < max(links, default=0):
        errors.append("last_link_id is smaller than a link id")
    for lid, (o, os_, t, ts, typ) in links.items():
        if o not in nodes or t not in nodes:
            errors.append(f"link {lid}: node {o if o not in nodes else t} does not exist")
            continue
        outs, ins = nodes[o].get("outputs") or [], nodes[t].get("inputs") or []
        if os_ >= len(outs) or lid not in (outs[os_].get("links") or []):
            errors.append(f"link {lid}: output {os_} of node {o} does not list it")
        elif outs[os_]["type"] != typ:
            errors.append(f"link {lid}: type {typ} but output {os_} of node {o} is {outs[os_]['type']}")
        if ts >= len(ins) or ins[ts].get("link") != lid:
            errors.append(f"link {lid}: input {ts} of node {t} does not hold it")
        elif not _type_matches(typ, ins[ts]["type"]):
            errors.append(f"link {lid}: type {typ} into input {ins[ts]['name']} ({ins[ts]['type']}) of node {t}")
    for n in nodes.values():
        for i, inp in enumerate(n.get("inputs") or []):
            if inp.get("link") is not None and inp["link"] not in links:
                errors.append(f"node {n['id']} input {inp['name']}: link {inp['link']} is not in the links")
        for out in n.get("outputs") or []:
            for lid in out.get("links") or []:
                if lid not in links:
                    errors.append(f"node {n['id']} output {out['name']}: link {lid} is not in the links")
        if n["type"] in object_info:
            want = widget_value_count(object_info[n["type"]])
            have = len(n.get("widgets_values") or [])
            if have != want:
                errors.append(f"node {n['id']} ({n['type']}): {have} widget values, the frontend saves {want}")
    return errors


def fetch_object_info(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as r:
        return json.loads(r.read())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="UI-format workflow JSON")
    ap.add_argument("--server", help="a running ComfyUI (http://127.0.0.1:8188); default: start a headless one")
    ap.add_argument("--object-info", help="a saved /object_info JSON instead of a server")
    args = ap.parse_args(argv)
    with open(args.workflow) as f:
        wf = json.load(f)
    if args.object_info:
        with open(args.object_info) as f:
            info = json.load(f)
    elif args.server:
        info = fetch_object_info(args.server)
    else:
        import tempfile

        from .comfy_server import ComfyServer

        with ComfyServer(tempfile.mkdtemp(prefix="workflow-api-")) as srv:
            info = srv.get("/object_info")
    prompt = ui_to_api(wf, info)
    errors, missing = validate_api(prompt, info, user_files=MODEL_FILE_INPUTS)
    for e in validate_ui(wf, info) + errors:
        print("error:", e, file=sys.stderr)
    for nid, ctype, name, value in missing:
        print(
            f"note: node {nid} ({ctype}) {name}={value!r}: put this file in the server's model folder", file=sys.stderr
        )
    json.dump(prompt, sys.stdout, indent=1)
    print()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
