// Shows the text the PILA nodes report after running (adapter config, parsed labels, routing, call summary)
// in a read-only box on the node. The box is never saved in workflows nor sent in prompts.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODES = new Set(["PILAAdapterLoader", "PILAPhysicsLabelParser", "PILAExpertRouter", "PILAExpertMaps"]);
const WIDGET = "pila_info";

function summarize(nodeName, text) {
  if (nodeName !== "PILAExpertMaps") return text;
  try {  // the maps node reports JSON per model call; show a short summary
    const r = JSON.parse(text);
    const steps = [...new Set(r.calls.filter((c) => c.applied).map((c) => c.step))];
    return `${r.calls.length} model calls, ${r.applied} corrected; steps ${steps.join(", ")}` +
      (r.diagnostics ? "" : "\n(turn on 'diagnostics' on the correction for expert maps)");
  } catch (e) {
    return text;
  }
}

// Give the box room for the whole report: a minimum height for its lines (long lines wrap), then grow the node
// to its computed size (never shrink what the user made larger). Without this the text is clipped after a run.
function fitToText(node, w) {
  const width = Math.max(120, (node.size?.[0] ?? 400) - 30);
  const lines = String(w.value ?? "").split("\n")
    .reduce((n, line) => n + Math.max(1, Math.ceil((line.length * 7) / width)), 0);
  w.options.getMinHeight = () => Math.min(16 * lines + 16, 480);
  const grow = () => {
    const sz = node.computeSize();
    node.setSize([Math.max(node.size[0], sz[0]), Math.max(node.size[1], sz[1])]);
    node.setDirtyCanvas?.(true, true);
  };
  grow();
  requestAnimationFrame(grow);  // once more after the DOM widget has laid out
}

app.registerExtension({
  name: "PILA.ShowInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, [message]);
      if (!message?.text) return;
      let w = this.widgets?.find((x) => x.name === WIDGET);
      if (!w) {
        w = ComfyWidgets["STRING"](this, WIDGET, ["STRING", { multiline: true }], app).widget;
        w.serialize = false;
        w.options = { ...(w.options || {}), serialize: false };
        if (w.element) w.element.readOnly = true;
        if (w.inputEl) w.inputEl.readOnly = true;
      }
      w.value = summarize(nodeData.name, [].concat(message.text).join("\n"));
      fitToText(this, w);
    };
  },
});
