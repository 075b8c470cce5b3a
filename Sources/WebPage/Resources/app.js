// CastServe's page: a chat with streamed replies and a live view of the engine.
// Plain JavaScript, no dependencies; talks only to this server. The API key (when the server
// needs one) is kept in a variable of this page: never in storage, cookies or the URL.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: "",            // API key, in memory only
  needsKey: false,
  model: "default",    // the picked model's id: chats go to it, the engine view shows it
  models: [],         // GET /v1/models' list: {id, state, kernels, context_length, ...}
  messages: [],       // the conversation: {role, content}
  chat: null,         // AbortController of the reply being streamed
  events: null,       // AbortController of the engine events stream
};

// MARK: - API

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

/** An API error's message from its JSON envelope, else the status line. */
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return response.status + " " + response.statusText;
}

/** Reads a text/event-stream body, calling onEvent({event, data}) for every event. */
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) onEvent({ event, data: data.join("\n") });
    }
  }
}

// MARK: - API key

/** Asks the server whether it needs a key (GET /v1/models answers 401 without one) and fills
 *  the model picker with its models and their states (the picked model stays picked). */
async function probe() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401) {
      state.needsKey = true;
      showKeyForm(state.key ? "That key was refused." : "");
      return false;
    }
    if (r.ok) {
      const body = await r.json();
      state.models = body.data || [];
      if (state.models.length) {
        if (!state.models.some((m) => m.id === state.model)) state.model = state.models[0].id;
        const picker = $("model-picker");
        picker.replaceChildren(...state.models.map((m) => {
          const option = document.createElement("option");
          option.value = m.id;
          option.textContent = m.id + (m.state === "loaded" ? "" : " (" + m.state + ")");
          return option;
        }));
        picker.value = state.model;
        picker.hidden = false;
        showModel();
      }
      return true;
    }
    $("model").textContent = "server: " + (await errorMessage(r));
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
  return false;
}

/** The picked model's figures beside the picker. */
function showModel() {
  const m = state.models.find((x) => x.id === state.model);
  if (!m) return;
  $("model").textContent = m.id + " · " + m.kernels + " · context " + m.context_length + (m.state === "loaded" ? "" : " · " + m.state);
}

/** Another model picked: chats go to it, and the engine view starts over on its engine. */
function pickModel() {
  state.model = $("model-picker").value;
  showModel();
  engine.samples = [];
  engine.steps = [];
  engine.lastTrees = [];
  engine.count = 0;
  if (!$("view-engine").hidden) startEvents();
}

function showKeyForm(error) {
  $("key-form").hidden = false;
  $("key-button").hidden = !state.needsKey;
  $("key-error").textContent = error || "";
  $("key-input").focus();
}

async function submitKey(event) {
  event.preventDefault();
  state.key = $("key-input").value.trim();
  $("key-error").textContent = "";
  $("key-submit").disabled = true;
  const ok = await probe();
  $("key-submit").disabled = false;
  if (ok) {
    $("key-form").hidden = true;
    $("key-input").value = "";
    $("key-button").hidden = false;
    if (!$("view-engine").hidden) startEvents();
    $("prompt").focus();
  }
}

