"""The pack's UI-format templates (workflows/*.json) as API-format prompts, edited by node type.

`to_api(ui, object_info)` converts generically: each node's `widgets_values` are matched, in order, to the widget
inputs its live definition (`/object_info`) declares (required, then optional; a seed's control_after_generate
value is skipped), links are followed through Reroute nodes and bypassed nodes, and frontend-only nodes (Note,
MarkdownNote, PrimitiveNode: its value goes to the input it drives) are dropped. `configure` then sets prompt,
seed, sampler settings and the arm by node *type*, never by node id, and keeps only what the video output needs.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
TEMPLATES = {  # short names for the pack's own templates
    "wan2.1": "pila_wan2.1_t2v_1.3B.json",
    "wan2.2": "pila_wan2.2_t2v_A14B.json",
}
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
LINK_TYPES_ARE_WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIDEO_SAVERS = ("SaveVideo", "SaveWEBM", "SaveAnimatedWEBP", "SaveAnimatedPNG", "VHS_VideoCombine")
SAMPLERS = ("KSampler", "KSamplerAdvanced", "PILAFlowCorrectionSampler", "PILAFlowCorrectionSamplerWan22")
PILA_SAMPLERS = ("PILAFlowCorrectionSampler", "PILAFlowCorrectionSamplerWan22")
LATENTS = ("EmptyHunyuanLatentVideo", "EmptyWanLatentVideo", "EmptyLatentVideo", "WanImageToVideo")


class WorkflowError(ValueError):
    """A template this harness cannot drive; the message says what is missing."""


def template_path(name: str) -> Path:
    if name in TEMPLATES:
        return WORKFLOWS / TEMPLATES[name]
    p = Path(name)
    if not p.is_file() and (WORKFLOWS / name).is_file():
        p = WORKFLOWS / name
    if not p.is_file():
        raise WorkflowError(f"no workflow {name!r}: use one of {sorted(TEMPLATES)} or a path to a UI-format workflow JSON")
    return p


def is_widget(spec) -> bool:
    """Whether an /object_info input spec is a widget (a value) rather than a socket (a link)."""
    t = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(t, list) or t in LINK_TYPES_ARE_WIDGETS) and not opts.get("forceInput")


def input_order(info: dict) -> list[tuple[str, list]]:
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order")
    names = (order.get("required", []) + order.get("optional", [])) if order else list(specs)
    return [(n, specs[n]) for n in names if n in specs]


def widget_values(node: dict, info: dict) -> dict:
    """Maps a UI node's widgets_values to its widget inputs by the live definition's order."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some frontends store widgets by name
        return {k: v for k, v in values.items() if k in dict(input_order(info))}
    out, i = {}, 0
    for name, spec in input_order(info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            break
        out[name] = values[i]
        i += 1
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        seedlike = spec[0] == "INT" and (opts.get("control_after_generate") or name in ("seed", "noise_seed"))
        if seedlike and i < len(values) and values[i] in CONTROL_VALUES:
            i += 1  # the frontend's control_after_generate widget has no backend input
    return out


def to_api(ui: dict, object_info: dict) -> dict:
    """UI-format workflow -> API-format prompt {id: {class_type, inputs, _meta}}."""
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    links = {l[0]: l for l in ui.get("links", [])}

    def source(link_id):
        """(node id, output slot) feeding a link, following Reroutes and bypassed nodes; None if it leads nowhere."""
        seen = set()
        while link_id is not None and link_id not in seen:
            seen.add(link_id)
            _, src, slot, *_ = links[link_id]
            n = nodes[str(src)]
            if n["type"] == "Reroute":
                link_id = n["inputs"][0].get("link")
                continue
            if n.get("mode", 0) == 4:  # bypassed: the first input of the output's type passes through
                t = n["outputs"][slot]["type"]
                nxt = [i.get("link") for i in n.get("inputs", []) if i["type"] == t and i.get("link") is not None]
                link_id = nxt[0] if nxt else None
                continue
            if n.get("mode", 0) == 2:  # muted
                return None
            return str(src), slot
        return None

    prim_values = {}  # link id -> value of a PrimitiveNode
    for n in ui["nodes"]:
        if n["type"] == "PrimitiveNode" and n.get("widgets_values"):
            for out in n.get("outputs", []):
                for lid in out.get("links") or []:
                    prim_values[lid] = n["widgets_values"][0]

    api = {}
    for nid, n in nodes.items():
        if n["type"] in FRONTEND_ONLY or n.get("mode", 0) in (2, 4):
            continue
        info = object_info.get(n["type"])
        if info is None:
            raise WorkflowError(f"node {nid} ({n['type']}) is not installed on the server: install its pack or "
                                "choose another workflow")
        inputs = widget_values(n, info)
        for inp in n.get("inputs", []):
            lid = inp.get("link")
            if lid is None:
                continue
            if lid in prim_values:
                inputs[inp["name"]] = prim_values[lid]
                continue
            src = source(lid)
            if src is not None:
                inputs[inp["name"]] = [src[0], src[1]]
        api[nid] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n.get("title") or n["type"]}}
    # a link into a node we dropped (a source that is frontend-only and unresolved) must not stay
    for node in api.values():
        for k, v in list(node["inputs"].items()):
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in api:
                del node["inputs"][k]
    return api


