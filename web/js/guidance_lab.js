// Guidance Lab frontend: a live plot of guidance schedules and a classifier label picker.
//
// The plotted values are computed by the pack's Python core (POST /guidance_lab/schedule), the same
// code the sampler runs; this file only draws them. Labels come from the selected classifier file's
// metadata (GET /guidance_lab/classifier_labels). Uses only the `app` object of the frontend.
import { app } from "../../../scripts/app.js";

const SCHEDULE_TYPE = "GUIDANCE_SCHEDULE";
const SCHEDULE_NODE = "GuidanceLabSchedule";
const SCHEDULE_FIELDS = ["kind", "axis", "start", "end", "exponent", "sigma_lo", "sigma_hi", "inside", "outside",
  "keyframes", "threshold"];
const LOADER_NODE = "GuidanceLabClassifierLoader";
const LABEL_NODES = new Set(["GuidanceLabClassifierGuidance", "GuidanceLabClassifierSampler"]);

const PLOT_WIDGET = "guidance_lab_plot";
const STEPS_WIDGET = "preview steps";
const STEPS_PROPERTY = "guidance_lab_preview_steps";
const STEPS_DEFAULT = 20;
const STEPS_RANGE = [1, 200];
const LABEL_WIDGET = "insert label";
const PICK = "(pick a label)";
const PLOT_HEIGHT = 150;
const DEBOUNCE_MS = 120;
const COLORS = ["#4fc3f7", "#ffb74d", "#aed581"];
const BG = "#1b1b1b";
const AXIS = "#777";
const TEXT = "#bbb";

async function api(path, options) {
  const res = await app.api.fetchApi(path, options);
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    throw new Error(body?.error ?? `${path}: HTTP ${res.status}`);
  }
  return body;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

// Whether an input slot is linked. Newer frontends (1.5x) deprecate reading `input.link` (a warning) in favour
// of node.isInputConnected, which 1.32.9 has too; the fallback is for frontends older than both.
function inputConnected(node, slot) {
  if (typeof node.isInputConnected === "function") return node.isInputConnected(slot);
  return node.inputs?.[slot]?.link != null;
}

// ---------------------------------------------------------------- schedule plot

function previewSteps(node) {
  const v = Number(node.properties?.[STEPS_PROPERTY] ?? STEPS_DEFAULT);
  return Number.isFinite(v) ? Math.min(Math.max(Math.round(v), STEPS_RANGE[0]), STEPS_RANGE[1]) : STEPS_DEFAULT;
}

function scheduleBody(node) {
  const body = { steps: previewSteps(node) };
  for (const name of SCHEDULE_FIELDS) {
    const w = widget(node, name);
    if (w !== undefined && w.value !== undefined && w.value !== null) body[name] = w.value;
  }
  return body;
}

// What a node plots: [{label, body}]; a schedule node plots itself, a node that takes schedules plots
// each schedule input (a Guidance Schedule connected, or constant 1 when nothing is connected).
function plotSeries(node) {
  if (node.comfyClass === SCHEDULE_NODE) return [{ label: "f", body: scheduleBody(node) }];
  const series = [];
  for (const [slot, input] of (node.inputs ?? []).entries()) {
    if (input.type !== SCHEDULE_TYPE) continue;
    const src = inputConnected(node, slot) ? node.getInputNode(slot) : null;
    if (src && src.comfyClass === SCHEDULE_NODE) {
      series.push({ label: input.name, body: scheduleBody(src) });
    } else if (!src) {
      series.push({ label: `${input.name} (none = 1)`, body: { kind: "constant", start: 1.0, steps: STEPS_DEFAULT } });
    } else {
      series.push({ label: `${input.name} (not a Guidance Schedule)`, body: null });
    }
  }
  return series;
}