// MARK: - Chat

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = "message " + role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  const figures = document.createElement("div");
  figures.className = "figures";
  li.append(label, body, figures);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function figure(parent, cls, text) {
  const span = document.createElement("span");
  span.className = cls;
  span.textContent = text;
  parent.append(span);
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(event) {
  if (event) event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.chat) return;
  if (state.needsKey && !state.key) { showKeyForm("Enter the API key first."); return; }
  $("prompt").value = "";
  addMessage("user", text);
  // This reply belongs to this conversation: a New conversation meanwhile starts a new list.
  const history = state.messages;
  history.push({ role: "user", content: text });
  const reply = addMessage("assistant", "");
  reply.setAttribute("aria-busy", "true");
  const textEl = reply.querySelector(".text");
  const figures = reply.querySelector(".figures");

  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    model: state.model, messages, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 256),
  };

  const controller = new AbortController();
  state.chat = controller;
  setBusy(true);
  const t0 = performance.now();
  let tFirst = null, tLast = null, content = "", usage = null, finish = null, stopped = false;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers({ "Content-Type": "application/json" }), body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!r.ok) {
      const message = await errorMessage(r);
      if (r.status === 401) { state.needsKey = true; showKeyForm(message); }
      throw new Error(message);
    }
    await readEvents(r, ({ data }) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          const now = performance.now();
          if (tFirst === null) tFirst = now;
          tLast = now;
          content += piece;
          textEl.textContent = content;
          reply.dataset.chunks = String(Number(reply.dataset.chunks || 0) + 1); // streamed pieces shown
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
  } catch (e) {
    if (e.name === "AbortError") stopped = true;
    else {
      reply.classList.add("error");
      textEl.textContent = (content ? content + "\n" : "") + "Error: " + e.message;
      textEl.setAttribute("role", "alert");
    }
  } finally {
    state.chat = null;
    setBusy(false);
    probe(); // the model may have loaded for this reply: the picker shows its state
    reply.removeAttribute("aria-busy");
  }
  if (content) history.push({ role: "assistant", content });
  else if (!reply.classList.contains("error")) history.pop(); // nothing to keep: let the user retry
  if (stopped) figure(figures, "stopped", "stopped");
  showFigures(figures, { t0, tFirst, tLast, usage, finish });
  reply.scrollIntoView({ block: "end" });
}

/** Tokens/s, time to first token, usage and usage.speculation under a reply. */
function showFigures(el, { t0, tFirst, tLast, usage, finish }) {
  if (tFirst !== null) figure(el, "ttft", "first token " + Math.round(tFirst - t0) + " ms");
  if (usage) {
    const n = usage.completion_tokens;
    // Decode rate: tokens after the first over the time since the first (all of them if only one).
    if (tFirst !== null) {
      const seconds = (tLast - tFirst) / 1000;
      const rate = n > 1 && seconds > 0 ? (n - 1) / seconds : n / Math.max((tLast - t0) / 1000, 1e-3);
      figure(el, "tps", rate.toFixed(1) + " tokens/s");
    }
    figure(el, "usage", usage.prompt_tokens + " prompt + " + n + " completion tokens");
    const s = usage.speculation;
    if (s) {
      const perStep = s.decode_steps > 0 ? n / s.decode_steps : 0;
      figure(el, "spec", "drafted " + s.drafted_tokens + ", accepted " + s.accepted_tokens +
        " (" + Math.round(100 * (s.acceptance_rate || 0)) + "%), " + perStep.toFixed(2) + " tokens/step");
    } else {
      figure(el, "spec", "no speculation");
    }
  }
  if (finish) figure(el, "finish", "finish: " + finish);
}

function stop() {
  if (state.chat) state.chat.abort();
}

function newConversation() {
  stop();
  state.messages = [];
  $("messages").replaceChildren();
  $("prompt").focus();
}

function promptKey(event) {
  // Enter sends, Shift+Enter adds a line (and an IME composition keeps its Enter).
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
}

// MARK: - Tabs

function selectTab(name) {
  for (const t of ["chat", "engine"]) {
    const on = t === name;
    const tab = $("tab-" + t);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("view-" + t).hidden = !on;
  }
  if (name === "engine") startEvents(); else stopEvents();
}

function tabKey(event) {
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  const next = event.target.id === "tab-chat" ? "engine" : "chat";
  selectTab(next);
  $("tab-" + next).focus();
}

// MARK: - Engine view

const engine = {
  samples: [],   // {t, tps, running, waiting}, the last 120 events
  steps: [],     // the last 240 steps
  lastTrees: [], // draft-tree sizes of the last speculative step
  count: 0,
};