# ---- editing by node type -------------------------------------------------------------------------------------
def of_type(api: dict, *types: str) -> list[str]:
    return [k for k, n in api.items() if n["class_type"] in types]


def upstream(api: dict, roots) -> set[str]:
    keep, stack = set(), list(roots)
    while stack:
        k = stack.pop()
        if k in keep or k not in api:
            continue
        keep.add(k)
        stack.extend(v[0] for v in api[k]["inputs"].values() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str))
    return keep


def rewire(api: dict, old: tuple[str, int], new: list) -> None:
    for n in api.values():
        for k, v in n["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and v[0] == old[0] and v[1] == old[1]:
                n["inputs"][k] = list(new)


def prompt_sources(api: dict) -> list[tuple[str, str]]:
    """(node, input) pairs that carry the user prompt: the text feeding the label parser and the positive encoder."""
    found = set()
    parser = of_type(api, "PILAPhysicsLabelParser")
    for p in parser:
        v = api[p]["inputs"].get("prompt")
        found.add(tuple(v) if isinstance(v, list) else (p, "prompt"))
    # the positive text encoder: the first node with a `text` input upstream of a sampler's `positive`
    # (directly, or through conditioning nodes such as WanImageToVideo)
    for s in of_type(api, *SAMPLERS, "PILAFlowCorrection"):
        pos = api[s]["inputs"].get("positive")
        stack, seen = [pos[0]] if isinstance(pos, list) else [], set()
        while stack:
            k = stack.pop(0)
            if k in seen or k not in api:
                continue
            seen.add(k)
            ins = api[k]["inputs"]
            if "text" in ins:
                v = ins["text"]
                found.add(tuple(v) if isinstance(v, list) else (k, "text"))
                break
            stack += [v[0] for n, v in ins.items() if isinstance(v, list) and n in ("positive", "conditioning",
                                                                                       "conditioning_1", "cond")]
    out = []
    for node, key in found:
        if isinstance(key, int):  # a link to a primitive string node: set its value
            n = api[node]
            key = "value" if "value" in n["inputs"] else next(k for k, v in n["inputs"].items() if isinstance(v, str))
        out.append((node, key))
    if not out:
        raise WorkflowError("the workflow has no positive prompt text (CLIPTextEncode feeding a sampler's positive)")
    return sorted(set(out))


@dataclass
class Arm:
    """One arm of a comparison: `pila` False = no correction (the correction node is bypassed or its strength is 0)."""
    name: str
    pila: bool = True
    strength: float | None = None
    steps: str | None = None
    top_k: int | None = None

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Settings:
    """Sampling settings shared by every arm; None keeps the template's value."""
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: float | None = None
    shift: float | None = None
    negative: str | None = None
    overrides: dict = field(default_factory=dict)  # {"Type.input" or "Title.input": value}


def set_inputs(api: dict, ids, **values) -> None:
    for k in ids:
        for name, v in values.items():
            if v is not None and name in api[k]["inputs"] and not isinstance(api[k]["inputs"][name], list):
                api[k]["inputs"][name] = v


def configure(api: dict, *, prompt: str, seed: int, arm: Arm, settings: Settings, prefix: str,
              image: str | None = None) -> dict:
    """A copy of `api` for one video: prompt, seed, settings, arm (and the start image of an I2V workflow, as
    uploaded to the server); pruned to what the video saver needs."""
    api = copy.deepcopy(api)
    loaders = of_type(api, "LoadImage")
    if loaders and image is None:
        raise WorkflowError("this workflow starts from an image (LoadImage): use a JSONL suite with an \"image\" "
                            "path per prompt, or a text-to-video workflow")
    for k in loaders:
        api[k]["inputs"]["image"] = image
    savers = of_type(api, *VIDEO_SAVERS)
    if len(savers) != 1:
        raise WorkflowError(f"expected exactly one video save node ({', '.join(VIDEO_SAVERS)}), found {len(savers)}")
    for node, key in prompt_sources(api):
        api[node]["inputs"][key] = prompt
    samplers = of_type(api, *SAMPLERS)
    for k in samplers:
        name = "noise_seed" if "noise_seed" in api[k]["inputs"] else "seed"
        api[k]["inputs"][name] = int(seed)
    for k in of_type(api, "KSamplerAdvanced"):  # a split over steps keeps its proportions
        old, ins = api[k]["inputs"].get("steps"), api[k]["inputs"]
        if settings.steps is not None and isinstance(old, int) and old > 0:
            for name in ("start_at_step", "end_at_step"):
                if isinstance(ins.get(name), int) and ins[name] < old:
                    ins[name] = round(ins[name] * settings.steps / old)
    set_inputs(api, samplers, steps=settings.steps, cfg=settings.cfg, sampler_name=settings.sampler,
               scheduler=settings.scheduler)
    set_inputs(api, of_type(api, *LATENTS), width=settings.width, height=settings.height, length=settings.frames)
    set_inputs(api, of_type(api, "CreateVideo"), fps=settings.fps)
    set_inputs(api, of_type(api, "ModelSamplingSD3"), shift=settings.shift)
    if settings.negative is not None:
        for s in samplers:
            neg = api[s]["inputs"].get("negative")
            if isinstance(neg, list) and "text" in api[neg[0]]["inputs"] and not isinstance(api[neg[0]]["inputs"]["text"], list):
                api[neg[0]]["inputs"]["text"] = settings.negative
    set_inputs(api, of_type(api, "PILAFlowCorrection", *PILA_SAMPLERS), diagnostics=False)
    set_inputs(api, of_type(api, "PILAExpertRouter"), strength=arm.strength, steps=arm.steps, top_k=arm.top_k)
    if not arm.pila:
        corr = of_type(api, "PILAFlowCorrection")
        for c in corr:  # the unpatched model: consumers of the correction read its input model
            rewire(api, (c, 0), api[c]["inputs"]["model"])
            del api[c]
        if of_type(api, *PILA_SAMPLERS):  # a sampler node with the correction built in: strength 0 is bit-exact
            set_inputs(api, of_type(api, "PILAExpertRouter"), strength=0.0)
    api[savers[0]]["inputs"]["filename_prefix"] = prefix
    for key, value in settings.overrides.items():
        target, _, name = key.rpartition(".")
        hit = [k for k, n in api.items() if target in (n["class_type"], n["_meta"]["title"], k)]
        if not hit:
            raise WorkflowError(f"--set {key}: no node of type or title {target!r} in the workflow")
        for k in hit:
            api[k]["inputs"][name] = value
    keep = upstream(api, savers)
    return {k: v for k, v in api.items() if k in keep}


def load_template(name: str, object_info: dict) -> tuple[dict, Path]:
    path = template_path(name)
    ui = json.loads(path.read_text())
    if "nodes" not in ui:
        raise WorkflowError(f"{path} is not a UI-format workflow (no 'nodes'); save it from ComfyUI with 'Save'")
    return to_api(ui, object_info), path
