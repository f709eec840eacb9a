"""A small builder of UI-format ComfyUI workflows (what the frontend saves, version 0.4) from node
definitions (/object_info), so that slots, widget order, defaults and the hidden control_after_generate
values come out as the frontend would write them. Used by scripts/make_workflows.py. Not shipped.

    g = Graph(object_info)
    toy = g.add("GuidanceLabToyModelLoader", col=0, toy_model="fashion_diffusion.safetensors")
    pos = g.add("GuidanceLabToyClass", col=1, toy_world=toy["toy_world"], label="Trouser")
    ...
    workflow = g.to_json("toy_cfg_guider")

An input given a node output (`node["name"]` or `node[0]`) is linked; any other value sets the widget;
widgets not given take the node's default (a COMBO without one, its first option, as the frontend does).
"""

from __future__ import annotations

import uuid

from .workflow_api import combo_options, has_control_widget, input_options, input_type, is_widget, ordered_inputs

# Sizes the ComfyUI frontend (1.32.9) gives a new node of these types; others are estimated the same way
# (20 px per slot row, 24 px per widget, 14 px of header/padding). The frontend enlarges a loaded node
# that is smaller than it needs, so these only decide the layout.
SIZES = {
    "GuidanceLabToyModelLoader": (300, 78),
    "GuidanceLabToyClass": (310, 82),
    "GuidanceLabToyDecode": (275, 58),
    "GuidanceLabTerm": (340, 252),
    "GuidanceLabSchedule": (340, 452),
    "GuidanceLabCFGGuider": (340, 376),
    "GuidanceLabCFGPatch": (340, 292),
    "GuidanceLabPostProcess": (275, 250),
    "GuidanceLabClassifierLoader": (320, 58),
    "GuidanceLabClassifierGuidance": (400, 286),
    "GuidanceLabClassifierSampler": (400, 306),
    "GuidanceLabCLIPClassifierLoader": (400, 232),
    "KSampler": (300, 262),
    "SamplerCustomAdvanced": (240, 106),
    "KSamplerSelect": (270, 58),
    "BasicScheduler": (270, 106),
    "RandomNoise": (270, 82),
    "EmptyLatentImage": (270, 106),
    "SaveImage": (300, 300),
    "CheckpointLoaderSimple": (320, 98),
    "CLIPTextEncode": (400, 160),
    "VAEDecode": (210, 46),
    "BasicGuider": (240, 46),
    "PreviewImage": (300, 300),
}
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
OPTIONAL_SLOT_SHAPE = 7  # the frontend draws optional inputs as hollow circles
COL_GAP, ROW_GAP, MARGIN = 70, 50, 40


class Out:
    """Output `slot` of a node: give it as an input to link."""

    def __init__(self, node: Node, slot: int):
        self.node, self.slot = node, slot

    @property
    def type(self) -> str:
        return self.node.output_types[self.slot]


class Node:
    def __init__(self, graph: Graph, nid: int, ctype: str, col: int, title: str | None, size):
        self.graph, self.id, self.type, self.col, self.title = graph, nid, ctype, col, title
        ndef = graph.object_info.get(ctype, {})
        self.output_types = ["COMBO" if isinstance(t, list) else t for t in ndef.get("output", [])]
        self.output_names = list(ndef.get("output_name") or self.output_types)
        self.inputs: list[dict] = []  # UI input slots
        self.widgets_values: list = []
        self.out_links: list[list[int]] = [[] for _ in self.output_types]
        self.size = list(size or SIZES.get(ctype) or self._estimate(ndef))
        self.pos = [0, 0]
        self.extra: dict = {}

    def __getitem__(self, key) -> Out:
        slot = key if isinstance(key, int) else self.output_names.index(key)
        if not 0 <= slot < len(self.output_types):
            raise KeyError(f"{self.type} has no output {key!r}")
        return Out(self, slot)

    @staticmethod
    def _estimate(ndef) -> tuple[int, int]:
        specs = ordered_inputs(ndef) if ndef else []
        slots = sum(1 for _, s, _ in specs if not is_widget(s))
        widgets = sum(1 + int(has_control_widget(n, s)) for n, s, _ in specs if is_widget(s))
        return 300, 14 + 20 * max(slots, len(ndef.get("output", []))) + 24 * widgets


