"""The shipped workflows (workflows/*.json): the frontend's workflow schema, link consistency, and every node and
widget value against the live node definitions of a real ComfyUI with the pack installed."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
NOTES = {"Note", "MarkdownNote"}
TITLE_H = 30  # LiteGraph draws a node's title bar above its position

# The frontend (comfyui-frontend-package) ships its schema as zod code, not JSON Schema; this mirrors its
# `zComfyWorkflow` (format 0.4) with the same required fields and types. test_schema_mirrors_the_frontend checks
# that the shipped bundle still declares these fields.
NODE_ID = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
SLOT = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^-?\d+$"}]}
DATA_TYPE = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "number"}]}
VEC2 = {"anyOf": [{"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                  {"type": "object", "required": ["0", "1"]}]}
MODEL_FILE = {"type": "object", "required": ["name", "url", "directory"],
              "properties": {"name": {"type": "string"}, "url": {"type": "string", "format": "uri", "pattern": "^https?://"},
                             "hash": {"type": "string"}, "hash_type": {"type": "string"}, "directory": {"type": "string"}}}
WORKFLOW_SCHEMA = {
    "type": "object",
    "required": ["last_node_id", "last_link_id", "nodes", "links", "version"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "revision": {"type": "number"},
        "last_node_id": NODE_ID,
        "last_link_id": {"type": "number"},
        "version": {"type": "number"},
        "config": {"type": ["object", "null"]},
        "extra": {"type": ["object", "null"], "properties": {
            "ds": {"type": "object", "required": ["scale", "offset"],
                   "properties": {"scale": {"type": "number"}, "offset": VEC2}},
            "frontendVersion": {"type": "string"}}},
        "groups": {"type": "array", "items": {"type": "object", "required": ["title", "bounding"]}},
        "models": {"type": "array", "items": MODEL_FILE},
        "links": {"type": "array", "items": {
            "type": "array", "minItems": 6, "maxItems": 6,
            "prefixItems": [{"type": "number"}, NODE_ID, SLOT, NODE_ID, SLOT, DATA_TYPE]}},
        "nodes": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "type", "pos", "size", "flags", "order", "mode", "properties"],
            "properties": {
                "id": NODE_ID, "type": {"type": "string"}, "pos": VEC2, "size": VEC2,
                "flags": {"type": "object", "properties": {k: {"type": "boolean"} for k in (
                    "collapsed", "pinned", "allow_interaction", "horizontal", "skip_repeated_outputs")}},
                "order": {"type": "number"}, "mode": {"type": "number"},
                "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
                    "name": {"type": "string"}, "type": DATA_TYPE, "link": {"type": ["number", "null"]},
                    "slot_index": SLOT}}},
                "outputs": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
                    "name": {"type": "string"}, "type": DATA_TYPE,
                    "links": {"type": ["array", "null"], "items": {"type": "number"}}, "slot_index": SLOT}}},
                "properties": {"type": "object", "properties": {
                    "Node name for S&R": {"type": "string"}, "models": {"type": "array", "items": MODEL_FILE}}},
                "widgets_values": {"type": ["array", "object"]},
                "color": {"type": "string"}, "bgcolor": {"type": "string"},
            }}},
    },
}


def frontend_bundle() -> str | None:
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    assets = Path(comfyui_frontend_package.__file__).parent / "static" / "assets"
    for f in sorted(assets.glob("index-*.js")):
        text = f.read_text(errors="replace")
        if "const zComfyWorkflow" in text:
            return text
    return None


def test_workflows_exist():
    names = {p.stem for p in WORKFLOWS}
    assert {"pila_wan2.1_t2v_1.3B", "pila_wan2.2_t2v_A14B", "pila_ab_compare_wan2.1"} <= names


def test_schema_mirrors_the_frontend():
    text = frontend_bundle()
    if text is None:
        pytest.skip("comfyui-frontend-package is not installed (pip install comfyui-frontend-package)")
    node = text[text.index("const zComfyNode = z.object({"):]
    node = node[:node.index("}).passthrough()")]
    for key in WORKFLOW_SCHEMA["properties"]["nodes"]["items"]["required"]:
        assert re.search(rf"\b{key}: ", node), f"zComfyNode no longer declares {key}"
    wf = text[text.index("const zComfyWorkflow = "):]
    wf = wf[:wf.index("}).passthrough()")]
    for key in WORKFLOW_SCHEMA["required"]:
        assert re.search(rf"\b{key}: ", wf), f"zComfyWorkflow no longer declares {key}"
    assert "const zComfyLink = z.tuple([" in text


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_frontend_schema_and_links_are_consistent(path):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    wf = json.loads(path.read_text())
    jsonschema.validate(wf, WORKFLOW_SCHEMA, format_checker=jsonschema.FormatChecker())
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and max(nodes) <= wf["last_node_id"]
    for lid, src, sslot, dst, dslot, typ in wf["links"]:
        assert lid <= wf["last_link_id"]
        out, inp = nodes[src]["outputs"][sslot], nodes[dst]["inputs"][dslot]
        assert lid in out["links"] and inp["link"] == lid, f"link {lid} is not recorded on both ends"
        assert out["type"] == typ and (inp["type"] == typ or "widget" in inp), f"link {lid}: {out['type']} -> {inp['type']}"
    linked = {lid for lid, *_ in wf["links"]}
    for n in wf["nodes"]:
        for i in n.get("inputs", []):
            assert i["link"] is None or i["link"] in linked
        for o in n.get("outputs", []):
            assert set(o["links"] or []) <= linked


# ---- against the live node definitions ---------------------------------------------------------------------------
def widget_specs(info: dict) -> list[tuple[str, object, dict]]:
    """The widgets the frontend creates for a node, in order (control_after_generate adds one after its INT)."""
    specs = []
    for section in ("required", "optional"):
        for name in info.get("input_order", {}).get(section, []):
            spec = info["input"][section][name]
            typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(typ, list) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                if opts.get("forceInput"):
                    continue
                specs.append((name, typ, opts))
                if opts.get("control_after_generate"):
                    specs.append((f"{name} (control after generate)", "CONTROL", {}))
                if opts.get("image_upload"):  # the frontend's upload button is a widget too (value "image")
                    specs.append((f"{name} (upload)", "UPLOAD", {}))
    return specs


def check_value(node: str, name: str, typ, opts: dict, v):
    where = f"{node}.{name} = {v!r}"
    if typ == "CONTROL":
        assert v in CONTROL_VALUES, where
    elif typ == "UPLOAD":
        assert v == "image", where
    elif isinstance(typ, list) or typ == "COMBO":
        options = typ if isinstance(typ, list) else opts.get("options", [])
        assert v in options, f"{where} is not one of {options[:12]}"
    elif typ == "INT":
        assert isinstance(v, int) and not isinstance(v, bool), where
        assert opts.get("min", v) <= v <= opts.get("max", v), f"{where} outside [{opts.get('min')}, {opts.get('max')}]"
    elif typ == "FLOAT":
        assert isinstance(v, (int, float)) and not isinstance(v, bool), where
        assert opts.get("min", v) <= v <= opts.get("max", v), f"{where} outside [{opts.get('min')}, {opts.get('max')}]"
    elif typ == "STRING":
        assert isinstance(v, str), where
    elif typ == "BOOLEAN":
        assert isinstance(v, bool), where


@pytest.mark.comfyui
@pytest.mark.slow
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_node_and_widget_value_is_legal(path, object_info):
    wf = json.loads(path.read_text())
    for n in wf["nodes"]:
        t = n["type"]
        if t in NOTES:  # frontend-only nodes, never sent to the server
            continue
        assert t in object_info, f"{path.name}: node type {t} is unknown to ComfyUI (missing node)"
        info = object_info[t]
        specs = widget_specs(info)
        values = n.get("widgets_values", [])
        assert len(values) == len(specs), f"{path.name}: {t} has {len(values)} widget values, expected {[s[0] for s in specs]}"
        for (name, typ, opts), v in zip(specs, values):
            check_value(t, name, typ, opts, v)
        all_inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        widget_names = {s[0] for s in specs}
        for i in n.get("inputs", []):
            assert i["name"] in all_inputs, f"{path.name}: {t} has no input {i['name']}"
            if "widget" in i:
                assert i["name"] in widget_names, f"{path.name}: {t}.{i['name']} is not a widget"
            else:
                want = all_inputs[i["name"]][0]
                assert want == i["type"] or want == "*", f"{path.name}: {t}.{i['name']} is {want}, file says {i['type']}"
        for k, o in enumerate(n.get("outputs", [])):
            assert info["output"][k] == o["type"], f"{path.name}: {t} output {k} is {info['output'][k]}, file says {o['type']}"


@pytest.mark.comfyui
@pytest.mark.slow
def test_workflows_are_served_as_templates(comfy_server):
    import urllib.request

    listed = comfy_server.get("/workflow_templates")
    assert sorted(listed.get("comfyui-pila", [])) == sorted(p.stem for p in WORKFLOWS)
    for p in WORKFLOWS:
        served = comfy_server.get(f"/api/workflow_templates/comfyui-pila/{p.name}")
        assert served == json.loads(p.read_text())
        # the template browser asks for <name>.jpg next to each template (a 404 otherwise)
        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/comfyui-pila/{p.stem}.jpg") as r:
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff", f"{p.stem}.jpg is not a JPEG"


# ---- like ComfyUI's own templates --------------------------------------------------------------------------------
def box(n: dict) -> tuple[float, float, float, float]:
    x, y = n["pos"]
    w, h = n["size"]
    return x, y - TITLE_H, x + w, y + h


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_every_workflow_is_built_by_the_generator():
    """workflows/build_workflows.py is the single source of the JSON files and their thumbnails."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "workflows" / "build_workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert sorted(mod.WORKFLOWS) == sorted(p.stem for p in WORKFLOWS)
    for name, build in mod.WORKFLOWS.items():
        assert json.loads(json.dumps(build())) == json.loads((REPO / "workflows" / f"{name}.json").read_text()), \
            f"{name}.json is out of date: run python workflows/build_workflows.py"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_templates_are_laid_out_like_the_official_ones(path):
    wf = json.loads(path.read_text())
    nodes = wf["nodes"]
    assert (path.parent / f"{path.stem}.jpg").is_file(), "a thumbnail <name>.jpg for the template browser"
    # readable titles on every node, notes and groups are added after the executable nodes (stable ids)
    assert all(n.get("title") for n in nodes), [n["type"] for n in nodes if not n.get("title")]
    first_note = min(n["id"] for n in nodes if n["type"] in NOTES)
    assert all(n["id"] < first_note for n in nodes if n["type"] not in NOTES)
    # no two nodes overlap (title bars included), no two groups overlap
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not overlap(box(a), box(b)), f"{a.get('title')} overlaps {b.get('title')}"
    groups = wf["groups"]
    assert len(groups) >= 5 and all(g["title"].startswith(("Step", "Diagnostics")) for g in groups)
    gboxes = [(x, y, x + w, y + h) for x, y, w, h in (g["bounding"] for g in groups)]
    for i, a in enumerate(gboxes):
        for b in gboxes[i + 1:]:
            assert not overlap(a, b), (groups[i]["title"], a, b)
    # every executable node sits inside exactly one group; notes sit outside all
    for n in nodes:
        bx = box(n)
        inside = [g["title"] for g, gb in zip(groups, gboxes)
                  if gb[0] <= bx[0] and gb[1] <= bx[1] and bx[2] <= gb[2] and bx[3] <= gb[3]]
        assert len(inside) == (0 if n["type"] in NOTES else 1), (n.get("title"), inside)
    # a Markdown note with the model files and their folders, and one saying that no PILA weights exist
    notes = "\n".join(n["widgets_values"][0] for n in nodes if n["type"] in NOTES)
    assert "No PILA adapter weights have been published" in notes and "training/" in notes
    for n in nodes:
        for m in n.get("properties", {}).get("models", []):
            assert m["name"] in notes and f"models/{m['directory']}/" in notes, m["name"]
    # seeds randomize
    for n in nodes:
        if n["type"] in ("KSampler", "PILAFlowCorrectionSampler", "PILAFlowCorrectionSamplerWan22", "PrimitiveInt"):
            assert n["widgets_values"][1] == "randomize", (n["title"], n["widgets_values"][:2])