function refreshPlot(node) {
  const st = node.__guidanceLabPlot;
  if (!st || !node.graph) return; // not in a graph yet: "Convert to Subgraph" configures clones before adding them
  const series = plotSeries(node);
  const signature = JSON.stringify(series);
  if (signature === st.signature) return;
  st.signature = signature;
  clearTimeout(st.timer);
  st.timer = setTimeout(() => fetchPlot(node, series), DEBOUNCE_MS);
}

async function fetchPlot(node, series) {
  const st = node.__guidanceLabPlot;
  const seq = ++st.seq;
  let results;
  let error = null;
  try {
    results = await Promise.all(series.map(async (s) => (s.body === null ? null : {
      label: s.label,
      ...(await api("/guidance_lab/schedule", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(s.body),
      })),
    })));
  } catch (e) {
    error = String(e?.message ?? e);
    results = [];
  }
  if (seq !== st.seq) return; // a newer request is on its way
  st.series = results.filter((r) => r !== null);
  st.error = error;
  st.fetches += 1;
  drawPlot(node);
}

function refreshDownstream(node) {
  if (!node.graph) return; // as in refreshPlot
  for (const target of node.getOutputNodes?.(0) ?? []) refreshPlot(target);
}

// [drawn low, drawn high, data low, data high]: the data range always includes 0 and 1 (off and full).
function valueRange(values) {
  const lo = Math.min(0, ...values);
  let hi = Math.max(1, ...values);
  if (hi - lo < 1e-9) hi = lo + 1;
  const pad = 0.08 * (hi - lo);
  return [lo - pad, hi + pad, lo, hi];
}

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1000)) return v.toExponential(1);
  return String(Math.round(v * 100) / 100);
}