class Graph:
    def __init__(self, object_info: dict):
        self.object_info = object_info
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def add(
        self, ctype: str, col: int = 0, title: str | None = None, size=None, control: str = "fixed", **values
    ) -> Node:
        """A node of type `ctype` in layout column `col`; keyword arguments are its inputs."""
        if ctype not in self.object_info:
            raise KeyError(f"node type {ctype!r} is not in /object_info")
        node = Node(self, len(self.nodes) + 1, ctype, col, title, size)
        self.nodes.append(node)
        specs = ordered_inputs(self.object_info[ctype])
        unknown = set(values) - {n for n, _, _ in specs}
        if unknown:
            raise KeyError(f"{ctype} has no input(s) {sorted(unknown)}; it has {[n for n, _, _ in specs]}")
        slot_inputs, widget_slots = [], []
        for name, spec, required in specs:
            value = values.get(name)
            if is_widget(spec):
                if isinstance(value, Out):
                    raise ValueError(f"{ctype}.{name}: linking a widget input is not supported by this builder")
                if name not in values:
                    value = self._default(ctype, name, spec)
                node.widgets_values.append(value)
                if has_control_widget(name, spec):
                    node.widgets_values.append(control)
                widget_slots.append(
                    {
                        "localized_name": name,
                        "name": name,
                        "type": input_type(spec),
                        "widget": {"name": name},
                        "link": None,
                    }
                )
            else:
                slot = {"localized_name": name, "name": name, "type": input_type(spec), "link": None}
                if not required:
                    slot["shape"] = OPTIONAL_SLOT_SHAPE
                if value is not None:
                    if not isinstance(value, Out):
                        raise ValueError(f"{ctype}.{name} is a {input_type(spec)} slot: give a node output")
                    slot["link"] = self._link(value, node, len(slot_inputs), input_type(spec))
                elif required:
                    raise ValueError(f"{ctype}: required input {name!r} is not connected")
                slot_inputs.append(slot)
        node.inputs = slot_inputs + widget_slots  # the frontend lists slots first, then widget inputs
        return node

    def note(self, text: str, col: int = 0, size=(420, 220), title: str | None = None) -> Node:
        """A MarkdownNote (a frontend-only node: it is not sent to the server)."""
        node = Node(self, len(self.nodes) + 1, "MarkdownNote", col, title, size)
        node.widgets_values = [text]
        node.extra = {"color": NOTE_COLOR, "bgcolor": NOTE_BGCOLOR}
        self.nodes.append(node)
        return node

    def group(self, title: str, nodes: list[Node], color: str = "#3f789e", pad: int = 30):
        """A group box around `nodes` (computed at to_json, after the layout)."""
        self.groups.append({"title": title, "nodes": nodes, "color": color, "pad": pad})

    @staticmethod
    def _default(ctype, name, spec):
        opts = input_options(spec)
        if "default" in opts:
            return opts["default"]
        if input_type(spec) == "COMBO":
            options = combo_options(spec)
            if options:
                return options[0]
        raise ValueError(f"{ctype}.{name} has no default: give a value")

    def _link(self, out: Out, target: Node, target_slot: int, in_type: str) -> int:
        lid = len(self.links) + 1
        if out.type != in_type and "*" not in (out.type, in_type):
            raise TypeError(f"{out.node.type} output {out.slot} ({out.type}) cannot feed {target.type} ({in_type})")
        self.links.append([lid, out.node.id, out.slot, target.id, target_slot, out.type])
        out.node.out_links[out.slot].append(lid)
        return lid

    # ------------------------------------------------------------ layout and JSON

    def _layout(self):
        cols = sorted({n.col for n in self.nodes})
        x = MARGIN
        for c in cols:
            members = [n for n in self.nodes if n.col == c]
            y = MARGIN
            for n in members:
                n.pos = [x, y]
                y += n.size[1] + ROW_GAP
            x += max(n.size[0] for n in members) + COL_GAP

    def _order(self) -> dict[int, int]:
        """Execution order as the frontend saves it: a topological order, ties by id."""
        deps = {n.id: set() for n in self.nodes}
        for _, o, _, t, _, _ in self.links:
            deps[t].add(o)
        order, done = {}, set()
        while len(done) < len(self.nodes):
            ready = sorted(i for i in deps if i not in done and deps[i] <= done)
            if not ready:
                raise ValueError("the graph has a cycle")
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order

    def to_json(self, name: str) -> dict:
        self._layout()
        order = self._order()
        nodes = []
        for n in self.nodes:
            d = {
                "id": n.id,
                "type": n.type,
                "pos": n.pos,
                "size": n.size,
                "flags": {},
                "order": order[n.id],
                "mode": 0,
                "inputs": n.inputs,
                "outputs": [
                    {"localized_name": nm, "name": nm, "type": t, "links": links}
                    for nm, t, links in zip(n.output_names, n.output_types, n.out_links)
                ],
                "properties": {} if n.type == "MarkdownNote" else {"Node name for S&R": n.type},
                "widgets_values": n.widgets_values,
            }
            if n.title:
                d["title"] = n.title
            d.update(n.extra)
            nodes.append(d)
        groups = []
        for i, g in enumerate(self.groups):
            x0 = min(n.pos[0] for n in g["nodes"]) - g["pad"]
            y0 = min(n.pos[1] for n in g["nodes"]) - g["pad"] - 40
            x1 = max(n.pos[0] + n.size[0] for n in g["nodes"]) + g["pad"]
            y1 = max(n.pos[1] + n.size[1] for n in g["nodes"]) + g["pad"]
            groups.append(
                {
                    "id": i + 1,
                    "title": g["title"],
                    "bounding": [x0, y0, x1 - x0, y1 - y0],
                    "color": g["color"],
                    "font_size": 24,
                    "flags": {},
                }
            )
        width = max(n.pos[0] + n.size[0] for n in self.nodes) + MARGIN
        height = max(n.pos[1] + n.size[1] for n in self.nodes) + MARGIN
        # the view a template opens with: everything visible in a 1400x900 window right of the frontend's
        # side bar and below its tab bar, also when the Vue node renderer draws it 1.2x larger
        scale = round(min(1.0, 1250 / (1.2 * width), 720 / (1.2 * height)), 2)
        offset = [round(90 / scale), round(110 / scale)]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"guidance-lab/example_workflows/{name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": groups,
            "config": {},
            "extra": {"ds": {"scale": scale, "offset": offset}},
            "version": 0.4,
        }
