"""Loading edges (issue 12): what the pack does to ComfyUI when a dependency is missing or broken, and
what it leaves of ComfyUI's own model folders.

- open_clip missing / failing to import / listing no architecture: every other node of the pack still
  registers through ComfyUI's own loader (each case in a child python that boots ComfyUI in-process);
  Load CLIP Classifier stays, says why in its description and its architecture list, refuses to run
  with the same message, and the reason is logged at start-up.
- A node whose schema raises is left out with a logged warning; the others load.
- ComfyUI's `classifiers` key keeps the extension set and paths ComfyUI gave it (other packs see the
  same files as without this pack); our own lists filter for our extensions themselves.
"""

import json
import os
import subprocess
import sys

import pytest

from devkit import comfy_host as H
from devkit import python_env

pytestmark = pytest.mark.comfy

CLIP_LOADER = "GuidanceLabCLIPClassifierLoader"
MARK = "GL-CHILD-RESULT "

# Runs in a child python: hides or breaks open_clip, boots ComfyUI with the pack through ComfyUI's loader,
# prints what got registered and what the CLIP loader shows and does.
CHILD = r"""
import json, logging, sys
scenario = sys.argv[1]  # the stand-in open_clip package of the other scenarios is first on PYTHONPATH
if scenario == "missing":
    sys.modules["open_clip"] = None  # `import open_clip` -> ModuleNotFoundError, as without the package
warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger().addHandler(Keep(level=logging.WARNING))
from devkit import comfy_host as H
try:
    H.boot()
    boot_error = None
except RuntimeError as e:
    boot_error = str(e)
import nodes
pack = sorted(k for k, v in nodes.NODE_CLASS_MAPPINGS.items()
              if getattr(v, "RELATIVE_PYTHON_MODULE", "").endswith("guidance-lab"))
info_errors = {}
for k in pack:  # what /object_info serves
    try:
        nodes.NODE_CLASS_MAPPINGS[k].GET_NODE_INFO_V1()
    except Exception as e:
        info_errors[k] = repr(e)
clip = None
cls = nodes.NODE_CLASS_MAPPINGS.get("GuidanceLabCLIPClassifierLoader")
if cls is not None:
    info = cls.GET_NODE_INFO_V1()
    arch = info["input"]["required"]["architecture"][1]
    try:
        cls.execute(architecture=arch["options"][0], checkpoint="x.safetensors", labels="a\nb", decode="linear",
                    gradient="detached", cutouts=0, tau=0.0)
        error = None
    except Exception as e:
        error = [type(e).__name__, str(e)]
    clip = {"description": info["description"], "options": arch["options"], "default": arch.get("default"),
            "execute_error": error}
print("GL-CHILD-RESULT " + json.dumps({"boot_error": boot_error, "pack": pack, "info_errors": info_errors,
                                       "clip": clip, "warnings": warnings}))
"""

FAKES = {
    # open_clip installed but its import fails (e.g. torchvision not matching torch)
    "broken": {"__init__.py": "raise RuntimeError('operator torchvision::nms does not exist')\n"},
    # open_clip that lists no architecture (e.g. its model_configs folder lost)
    "empty": {
        "__init__.py": "__version__ = '0.0-test'\n\ndef list_models():\n    return []\n",
        "factory.py": "def get_model_config(name):\n    return None\n",
    },
}
MESSAGES = {
    "missing": "open_clip is not installed: pip install open-clip-torch",
    "broken": "operator torchvision::nms does not exist",
    "empty": "lists no architecture",
}


def boot_child(scenario, tmp_path):
    fake = tmp_path / "fake"
    for name, text in FAKES.get(scenario, {}).items():
        (fake / "open_clip").mkdir(parents=True, exist_ok=True)
        (fake / "open_clip" / name).write_text(text)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, scenario],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=H.ROOT,
        env=python_env(str(fake)),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len(MARK) :])