async function startEvents() {
  stopEvents();
  if (state.needsKey && !state.key) { showKeyForm("Enter the API key to see the engine."); return; }
  const controller = new AbortController();
  state.events = controller;
  $("engine-status").textContent = "Connecting…";
  try {
    const r = await fetch("/v1/cast/events?model=" + encodeURIComponent(state.model), { headers: headers(), signal: controller.signal });
    if (!r.ok) {
      const message = await errorMessage(r);
      if (r.status === 401) { state.needsKey = true; state.events = null; showKeyForm(message); } // no retry
      throw new Error(message);
    }
    await readEvents(r, ({ event, data }) => { if (event === "engine") update(JSON.parse(data)); });
    if (state.events === controller) $("engine-status").textContent = "The server ended the stream (restarting?); reconnecting…";
  } catch (e) {
    if (e.name === "AbortError") return;
    $("engine-status").textContent = "Engine view: " + e.message;
  }
  // Still on the engine view and not stopped: try again shortly (a restart, a dropped connection).
  if (state.events === controller) setTimeout(() => { if (state.events === controller) startEvents(); }, 3000);
}

function stopEvents() {
  if (state.events) { state.events.abort(); state.events = null; }
}

const fmt = (x, d) => (x === undefined || x === null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));

function update(e) {
  engine.count += 1;
  engine.samples.push({ t: e.time, tps: e.tokens_per_second, running: e.running, waiting: e.waiting });
  if (engine.samples.length > 120) engine.samples.shift();
  for (const s of e.steps) {
    engine.steps.push(s);
    if (s.tree_rows_per_sequence && s.tree_rows_per_sequence.length) engine.lastTrees = s;
  }
  if (engine.steps.length > 240) engine.steps.splice(0, engine.steps.length - 240);

  const recent = engine.steps.slice(-32);
  const rowsPerStep = recent.length ? recent.reduce((a, s) => a + s.rows, 0) / recent.length : null;
  const accepted = engine.steps.flatMap((s) => s.accepted_per_sequence); // over the kept steps
  $("stat-running").textContent = e.running + " / " + e.slots;
  $("stat-waiting").textContent = e.waiting;
  $("stat-tps").textContent = fmt(e.tokens_per_second, 1);
  $("stat-rows").textContent = fmt(rowsPerStep, 1);
  $("stat-accepted").textContent = accepted.length ? fmt(accepted.reduce((a, b) => a + b, 0) / accepted.length, 2) : "–";
  $("stat-steps").textContent = e.steps_total;
  $("stat-kv").textContent = e.kv_blocks.used + " used, " + e.kv_blocks.cached + " cached / " + e.kv_blocks.total;
  $("stat-spec").textContent = e.speculation ? e.drafted_tokens + " / " + e.accepted_tokens : "off";
  const t = new Date(e.time * 1000).toLocaleTimeString();
  $("engine-status").textContent = e.model + " · drafter " + e.drafter + " · update " + engine.count + " at " + t;
  $("view-engine").dataset.updates = String(engine.count);
  draw(e);
}

// MARK: - Charts (SVG)

const SVG = "http://www.w3.org/2000/svg";
const W = 360, H = 150, PAD = { l: 34, r: 8, t: 8, b: 18 };

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

/** A fresh chart: axes from xmax/ymax, returns scale functions and the svg. */
function frame(id, xmax, ymax, xlabel) {
  const svg = $(id);
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.replaceChildren();
  const ym = ymax > 0 ? ymax : 1, xm = xmax > 0 ? xmax : 1;
  const x = (v) => PAD.l + (v / xm) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / ym) * (H - PAD.t - PAD.b);
  el("line", { class: "axis", x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b }, svg);
  el("line", { class: "axis", x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b }, svg);
  const label = (text, attrs) => { const n = el("text", attrs, svg); n.textContent = text; };
  label(short(ym), { x: PAD.l - 4, y: PAD.t + 8, "text-anchor": "end" });
  label("0", { x: PAD.l - 4, y: H - PAD.b, "text-anchor": "end" });
  if (xlabel) label(xlabel, { x: W - PAD.r, y: H - 4, "text-anchor": "end" });
  return { svg, x, y, label };
}

