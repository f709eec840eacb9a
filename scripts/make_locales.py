"""The English locale of the pack, locales/en/nodeDefs.json and locales/en/main.json, made from the node classes'
own schemas in a real ComfyUI (so that it never drifts from the nodes: tests/test_locales.py checks that the shipped
files equal what this script makes). Not shipped.

ComfyUI's server (app/custom_node_manager.py, 0.3.52 to 0.33.0) serves custom_nodes/<pack>/locales/<lang>/main.json
plus its nodeDefs.json (under the key "nodeDefs") on GET /i18n; the frontend merges that into its own messages and
reads nodeDefs.<node_id>.display_name / .description / .inputs.<input>.name / .tooltip / .outputs.<index>.name /
.tooltip, and nodeCategories.<category part>. The Chinese (zh) and Japanese (ja) files are written by hand; the test
checks that they cover every entry of the English ones.

    .venv/bin/python -m scripts.make_locales           # write locales/en/
    .venv/bin/python -m scripts.make_locales --check   # exit 1 when the shipped English files differ
    .venv/bin/python -m scripts.make_locales --mark-translated zh ja   # after updating those translations

locales/translated_from.json (outside the language folders, which are all ComfyUI reads) records, per language, the
English text each translated string was made from: the test names every string whose English changed since (a
stale translation), and --mark-translated records the current English once a translator has updated a language.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from devkit import ROOT

LOCALES = os.path.join(ROOT, "locales")
LANGUAGES = ("en", "zh", "ja")
TRANSLATED_FROM = os.path.join(LOCALES, "translated_from.json")
FILES = ("main.json", "nodeDefs.json")


def _entry(name, tooltip) -> dict:
    out = {"name": name}
    if tooltip:
        out["tooltip"] = tooltip
    return out


def node_def(info: dict) -> dict:
    """One node's nodeDefs entry from its /object_info entry (ComfyUI's V1 node info of the V3 schema)."""
    entry = {"display_name": info["display_name"]}
    if info.get("description"):
        entry["description"] = info["description"]
    inputs = {}
    for part in ("required", "optional"):
        for name in info.get("input_order", {}).get(part, info["input"].get(part, {})):
            spec = info["input"][part][name]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            inputs[name] = _entry(opts.get("display_name") or name, opts.get("tooltip"))
    entry["inputs"] = inputs
    tips = info.get("output_tooltips") or [None] * len(info["output"])
    entry["outputs"] = {str(i): _entry(name, tip) for i, (name, tip) in enumerate(zip(info["output_name"], tips))}
    return entry


def categories(infos) -> list[str]:
    """The parts of the nodes' categories ("Guidance Lab/cfg" -> "Guidance Lab", "cfg"), in first-seen order."""
    return list(dict.fromkeys(part for info in infos for part in info["category"].split("/")))


def english() -> dict[str, dict]:
    """{file name: content} of locales/en/, from the schemas of the nodes the pack registers."""
    from devkit import comfy_host as H

    H.boot()
    pack = H.pack_module("nodes")
    infos = [cls.GET_NODE_INFO_V1() for cls in pack.loadable(pack.NODES)]
    return {
        "main.json": {"nodeCategories": {part: part for part in categories(infos)}},
        "nodeDefs.json": {info["name"]: node_def(info) for info in infos},
    }


def dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def _text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def read(lang: str, file: str) -> dict:
    return json.loads(_text(os.path.join(LOCALES, lang, file)))


def english_strings(defs: dict) -> dict[str, str]:
    """{"node.display_name" | "node.description" | "node.inputs.<name>.name|tooltip" | ...: English text} of nodeDefs."""
    out = {}
    for node, entry in defs.items():
        for key in ("display_name", "description"):
            if key in entry:
                out[f"{node}.{key}"] = entry[key]
        for part in ("inputs", "outputs"):
            for name, item in entry.get(part, {}).items():
                for key, text in item.items():
                    out[f"{node}.{part}.{name}.{key}"] = text
    return out


def stale_translations(lang: str) -> list[str]:
    """The strings of `lang` whose English changed (or appeared) since the language was marked translated."""
    marked = json.loads(_text(TRANSLATED_FROM)).get(lang, {}) if os.path.isfile(TRANSLATED_FROM) else {}
    return sorted(k for k, v in english_strings(read("en", "nodeDefs.json")).items() if marked.get(k) != v)


def mark_translated(langs) -> None:
    from guidance_core.files import atomic_bytes

    marked = json.loads(_text(TRANSLATED_FROM)) if os.path.isfile(TRANSLATED_FROM) else {}
    current = english_strings(read("en", "nodeDefs.json"))
    for lang in langs:
        marked[lang] = current
    atomic_bytes(TRANSLATED_FROM, dumps(dict(sorted(marked.items()))).encode("utf-8"))
    print(f"marked {', '.join(langs)} as translated from the current English ({len(current)} strings)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    ap.add_argument(
        "--mark-translated",
        nargs="+",
        metavar="LANG",
        choices=LANGUAGES[1:],
        help="record the current English as what these languages' translations were made from",
    )
    args = ap.parse_args(argv)
    if args.mark_translated:
        mark_translated(args.mark_translated)
        return 0
    from guidance_core.files import atomic_bytes

    stale = []
    for file, data in english().items():
        path = os.path.join(LOCALES, "en", file)
        text = dumps(data)
        if args.check:
            if not os.path.isfile(path) or _text(path) != text:
                stale.append(path)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_bytes(path, text.encode("utf-8"))
        print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from the node schemas: run python -m scripts.make_locales")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