function drawPanel(ctx, box, title, series, xOf, xLabels, yRange) {
  const [x0, y0, w, h] = box;
  const [lo, hi, dataLo, dataHi] = yRange;
  const yOf = (v) => y0 + h - ((v - lo) / (hi - lo)) * h;
  ctx.strokeStyle = AXIS;
  ctx.lineWidth = 1;
  ctx.strokeRect(x0 + 0.5, y0 + 0.5, w, h);
  ctx.setLineDash([3, 3]);
  for (const ref of [0, 1]) {
    if (ref < lo || ref > hi) continue;
    ctx.beginPath();
    ctx.moveTo(x0, Math.round(yOf(ref)) + 0.5);
    ctx.lineTo(x0 + w, Math.round(yOf(ref)) + 0.5);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.fillStyle = TEXT;
  ctx.font = "10px sans-serif";
  ctx.textBaseline = "bottom";
  ctx.textAlign = "left";
  ctx.fillText(title, x0, y0 - 2);
  ctx.textBaseline = "top";
  ctx.fillText(xLabels[0], x0, y0 + h + 2);
  ctx.textAlign = "right";
  ctx.fillText(xLabels[1], x0 + w, y0 + h + 2);
  ctx.textBaseline = "middle";
  ctx.fillText(fmt(dataHi), x0 - 3, yOf(dataHi));
  ctx.fillText(fmt(dataLo), x0 - 3, yOf(dataLo));
  series.forEach((s, k) => {
    ctx.strokeStyle = ctx.fillStyle = COLORS[k % COLORS.length];
    ctx.lineWidth = 2;
    ctx.setLineDash(s.note ? [6, 4] : []); // adaptive: the value until it stops, known only while sampling
    ctx.beginPath();
    s.values.forEach((v, i) => {
      const px = x0 + xOf(s, i) * w;
      if (i === 0) ctx.moveTo(px, yOf(v));
      else ctx.lineTo(px, yOf(v));
    });
    ctx.stroke();
    ctx.setLineDash([]);
    if (s.values.length <= 60) {
      s.values.forEach((v, i) => {
        ctx.beginPath();
        ctx.arc(x0 + xOf(s, i) * w, yOf(v), 2.2, 0, 2 * Math.PI);
        ctx.fill();
      });
    }
  });
}

function drawPlot(node) {
  const st = node.__guidanceLabPlot;
  if (!st) return;
  const canvas = st.canvas;
  const cw = canvas.clientWidth;
  const chh = canvas.clientHeight;
  if (cw < 10 || chh < 10) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(cw * dpr) || canvas.height !== Math.round(chh * dpr)) {
    canvas.width = Math.round(cw * dpr);
    canvas.height = Math.round(chh * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = BG;
  ctx.fillRect(0, 0, cw, chh);
  ctx.font = "10px sans-serif";
  if (st.error) {
    ctx.fillStyle = "#ef5350";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    wrapText(ctx, st.error, 8, 8, cw - 16, 13);
    return;
  }
  const series = st.series ?? [];
  if (!series.length) {
    ctx.fillStyle = TEXT;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(st.fetches ? "no schedule to plot" : "…", 8, 8);
    return;
  }
  const yRange = valueRange(series.flatMap((s) => s.values));
  const left = 34;
  const gap = 40;
  const top = 16;
  const notes = series.filter((s) => s.note);
  const legend = series.length > 1 || notes.length ? 14 : 0;
  const h = chh - top - 16 - legend;
  const w = (cw - left - gap - 8) / 2;
  const steps = Math.max(...series.map((s) => s.values.length));
  drawPanel(ctx, [left, top, w, h], `per step (${steps} steps)`, series,
    (s, i) => (s.values.length > 1 ? i / (s.values.length - 1) : 0.5), ["1", String(steps)], yRange);
  // against sigma, log axis, high noise on the left (the order of sampling)
  const logHi = Math.log(Math.max(...series.map((s) => s.sigma_max)));
  const logLo = Math.log(Math.min(...series.map((s) => s.sigma_min)));
  const span = logHi - logLo || 1;
  drawPanel(ctx, [left + w + gap, top, w, h], "vs sigma (log)", series,
    (s, i) => Math.min(Math.max((logHi - Math.log(s.sigmas[i])) / span, 0), 1),
    [`σ ${fmt(Math.exp(logHi))}`, fmt(Math.exp(logLo))], yRange);
  if (legend) {
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    let x = left;
    series.forEach((s, k) => {
      const text = `■ ${s.label}${s.note ? ` (${s.note})` : ""}`;
      ctx.fillStyle = COLORS[k % COLORS.length];
      ctx.fillText(text, x, chh - 1);
      x += ctx.measureText(text).width + 12;
    });
  }
}

function wrapText(ctx, text, x, y, maxWidth, lineHeight) {
  let line = "";
  for (const word of text.split(/\s+/)) {
    const next = line ? `${line} ${word}` : word;
    if (ctx.measureText(next).width > maxWidth && line) {
      ctx.fillText(line, x, y);
      line = word;
      y += lineHeight;
    } else {
      line = next;
    }
  }
  if (line) ctx.fillText(line, x, y);
}

function wrapCallback(node, w, after) {
  if (w.__guidanceLabWrapped) return;
  w.__guidanceLabWrapped = true;
  const cb = w.callback;
  w.callback = function (...args) {
    const r = cb?.apply(this, args);
    after();
    return r;
  };
}

function addPlot(node) {
  const element = document.createElement("div");
  element.className = "guidance-lab-plot";
  element.title = "Guidance multiplier f per step (left) and against sigma, log axis (right), computed by the "
    + "pack's Python schedule code for an SD1.5-like model with the normal scheduler. 1 = full guidance, 0 = off.";
  element.style.cssText = `width:100%;height:${PLOT_HEIGHT}px;box-sizing:border-box;`;
  const canvas = document.createElement("canvas");
  canvas.className = "guidance-lab-plot-canvas";
  canvas.style.cssText = "width:100%;height:100%;display:block;border-radius:4px;";
  element.appendChild(canvas);
  node.__guidanceLabPlot = { canvas, element, seq: 0, fetches: 0, series: null, error: null, signature: null };
  const w = node.addDOMWidget(PLOT_WIDGET, "guidance_lab_plot", element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => PLOT_HEIGHT,
    getMaxHeight: () => PLOT_HEIGHT,
  });
  w.serialize = false;
  new ResizeObserver(() => drawPlot(node)).observe(element);
  const onRemoved = node.onRemoved;
  node.onRemoved = function (...args) {
    clearTimeout(node.__guidanceLabPlot?.timer);
    return onRemoved?.apply(this, args);
  };
  return w;
}

function fitNode(node) {
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0], 340), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