const short = (v) => (v >= 100 ? Math.round(v).toString() : v >= 10 ? v.toFixed(0) : v.toFixed(1));
const niceMax = (values, floor) => Math.max(floor, ...values.filter((v) => Number.isFinite(v))) * 1.1;

function polyline(c, points, cls) {
  if (points.length === 0) return;
  el("polyline", { class: cls, points: points.map(([a, b]) => c.x(a).toFixed(1) + "," + c.y(b).toFixed(1)).join(" ") }, c.svg);
}

function legend(c, items) {
  items.forEach(([text, cls], i) => {
    el("rect", { class: cls, x: PAD.l + 6 + i * 90, y: PAD.t, width: 8, height: 8 }, c.svg);
    const n = el("text", { x: PAD.l + 18 + i * 90, y: PAD.t + 8 }, c.svg);
    n.textContent = text;
  });
}

function draw(e) {
  // Tokens/s with running and waiting over the last samples.
  const s = engine.samples, n = s.length;
  const ymax = niceMax(s.map((p) => p.tps).concat(s.map((p) => p.running + p.waiting)), 1);
  let c = frame("chart-tps", Math.max(n - 1, 1), ymax, n + " updates");
  polyline(c, s.map((p, i) => [i, p.tps]), "s0");
  polyline(c, s.map((p, i) => [i, p.running]), "s1");
  polyline(c, s.map((p, i) => [i, p.waiting]), "s2");
  legend(c, [["tokens/s", "f0"], ["running", "f1"], ["waiting", "f2"]]);

  // Rows per step, the tree rows on top in the second colour.
  const steps = engine.steps.slice(-120);
  c = frame("chart-rows", Math.max(steps.length, 1), niceMax(steps.map((p) => p.rows), 1), steps.length + " steps");
  const bw = (W - PAD.l - PAD.r) / Math.max(steps.length, 1);
  steps.forEach((p, i) => {
    const plain = p.rows - p.tree_rows;
    el("rect", { class: "f0", x: c.x(i), y: c.y(plain), width: Math.max(bw - 0.5, 0.5), height: c.y(0) - c.y(plain) }, c.svg);
    if (p.tree_rows > 0) el("rect", { class: "f1", x: c.x(i), y: c.y(p.rows), width: Math.max(bw - 0.5, 0.5), height: c.y(plain) - c.y(p.rows) }, c.svg);
  });
  legend(c, [["rows", "f0"], ["tree rows", "f1"]]);

  // Accepted tokens per sequence and step: one dot each.
  const acc = steps.flatMap((p, i) => p.accepted_per_sequence.map((a) => [i, a]));
  c = frame("chart-accepted", Math.max(steps.length, 1), niceMax(acc.map((p) => p[1]), 2), steps.length + " steps");
  for (const [i, a] of acc) el("circle", { class: "dot", cx: c.x(i + 0.5), cy: c.y(a), r: 2.5 }, c.svg);

  // Draft-tree sizes per sequence of the last speculative step.
  const last = engine.lastTrees;
  const sizes = (last && last.tree_rows_per_sequence) || [];
  c = frame("chart-trees", Math.max(sizes.length, 1), niceMax(sizes, 2), sizes.length ? "step " + last.n + ", by sequence" : "no trees yet");
  const tw = Math.min((W - PAD.l - PAD.r) / Math.max(sizes.length, 1), 40);
  sizes.forEach((v, i) => {
    el("rect", { class: "f0", x: c.x(i) + 2, y: c.y(v), width: Math.max(tw - 4, 1), height: c.y(0) - c.y(v) }, c.svg);
    const a = (last.accepted_per_sequence || [])[i] || 0;
    el("rect", { class: "f2", x: c.x(i) + 2, y: c.y(a), width: Math.max(tw - 4, 1), height: c.y(0) - c.y(a) }, c.svg);
  });
  legend(c, [["nodes", "f0"], ["accepted", "f2"]]);

  // The planner's T(rows) and the observed steps (forward + host) at their row counts.
  // The x range ends at the first curve point past the steps seen (at least 8 rows), so the
  // small steps of a light load are not squashed against the axis by the curve's far end.
  const observed = engine.steps.filter((p) => p.observed_ms !== undefined);
  const seenRows = Math.max(8, ...observed.map((p) => p.rows));
  const fullCurve = e.cost_curve || [];
  const end = fullCurve.findIndex((p) => p.rows >= seenRows);
  const curve = end < 0 ? fullCurve : fullCurve.slice(0, end + 1);
  const maxRows = Math.max(1, ...curve.map((p) => p.rows), ...observed.map((p) => p.rows));
  const maxMs = niceMax(curve.map((p) => p.ms).concat(observed.map((p) => p.observed_ms)), 1);
  c = frame("chart-cost", maxRows, maxMs, curve.length ? "rows (max " + maxRows + ")" : "speculation off: no cost model");
  polyline(c, curve.map((p) => [p.rows, p.ms]), "s0");
  for (const p of observed.slice(-160)) el("circle", { class: "dot", cx: c.x(p.rows), cy: c.y(p.observed_ms), r: 2 }, c.svg);
  legend(c, [["T(rows)", "f0"], ["observed", "f1"]]);

  // Predicted against observed step time, step by step.
  const pred = observed.slice(-120);
  c = frame("chart-pred", Math.max(pred.length - 1, 1), niceMax(pred.map((p) => p.observed_ms).concat(pred.map((p) => p.predicted_ms)), 1),
    pred.length + " planned steps");
  polyline(c, pred.map((p, i) => [i, p.predicted_ms]), "s0");
  polyline(c, pred.map((p, i) => [i, p.observed_ms]), "s1");
  legend(c, [["predicted", "f0"], ["observed", "f1"]]);

  // KV blocks: used, cached, free as one stacked bar.
  const kv = e.kv_blocks, total = Math.max(kv.total, 1);
  const svg = $("chart-kv");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.replaceChildren();
  const bx = (v) => 8 + (v / total) * (W - 16);
  el("rect", { class: "f3", x: 8, y: 50, width: W - 16, height: 36 }, svg);
  el("rect", { class: "f0", x: 8, y: 50, width: bx(kv.used) - 8, height: 36 }, svg);
  el("rect", { class: "f2", x: bx(kv.used), y: 50, width: bx(kv.cached) - 8, height: 36 }, svg);
  const note = el("text", { x: 8, y: 110 }, svg);
  note.textContent = kv.used + " used, " + kv.cached + " cached (prefix reuse), " + (kv.total - kv.used - kv.cached) + " free of " + kv.total;
  const note2 = el("text", { x: 8, y: 40 }, svg);
  const pc = e.prefix_cache;
  note2.textContent = "prefix hits: " + pc.hit_tokens + " of " + pc.lookup_tokens + " prompt tokens looked up";
}

// MARK: - Start

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", promptKey);
  $("stop").addEventListener("click", stop);
  $("new").addEventListener("click", newConversation);
  $("key-form").addEventListener("submit", submitKey);
  $("model-picker").addEventListener("change", pickModel);
  $("key-button").addEventListener("click", () => showKeyForm(""));
  $("tab-chat").addEventListener("click", () => selectTab("chat"));
  $("tab-engine").addEventListener("click", () => selectTab("engine"));
  $("tab-chat").addEventListener("keydown", tabKey);
  $("tab-engine").addEventListener("keydown", tabKey);
  probe().then((ok) => { if (ok) $("prompt").focus(); });
});