@pytest.fixture(scope="module")
def full_pack():
    """The pack's node ids when open_clip works (this process)."""
    nodes = H.boot()
    ids = sorted(
        k
        for k, v in nodes.NODE_CLASS_MAPPINGS.items()
        if getattr(v, "RELATIVE_PYTHON_MODULE", "").endswith("guidance-lab")
    )
    assert CLIP_LOADER in ids and "GuidanceLabTrainClassifier" in ids
    return ids


@pytest.mark.parametrize("scenario", ["missing", "broken", "empty"])
def test_without_a_working_open_clip_every_node_loads_and_the_clip_loader_says_why(scenario, full_pack, tmp_path):
    r = boot_child(scenario, tmp_path)
    assert r["boot_error"] is None, r["warnings"][-5:]
    assert r["pack"] == full_pack  # all 13, the CLIP loader included
    assert r["info_errors"] == {}
    msg = MESSAGES[scenario]
    clip = r["clip"]
    assert msg in clip["description"] and "only CLIP guidance needs open_clip" in clip["description"]
    assert len(clip["options"]) == 1 and msg in clip["options"][0] and clip["default"] == clip["options"][0]
    kind, text = clip["execute_error"]
    assert kind == "GuidanceConfigError" and msg in text and "Load CLIP Classifier" in text
    assert any(msg in w and "Load CLIP Classifier" in w for w in r["warnings"]), r["warnings"]