function setupScheduleNode(node) {
  node.properties = node.properties ?? {};
  node.properties[STEPS_PROPERTY] = previewSteps(node);
  const steps = node.addWidget("number", STEPS_WIDGET, previewSteps(node), (v) => {
    node.properties[STEPS_PROPERTY] = Math.min(Math.max(Math.round(Number(v) || STEPS_DEFAULT), STEPS_RANGE[0]),
      STEPS_RANGE[1]);
  }, {
    min: STEPS_RANGE[0], max: STEPS_RANGE[1], step: 10, step2: 1, precision: 0, round: 1, serialize: false,
    tooltip: "Steps of the preview plot only (SD1.5-like sigmas, normal scheduler); saved with the workflow, not "
      + "sent to the sampler.",
  });
  steps.serialize = false;
  addPlot(node);
  const update = () => {
    refreshPlot(node);
    refreshDownstream(node);
  };
  for (const w of node.widgets) wrapCallback(node, w, update);
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const r = onConfigure?.apply(this, args);
    steps.value = previewSteps(node);
    update();
    return r;
  };
  const onWidgetChanged = node.onWidgetChanged;
  node.onWidgetChanged = function (...args) {
    const r = onWidgetChanged?.apply(this, args);
    update();
    return r;
  };
  fitNode(node);
  update();
}

function setupScheduleConsumer(node) {
  addPlot(node);
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const r = onConnectionsChange?.apply(this, args);
    refreshPlot(node);
    return r;
  };
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const r = onConfigure?.apply(this, args);
    refreshPlot(node);
    return r;
  };
  fitNode(node);
  refreshPlot(node);
}

// ---------------------------------------------------------------- classifier label picker

function classifierSource(node) {
  const slot = node.inputs?.findIndex((i) => i.name === "classifier") ?? -1;
  if (slot < 0 || !inputConnected(node, slot)) return { message: "(connect Load Classifier)" };
  const src = node.getInputNode(slot);
  if (!src || src.comfyClass !== LOADER_NODE) return { message: "(labels: connect a Load Classifier node)" };
  const name = widget(src, "classifier_name")?.value;
  if (!name) return { message: "(no classifier file selected)" };
  return { name };
}

// The choices: a first, inert entry (a prompt or why there are no labels), then the labels.
function setLabelChoices(node, first, labels) {
  const st = node.__guidanceLabLabels;
  st.labels = labels;
  const options = [first, ...labels].map((text, i) => {
    const o = document.createElement("option");
    o.value = i === 0 ? "" : text;
    o.textContent = text;
    return o;
  });
  st.select.replaceChildren(...options);
  st.select.value = "";
  st.select.disabled = labels.length === 0;
}

async function refreshLabels(node) {
  const st = node.__guidanceLabLabels;
  if (!st) return;
  const src = classifierSource(node);
  const key = src.name ?? src.message;
  if (key === st.key) return;
  st.key = key;
  const seq = ++st.seq;
  if (!src.name) {
    setLabelChoices(node, src.message, []);
    return;
  }
  let first = PICK;
  let labels = [];
  try {
    labels = (await api(`/guidance_lab/classifier_labels?name=${encodeURIComponent(src.name)}`)).labels;
  } catch (e) {
    first = `(labels unavailable: ${String(e?.message ?? e).slice(0, 160)})`;
  }
  if (seq === st.seq) setLabelChoices(node, first, labels);
}