def test_a_node_whose_schema_raises_is_left_out_with_a_warning(caplog):
    H.boot()
    from comfy_api.latest import io

    class GoodNode(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(
                node_id="GLTestGood", inputs=[io.Int.Input("n", tooltip="a number")], outputs=[io.Int.Output()]
            )

        @classmethod
        def execute(cls, n):
            return io.NodeOutput(n)

    class BadNode(GoodNode):
        @classmethod
        def define_schema(cls):
            raise KeyError("no such folder key")

    registry = H.pack_module("nodes")
    with caplog.at_level("WARNING"):
        assert registry.loadable([BadNode, GoodNode]) == [GoodNode]
    assert any("BadNode" in r.getMessage() and "no such folder key" in r.getMessage() for r in caplog.records)
    assert registry.loadable(registry.NODES) == registry.NODES  # ours all build


def comfyui_folder(key):
    """(paths, extensions) that ComfyUI alone gives a folder key: a fresh folder_paths, no custom nodes."""
    code = (
        "import json, folder_paths\np, e = folder_paths.folder_names_and_paths[%r]\n"
        "print(json.dumps([p, sorted(e)]))" % key
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=H.COMFY, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    paths, exts = json.loads(out.stdout.splitlines()[-1])
    return paths, set(exts)


def test_comfyui_classifiers_folder_is_left_as_comfyui_made_it(tmp_path):
    H.boot()
    import folder_paths

    paths0, exts0 = comfyui_folder("classifiers")
    paths, exts = folder_paths.folder_names_and_paths["classifiers"]
    assert exts == exts0  # ComfyUI 0.3.75: {""}
    assert [p for p in paths if p in paths0] == paths0  # ComfyUI's paths kept, in their order
    names = {"other_pack_model", "x.pt", "y.bin", "ours.safetensors", "old.ckpt", "notes.txt"}
    for n in names:
        (tmp_path / n).write_bytes(b"\x80\x02not a real model")
    folder_paths.add_model_folder_path("classifiers", str(tmp_path))
    try:
        # other packs see exactly what ComfyUI alone would list there
        seen = set(folder_paths.get_filename_list("classifiers")) & names
        assert seen == set(folder_paths.filter_files_extensions(names, exts0))
        # our loader lists only its own extensions and refuses a pickle it lists
        cn = H.pack_module("nodes.classifier_nodes")
        errors = H.pack_module("guidance_core.errors")
        options = cn.GuidanceLabClassifierLoader.define_schema().inputs[0].options
        assert "ours.safetensors" in options and not {"other_pack_model", "y.bin", "notes.txt"} & set(options)
        assert all(os.path.splitext(o)[1] in cn.EXTENSIONS for o in options)  # .pt/.pth/.ckpt: to be refused
        with pytest.raises(errors.GuidanceConfigError, match="refused"):
            H.run_node("GuidanceLabClassifierLoader", classifier_name="old.ckpt")
    finally:
        folder_paths.folder_names_and_paths["classifiers"][0].remove(str(tmp_path))


def test_registering_a_folder_never_narrows_an_existing_key(tmp_path):
    H.boot()
    import folder_paths

    folders = H.pack_module("nodes.folders")
    key = "guidance_lab_test_key"
    try:
        folders.register_model_folder(key, {".safetensors"})  # a new key: ours, explicit extensions
        assert folder_paths.folder_names_and_paths[key] == (
            [os.path.join(folder_paths.models_dir, key)],
            {".safetensors"},
        )
        # a key that exists (ComfyUI's, another pack's, or made by extra_model_paths.yaml) keeps its set and paths
        folder_paths.folder_names_and_paths[key] = ([str(tmp_path)], set())
        folders.register_model_folder(key, {".safetensors"})
        paths, exts = folder_paths.folder_names_and_paths[key]
        assert exts == set() and paths == [str(tmp_path), os.path.join(folder_paths.models_dir, key)]
        (tmp_path / "a.safetensors").write_bytes(b"")
        (tmp_path / "b.pt").write_bytes(b"")
        assert {"a.safetensors", "b.pt"} <= set(folder_paths.get_filename_list(key))
        assert folders.filename_list(key, {".safetensors"}) == ["a.safetensors"]
    finally:
        folder_paths.folder_names_and_paths.pop(key, None)


def test_clip_checkpoint_list_filters_itself_when_the_key_accepts_anything(tmp_path):
    """models/guidance_clip given in extra_model_paths.yaml exists before the pack loads, with no extension set."""
    H.boot()
    import folder_paths

    clip_nodes = H.pack_module("nodes.clip_nodes")
    saved = folder_paths.folder_names_and_paths[clip_nodes.FOLDER]
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "b.pt").write_bytes(b"")
    folder_paths.folder_names_and_paths[clip_nodes.FOLDER] = ([str(tmp_path)], set())
    try:
        inputs = clip_nodes.GuidanceLabCLIPClassifierLoader.define_schema().inputs
        assert inputs[1].options == ["a.safetensors"]
    finally:
        folder_paths.folder_names_and_paths[clip_nodes.FOLDER] = saved


@pytest.mark.parametrize(
    "node_id, input_name, module, folder",
    [
        ("GuidanceLabClassifierLoader", "classifier_name", "nodes.classifier_nodes", "FOLDER"),
        ("GuidanceLabCLIPClassifierLoader", "checkpoint", "nodes.clip_nodes", "FOLDER"),
        ("GuidanceLabToyModelLoader", "toy_model", "nodes.toy_nodes", "TOY_FOLDER"),
    ],
)
def test_loaders_run_again_when_their_file_changes(tmp_path, node_id, input_name, module, folder):
    """Issue 16: every file loader's fingerprint (what ComfyUI compares to decide whether to run it again) changes
    when its file is rewritten, replaced or deleted under a running server, so the cached object is never handed on
    for a file that is no longer there or no longer the same."""
    H.boot()
    import folder_paths

    key = getattr(H.pack_module(module), folder)
    cls = H.node(node_id)
    paths = folder_paths.folder_names_and_paths[key][0]
    paths.insert(0, str(tmp_path))
    try:
        f = tmp_path / "gl_fingerprint_probe.safetensors"
        f.write_bytes(b"first")
        name = f.name
        first = cls.fingerprint_inputs(**{input_name: name})
        assert str(f) in first and cls.fingerprint_inputs(**{input_name: name}) == first  # stable while unchanged
        f.write_bytes(b"second version")  # rewritten in place
        second = cls.fingerprint_inputs(**{input_name: name})
        assert second != first
        f.unlink()
        (tmp_path / "other").write_bytes(b"second version")
        os.replace(tmp_path / "other", f)  # replaced by another file of the same size
        assert cls.fingerprint_inputs(**{input_name: name}) not in (first, second)
        f.unlink()
        assert cls.fingerprint_inputs(**{input_name: name}) == f"missing:{name}"
    finally:
        paths.remove(str(tmp_path))