// 'cat' into an empty target; ', cat' after the last line's entries otherwise. Set through the widget
// and its callback, so that both renderers (and the Vue node's own state) see the new text.
function insertLabel(node, label) {
  const t = widget(node, "target");
  if (!t) return;
  const lines = String(t.value ?? "").split("\n");
  const last = lines[lines.length - 1].trim();
  lines[lines.length - 1] = last ? `${last}, ${label}` : label;
  const text = lines.join("\n");
  t.value = text;
  t.callback?.(text);
  node.setDirtyCanvas?.(true, true);
}

// A DOM widget holding a native <select>: it looks and behaves the same in the classic canvas and in
// the Vue node renderer, and its list can change at any time (a combo widget's list cannot in Vue nodes).
function setupLabelPicker(node) {
  const element = document.createElement("div");
  element.className = "guidance-lab-labels";
  element.style.cssText = "display:flex;align-items:center;gap:8px;width:100%;height:28px;box-sizing:border-box;"
    + "padding:0 4px;font:12px sans-serif;color:#aaa;";
  const caption = document.createElement("span");
  caption.textContent = LABEL_WIDGET;
  caption.style.cssText = "white-space:nowrap;";
  const select = document.createElement("select");
  select.className = "guidance-lab-label-select";
  select.title = "Labels of the connected classifier file (its metadata); choosing one appends it to target.";
  select.style.cssText = "flex:1;min-width:0;height:24px;background:#222;color:#ddd;border:1px solid #555;"
    + "border-radius:6px;padding:0 4px;font:12px sans-serif;";
  element.append(caption, select);
  const st = { seq: 0, key: null, labels: [], select };
  node.__guidanceLabLabels = st;
  select.addEventListener("change", () => {
    const v = select.value;
    select.value = "";
    if (st.labels.includes(v)) insertLabel(node, v);
  });
  const w = node.addDOMWidget(LABEL_WIDGET, "guidance_lab_labels", element, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => 30,
    getMaxHeight: () => 30,
  });
  w.serialize = false;
  setLabelChoices(node, "(connect Load Classifier)", []);
  fitNode(node);
  for (const hook of ["onConnectionsChange", "onConfigure"]) {
    const prev = node[hook];
    node[hook] = function (...args) {
      const r = prev?.apply(this, args);
      refreshLabels(node);
      return r;
    };
  }
  refreshLabels(node);
}

function setupLoader(node) {
  const w = widget(node, "classifier_name");
  if (!w) return;
  wrapCallback(node, w, () => {
    for (const n of node.getOutputNodes?.(0) ?? []) refreshLabels(n);
  });
}

// ---------------------------------------------------------------- registration

app.registerExtension({
  name: "GuidanceLab.Frontend",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("GuidanceLab")) return;
    const inputs = { ...(nodeData.input?.required ?? {}), ...(nodeData.input?.optional ?? {}) };
    const takesSchedule = Object.values(inputs).some((spec) => Array.isArray(spec) && spec[0] === SCHEDULE_TYPE);
    const setup = nodeData.name === SCHEDULE_NODE ? setupScheduleNode
      : takesSchedule ? setupScheduleConsumer : null;
    const labels = LABEL_NODES.has(nodeData.name);
    const loader = nodeData.name === LOADER_NODE;
    if (!setup && !labels && !loader) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      if (setup) setup(this);
      if (labels) setupLabelPicker(this);
      if (loader) setupLoader(this);
      return r;
    };
    // a node made before it joins a graph (refreshPlot waits for one) draws its plot once it is added; the Vue
    // node renderer never calls onDrawForeground, so this is its first refresh
    const onAdded = nodeType.prototype.onAdded;
    nodeType.prototype.onAdded = function (...args) {
      const r = onAdded?.apply(this, args);
      if (this.__guidanceLabPlot) refreshPlot(this);
      return r;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (...args) {
      const r = onDrawForeground?.apply(this, args);
      // cheap: both refreshers return at once when nothing they depend on changed
      if (this.__guidanceLabPlot) refreshPlot(this);
      if (this.__guidanceLabLabels) refreshLabels(this);
      return r;
    };
  },
});
