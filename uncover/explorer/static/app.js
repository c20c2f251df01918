// uncover explorer front end: plain JS + SVG, plotly.js for heatmaps. Every number comes from the server.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const S = { info: null, prompt: "", run: null, pos: 0, lens: null, target: null, heads: null, head: null,
            attn: {}, dirty: {}, tab: "lens", busy: 0, circuit: null, node: null };
const $ = (id) => document.getElementById(id);

// ---- helpers -----------------------------------------------------------------------------------------
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
// A token as shown: newlines and tabs escaped; a token of only spaces as ␣ (one per space); an empty one as ∅.
function show(t) {
  const s = JSON.stringify(t).slice(1, -1);
  return s === "" ? "∅" : s.trim() === "" ? s.replace(/ /g, "␣") : s;
}
const p4 = (x) => Number(x).toFixed(4);
const f3 = (x) => Number(x).toFixed(3);
const tokLabel = (i, t) => `${i} ${show(t)}`;

function setError(msg) {
  const box = $("error");
  box.textContent = msg || "";
  box.hidden = !msg;
}

async function api(path, body) {
  const opts = { headers: { "X-Uncover-Token": TOKEN } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  S.busy += 1;
  $("status").textContent = "computing…";
  document.body.classList.add("busy");
  try {
    const res = await fetch(path, opts);
    const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
    if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
    return data;
  } finally {
    S.busy -= 1;
    if (!S.busy) { $("status").textContent = "ready"; document.body.classList.remove("busy"); }
  }
}

// Run an async view update; its error goes to the error box (the page keeps working).
async function guarded(fn) {
  try {
    await fn();
    return true;
  } catch (e) {
    setError(e.message);
    return false;
  }
}

function table(el, head, rows) {
  el.innerHTML = (head ? "<tr>" + head.map((h) => `<th>${esc(h)}</th>`).join("") + "</tr>" : "") + rows.join("");
}

function bar(value, scale) {
  const w = Math.round(60 * Math.min(1, Math.abs(value) / (scale || 1)));
  return `<span class="bar${value < 0 ? " neg" : ""}" style="width:${w}px"></span>`;
}

const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

// plotly.js is an async script: the first view's API calls run while the browser parses it
const plotlyReady = new Promise((resolve, reject) => {
  if (window.Plotly) return resolve(window.Plotly);
  const tag = document.getElementById("plotly-js");
  tag.addEventListener("load", () => resolve(window.Plotly));
  tag.addEventListener("error", () => reject(new Error("plotly.js did not load: restart `uncover serve`")));
});

async function plot(el, data, layout) {
  const Plotly = await plotlyReady;
  return Plotly.react(el, data, layout, PLOT_CONFIG);
}

// ---- prompt, tokens, next token ---------------------------------------------------------------------
async function runPrompt() {
  const prompt = $("prompt").value;
  $("run").disabled = true;
  const ok = await guarded(async () => {
    const run = await api("/api/run", { prompt, k: 10 });
    setError("");
    S.prompt = prompt;
    S.run = run;
    S.pos = run.tokens.length - 1;
    S.target = null;
    S.attn = {};
    S.dirty = { lens: true, attention: true, dla: true, sae: true, neurons: true, steer: false };
    renderTokens();
    table($("next-table"), ["#", "token", "probability"], run.next.map((n, i) =>
      `<tr data-id="${n.id}"><td>${i + 1}</td><td class="tokcell">${esc(show(n.token))}</td>` +
      `<td class="num">${p4(n.prob)}</td><td>${bar(n.prob, run.next[0].prob)}</td></tr>`));
  });
  $("run").disabled = false;
  if (ok) await refresh();
}

function renderTokens() {
  $("tokens").innerHTML = S.run.tokens.map((t, i) =>
    `<span class="tok${i === S.pos ? " selected" : ""}" data-pos="${i}"><small>${i}</small>${esc(show(t))}</span>`).join("");
}

async function selectPos(pos) {
  S.pos = pos;
  renderTokens();
  S.dirty.dla = true;
  if (S.lens) renderLensTable();
  if (S.head) renderAttnRow();
  highlightRow("sae-table");
  highlightRow("neuron-table");
  if (S.tab === "dla") await refresh();
}

function highlightRow(id) {
  for (const tr of $(id).querySelectorAll("tr[data-pos]")) tr.style.background = +tr.dataset.pos === S.pos ? "#fff4cc" : "";
}

// ---- tabs ------------------------------------------------------------------------------------------
async function openTab(name) {
  S.tab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  await refresh();
  window.dispatchEvent(new Event("resize"));  // plotly sizes plots that were hidden
}

async function refresh() {
  const tab = S.tab;
  if (tab === "circuit") return guarded(loadCircuitIfNeeded);
  if (tab === "steer") return;
  if (!S.run || !S.dirty[tab]) return;
  const views = { lens: loadLens, attention: loadAttention, dla: loadDla, sae: loadSae, neurons: loadNeurons };
  if (await guarded(views[tab])) S.dirty[tab] = false;
}

// ---- logit lens -----------------------------------------------------------------------------------
async function loadLens() {
  // default target: the top next token (its id is known from /api/run, which saves the server a forward)
  const body = { prompt: S.prompt, k: 5, target: S.target !== null ? S.target : S.run.next[0].id };
  const r = await api("/api/lens", body);
  S.lens = r;
  $("lens-target-shown").textContent = `target: ${show(r.target_token)} (id ${r.target})`;
  const x = r.tokens.map((t, i) => tokLabel(i, t));
  const text = r.top_ids.map((row) => row.map((ids) => show(r.vocab[ids[0]])));
  const hover = r.top_ids.map((row, l) => row.map((ids, p) =>
    ids.map((id, j) => `${esc(show(r.vocab[id]))} ${p4(r.top_probs[l][p][j])}`).join("<br>")));
  const trace = { type: "heatmap", z: r.target_prob, x, y: r.labels, text, customdata: hover, zmin: 0, zmax: 1,
    colorscale: "Blues", reversescale: true, texttemplate: "%{text}", textfont: { size: 9 },
    hovertemplate: "layer %{y}, position %{x}<br>target p = %{z:.4f}<br><b>top 5</b><br>%{customdata}<extra></extra>",
    colorbar: { title: { text: "target p" }, thickness: 12 } };
  const layout = { margin: { l: 80, r: 10, t: 10, b: 90 }, height: 130 + 22 * r.labels.length,
    xaxis: { tickangle: -45, type: "category", automargin: true }, yaxis: { type: "category", automargin: true } };
  await plot("lens-plot", [trace], layout);
  $("lens-plot").removeAllListeners?.("plotly_click");
  $("lens-plot").on("plotly_click", (ev) => selectPos(ev.points[0].pointIndex[1]));
  renderLensTable();
}

function renderLensTable() {
  const r = S.lens;
  const p = S.pos;
  $("lens-pos-title").textContent = `Position ${p} ${show(r.tokens[p])}: the lens at every layer`;
  table($("lens-table"), ["layer", "top token", "top p", `p(${show(r.target_token)})`, "target rank", "top 5"],
    r.labels.map((label, l) => `<tr data-layer="${l}"><td>${esc(label)}</td>` +
      `<td class="tokcell">${esc(show(r.vocab[r.top_ids[l][p][0]]))}</td><td class="num">${p4(r.top_probs[l][p][0])}</td>` +
      `<td class="num">${p4(r.target_prob[l][p])}</td><td class="num">${r.target_rank[l][p]}</td>` +
      `<td class="tokcell">${r.top_ids[l][p].map((id) => esc(show(r.vocab[id]))).join(" · ")}</td></tr>`));
}

// ---- attention ------------------------------------------------------------------------------------
const SCORE_NAMES = { induction: "induction", previous_token: "previous token", duplicate_token: "duplicate token",
                      copying: "copying" };

async function loadAttention() {
  if (!S.heads) S.heads = (await api("/api/heads")).scores;
  renderHeadGrid();
  if (!S.head) S.head = bestHead();
  await selectHead(...S.head);
}

function bestHead() {
  const s = S.heads[$("score-kind").value];
  let best = [0, 0];
  s.forEach((row, l) => row.forEach((v, h) => { if (v > s[best[0]][best[1]]) best = [l, h]; }));
  return best;
}

function colour(v, scale) {
  const a = Math.min(1, Math.abs(v) / scale).toFixed(3);
  return v >= 0 ? `rgba(47,95,208,${a})` : `rgba(208,65,47,${a})`;
}

function renderHeadGrid() {
  const kind = $("score-kind").value;
  const s = S.heads[kind];
  const nh = S.info.cfg.n_heads;
  const scale = Math.max(...s.flat().map(Math.abs)) || 1;
  $("score-scale").textContent = `darkest = ${p4(scale)}${kind === "copying" ? " (red: negative)" : ""}`;
  let html = "<table><tr><th></th>" + [...Array(nh).keys()].map((h) => `<th>H${h}</th>`).join("") + "</tr>";
  s.forEach((row, l) => {
    html += `<tr><th>L${l}</th>` + row.map((v, h) => {
      const sel = S.head && S.head[0] === l && S.head[1] === h ? " selected" : "";
      return `<td class="head${sel}" data-layer="${l}" data-head="${h}" title="L${l}H${h} ${SCORE_NAMES[kind]} ${p4(v)}"` +
        ` style="background:${colour(v, scale)}"></td>`;
    }).join("") + "</tr>";
  });
  $("head-grid").innerHTML = html + "</table>";
}

async function selectHead(layer, head) {
  S.head = [layer, head];
  renderHeadGrid();
  if (!S.attn[layer]) S.attn[layer] = await api("/api/attention", { prompt: S.prompt, layer });
  const r = S.attn[layer];
  const scores = Object.keys(SCORE_NAMES).map((k) => `${SCORE_NAMES[k]} ${p4(S.heads[k][layer][head])}`).join(", ");
  $("attn-title").textContent = `L${layer}H${head} attention pattern (${scores})`;
  const labels = r.tokens.map((t, i) => tokLabel(i, t));
  const trace = { type: "heatmap", z: r.pattern[head], x: labels, y: labels, zmin: 0, zmax: 1, colorscale: "Blues",
    reversescale: true, hovertemplate: "query %{y}<br>key %{x}<br>attention %{z:.4f}<extra></extra>", colorbar: { thickness: 12 } };
  const side = Math.min(700, 160 + 18 * labels.length);
  const layout = { margin: { l: 100, r: 10, t: 10, b: 100 }, height: side, width: side + 80,
    xaxis: { type: "category", tickangle: -45, title: { text: "key" } },
    yaxis: { type: "category", autorange: "reversed", title: { text: "query" } } };
  await plot("attn-plot", [trace], layout);
  $("attn-plot").removeAllListeners?.("plotly_click");
  $("attn-plot").on("plotly_click", (ev) => selectPos(ev.points[0].pointIndex[0]));
  renderAttnRow();
}

function renderAttnRow() {
  const r = S.attn[S.head[0]];
  if (!r) return;
  const row = r.pattern[S.head[1]][S.pos];
  $("attn-row-title").textContent = `Where position ${S.pos} ${show(r.tokens[S.pos])} attends (L${S.head[0]}H${S.head[1]})`;
  const order = row.map((v, k) => [v, k]).filter(([, k]) => k <= S.pos).sort((a, b) => b[0] - a[0]).slice(0, 12);
  table($("attn-table"), ["key", "token", "attention"], order.map(([v, k]) =>
    `<tr data-key="${k}"><td>${k}</td><td class="tokcell">${esc(show(r.tokens[k]))}</td><td class="num">${p4(v)}</td>` +
    `<td>${bar(v, 1)}</td></tr>`));
}

// ---- direct logit attribution -----------------------------------------------------------------------
async function loadDla() {
  const body = { prompt: S.prompt, pos: S.pos };
  const typed = $("dla-token").value;
  if (typed) body.token = typed;
  const r = await api("/api/dla", body);
  const { n_layers: L, n_heads: H } = S.info.cfg;
  const cols = [...[...Array(H).keys()].map((h) => `H${h}`), "attn other", "MLP"];
  const index = Object.fromEntries(r.labels.map((l, i) => [l, i]));
  const z = [...Array(L).keys()].map((l) => [
    ...[...Array(H).keys()].map((h) => r.values[index[`L${l}H${h}`]]),
    r.values[index[`L${l} attn other`]], r.values[index[`L${l} mlp`]]]);
  const m = Math.max(...r.values.map(Math.abs)) || 1;
  const trace = { type: "heatmap", z, x: cols, y: [...Array(L).keys()].map((l) => `L${l}`), zmid: 0, zmin: -m, zmax: m,
    colorscale: "RdBu", reversescale: true, hovertemplate: "%{y} %{x}<br>%{z:.3f}<extra></extra>",
    colorbar: { title: { text: "logit" }, thickness: 12 } };
  const layout = { margin: { l: 50, r: 10, t: 10, b: 40 }, height: 100 + 16 * L,
    xaxis: { type: "category" }, yaxis: { type: "category", autorange: "reversed" } };
  await plot("dla-plot", [trace], layout);
  $("dla-summary").innerHTML = `Logit of <b class="tokcell" id="dla-token-shown">${esc(show(r.token))}</b> at position ` +
    `${r.pos} ${esc(show(S.run.tokens[r.pos]))}: <span id="dla-actual">${f3(r.actual)}</span>; sum of the parts ` +
    `<span id="dla-total">${f3(r.total)}</span>; embedding <span id="dla-embed">${f3(r.values[index.embed])}</span>.`;
  const order = r.values.map((v, i) => [v, i]).sort((a, b) => Math.abs(b[0]) - Math.abs(a[0])).slice(0, 15);
  table($("dla-table"), ["part", "logit"], order.map(([v, i]) =>
    `<tr data-label="${esc(r.labels[i])}"><td>${esc(r.labels[i])}</td><td class="num">${f3(v)}</td><td>${bar(v, m)}</td></tr>`));
}

// ---- SAE features and neurons ----------------------------------------------------------------------
async function loadSae() {
  const name = $("sae-select").value;
  const meta = S.info.saes.find((s) => s.name === name);
  table($("sae-table"), null, []);  // nothing of another SAE stays on screen if this one fails
  $("feature-page").hidden = true;
  if (!meta) {
    $("sae-info").textContent = "No SAE loaded: start the server with --sae DIR (SAELens format).";
    table($("sae-table"), null, []);
    return;
  }
  $("sae-info").textContent = `${meta.hook}, ${meta.d_sae} latents (${meta.architecture})`;
  const r = await api("/api/sae", { prompt: S.prompt, sae: name, k: 5 });
  table($("sae-table"), ["pos", "token", "L0", "top latents (activation)"], r.tokens.map((t, p) =>
    `<tr data-pos="${p}"><td>${p}</td><td class="tokcell">${esc(show(t))}</td><td class="num">${r.l0[p]}</td><td>` +
    r.latents[p].map((id, j) => r.acts[p][j] > 0 ?
      `<span class="chip" data-latent="${id}" data-act="${r.acts[p][j]}">#${id} ${f3(r.acts[p][j])}</span>` : "").join("") +
    "</td></tr>"));
  highlightRow("sae-table");
}

async function loadNeurons() {
  const layer = +$("neuron-layer").value;
  table($("neuron-table"), null, []);
  $("neuron-page").hidden = true;
  const r = await api("/api/neurons", { prompt: S.prompt, layer, k: 5 });
  table($("neuron-table"), ["pos", "token", `top neurons of layer ${layer} (activation)`], r.tokens.map((t, p) =>
    `<tr data-pos="${p}"><td>${p}</td><td class="tokcell">${esc(show(t))}</td><td>` +
    r.neurons[p].map((n, j) =>
      `<span class="chip" data-neuron="${n}" data-act="${r.acts[p][j]}">n${n} ${f3(r.acts[p][j])}</span>`).join("") +
    "</td></tr>"));
  highlightRow("neuron-table");
}

function renderCard(el, card) {
  const ctx = card.contexts.map(([words, acts]) => {
    const m = card.max_activation || 1;
    return "<div class='ctx'>" + words.map((w, i) => {
      const a = Math.max(0, acts[i] / m);
      return `<span style="background:rgba(255,140,0,${a.toFixed(2)})" title="${f3(acts[i])}">${esc(w)}</span>`;
    }).join("") + "</div>";
  }).join("");
  const effects = (tokens, logits) => tokens.map((t, i) =>
    `<tr><td class="tokcell">${esc(show(t))}</td><td class="num">${f3(logits[i])}</td></tr>`).join("");
  el.hidden = false;
  el.innerHTML = `<h2>${esc(card.title)}</h2>` +
    `<p>max activation <b class="max-act">${f3(card.max_activation)}</b> · polysemanticity ` +
    `${Number.isFinite(card.polysemanticity) ? card.polysemanticity.toFixed(2) : "n/a"} (distinct peak tokens) · fires on ` +
    `${(100 * card.firing_rate).toFixed(1)}% of the tokens of its top contexts</p>` +
    `<div class="row"><div class="wide"><h3>Top contexts (corpus)</h3>${ctx}</div>` +
    `<div class="narrow"><h3>Activation histogram (top contexts)</h3><div class="hist plot"></div></div></div>` +
    `<div class="row"><div><h3>Promotes (logit effect)</h3><table class="numbers">` +
    `${effects(card.top_tokens, card.top_logits)}</table></div><div><h3>Suppresses</h3><table class="numbers">` +
    `${effects(card.bottom_tokens, card.bottom_logits)}</table></div></div>`;
  const h = card.histogram;
  if (h.counts.length) {
    const centres = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
    guarded(() => plot(el.querySelector(".hist"), [{ type: "bar", x: centres, y: h.counts, marker: { color: "#2f5fd0" } }],
      { margin: { l: 40, r: 10, t: 5, b: 30 }, height: 200, xaxis: { title: { text: "activation" } } }));
  }
  el.scrollIntoView({ behavior: "instant", block: "nearest" });
}

// ---- steering ---------------------------------------------------------------------------------------
function fillSteerLayers() {
  const src = $("steer-source").value;
  const [kind, name] = [src.split(":")[0], src.slice(src.indexOf(":") + 1)];
  const all = [...Array(S.info.cfg.n_layers).keys()];
  let layers = all;
  let def = Math.floor(all.length / 2);
  if (kind === "direction") {
    layers = S.info.directions.find((d) => d.name === name).layers;
    def = layers[0];
  } else if (kind === "sae") {
    const sae = S.info.saes.find((s) => s.name === name);
    layers = [sae.layer];
    def = sae.layer;
  }
  $("steer-layer").innerHTML = layers.map((l) => `<option value="${l}"${l === def ? " selected" : ""}>${l}</option>`).join("");
  $("steer-layer").disabled = kind === "sae";
  $("steer-latent-label").hidden = kind !== "sae";
}

async function runSteer() {
  if (!S.run) await runPrompt();
  const src = $("steer-source").value;
  const body = { prompt: S.prompt, source: src, coeff: +$("steer-coeff").value, max_new_tokens: +$("steer-tokens").value,
                 k: 8 };
  if (src.startsWith("sae:")) body.latent = +$("steer-latent").value; else body.layer = +$("steer-layer").value;
  await guarded(async () => {
    const r = await api("/api/steer", body);
    setError("");
    const rows = (list, key) => list.map((x) => `<tr><td class="tokcell">${esc(show(x.token))}</td>` +
      `<td class="num">${p4(x[key])}</td></tr>`).join("");
    const shift = (list) => list.map((x) => `<tr><td class="tokcell">${esc(show(x.token))}</td><td class="num">${p4(x.before)}</td>` +
      `<td class="num">${p4(x.after)}</td><td class="num">${x.shift >= 0 ? "+" : ""}${p4(x.shift)}</td></tr>`).join("");
    const head = "<tr><th>token</th><th>before</th><th>after</th><th>shift</th></tr>";
    $("steer-out").innerHTML =
      `<div class="wide"><h3>Unsteered</h3><div class="gen" id="gen-plain"><b>${esc(S.prompt)}</b>${esc(r.unsteered)}</div>` +
      `<table class="numbers">${rows(r.top_before, "before")}</table></div>` +
      `<div class="wide"><h3>Steered (${esc(src)} × ${body.coeff} at ${esc(r.hooks.join(", "))})</h3>` +
      `<div class="gen" id="gen-steered"><b>${esc(S.prompt)}</b>${esc(r.steered)}</div>` +
      `<table class="numbers">${rows(r.top_after, "after")}</table></div>` +
      `<div class="wide"><h3>Largest probability gains</h3><table class="numbers" id="steer-up">${head}${shift(r.up)}</table>` +
      `<h3>Largest losses</h3><table class="numbers" id="steer-down">${head}${shift(r.down)}</table></div>`;
  });
}

// ---- circuit graph ------------------------------------------------------------------------------------
async function loadCircuitIfNeeded() {
  const name = $("circuit-select").value;
  if (!name) {
    $("circuit-meta").textContent = "No circuit loaded: start the server with --circuit FILE.json " +
      "(`uncover circuit ... --out DIR` writes one; the format is documented in uncover/components/circuits/export.py).";
    return;
  }
  if (S.circuit && S.circuit.name === name) return;
  const g = await api(`/api/circuit/${encodeURIComponent(name)}`);
  S.circuit = { name, g };
  S.node = null;
  const slider = $("circuit-edges");
  slider.max = Math.max(1, g.edges.length);
  slider.value = Math.min(40, g.edges.length);
  const meta = ["title", "model", "task", "metric"].filter((k) => g[k]).map((k) => `${k}: ${g[k]}`).join(" · ");
  $("circuit-meta").textContent = `${meta}${meta ? " · " : ""}${g.nodes.length} nodes, ${g.edges.length} edges`;
  drawCircuit();
}

// which input of the target an edge feeds (a head's q / k / v), if the graph says
const inputOf = (e) => (e.input !== undefined ? ` (${esc(String(e.input))})` : "");

const KIND_COLOURS = { embed: "#9aa6c0", head: "#ffb347", mlp: "#7fc97f", logits: "#c39bd3" };

function drawCircuit() {
  const g = S.circuit.g;
  const n = +$("circuit-edges").value;
  $("circuit-edges-n").textContent = `${n} of ${g.edges.length} (largest |score|)`;
  const edges = [...g.edges].sort((a, b) => Math.abs(b.score) - Math.abs(a.score)).slice(0, n);
  const used = new Set(edges.flatMap((e) => [e.source, e.target]));
  const nodes = g.nodes.filter((v) => used.has(v.id) || !g.edges.length);
  const layers = [...new Set(nodes.map((v) => v.layer))].sort((a, b) => a - b);
  const byLayer = layers.map((l) => nodes.filter((v) => v.layer === l));
  const W = Math.max(600, 70 * Math.max(...byLayer.map((r) => r.length), 1) + 80);
  const H = 60 + 60 * Math.max(0, layers.length - 1);
  const pos = {};
  const rank = Object.fromEntries(layers.map((l, i) => [l, i]));
  byLayer.forEach((row, i) => row.forEach((v, j) => {
    pos[v.id] = [60 + (W - 100) * (row.length === 1 ? 0.5 : j / (row.length - 1)), H - 30 - 60 * i];
  }));
  const m = Math.max(...edges.map((e) => Math.abs(e.score)), 1e-12);
  const ns = "http://www.w3.org/2000/svg";
  let svg = `<svg xmlns="${ns}" width="${W + 50}" height="${H}">`;  // room for the last label
  layers.forEach((l, i) => { svg += `<text x="4" y="${H - 26 - 60 * i}" font-size="10" fill="#8a93a3">layer ${l}</text>`; });
  const nodeOf = Object.fromEntries(nodes.map((v) => [v.id, v]));
  for (const e of edges) {
    const [x1, y1] = pos[e.source];
    const [x2, y2] = pos[e.target];
    const w = 0.5 + 5 * Math.abs(e.score) / m;
    const c = e.score >= 0 ? "#2f5fd0" : "#d0412f";
    const lit = S.node && (e.source === S.node || e.target === S.node);
    const op = S.node ? (lit ? 0.9 : 0.1) : 0.55;
    const span = Math.abs(rank[nodeOf[e.target].layer] - rank[nodeOf[e.source].layer]);
    const bow = span > 1 ? 25 * span : 0;  // edges that skip layers curve aside
    const lift = span === 0 ? 30 : 0;  // edges within a layer (a head into its block's MLP) arch above the row
    svg += `<path class="edge" d="M${x1},${y1} C${x1 + bow},${y1 + (y2 - y1) / 3 - lift} ${x2 + bow},${y2 - (y2 - y1) / 3 - lift} ${x2},${y2}" ` +
      `stroke="${c}" stroke-width="${w.toFixed(2)}" stroke-opacity="${op}" fill="none">` +
      `<title>${esc(e.source)} → ${esc(e.target)}${inputOf(e)}: ${f3(e.score)}</title></path>`;
  }
  for (const v of nodes) {
    const [x, y] = pos[v.id];
    svg += `<g class="node${v.id === S.node ? " selected" : ""}" data-id="${esc(v.id)}"><circle cx="${x}" cy="${y}" r="9" ` +
      `fill="${KIND_COLOURS[v.kind] || "#dde1e8"}"><title>${esc(v.label || v.id)}${v.score !== undefined ? `: ${f3(v.score)}` : ""}` +
      `</title></circle><text x="${x + 11}" y="${y + 3}">${esc(v.label || v.id)}</text></g>`;
  }
  $("circuit-svg").innerHTML = svg + "</svg>";
}

function selectNode(id) {
  S.node = id;
  drawCircuit();
  const g = S.circuit.g;
  const mine = g.edges.filter((e) => e.source === id || e.target === id)
    .sort((a, b) => Math.abs(b.score) - Math.abs(a.score));
  $("circuit-node-title").textContent = `${id}: ${mine.length} edges`;
  table($("circuit-table"), ["edge", "score"], mine.slice(0, 30).map((e) =>
    `<tr><td>${e.source === id ? "→ " + esc(e.target) : "← " + esc(e.source)}${inputOf(e)}</td><td class="num">${f3(e.score)}</td></tr>`));
}

// ---- start ---------------------------------------------------------------------------------------------
async function start() {
  const first = runPrompt();  // the default prompt's views need nothing from /api/info: fetch both at once
  S.info = await api("/api/info");
  const c = S.info.cfg;
  $("model-info").textContent = `${S.info.model}: ${c.architecture}, ${c.n_layers} layers × ${c.n_heads} heads, ` +
    `d_model ${c.d_model}, vocabulary ${c.d_vocab}`;
  $("sae-select").innerHTML = S.info.saes.map((s) =>
    `<option value="${esc(s.name)}">${esc(s.name)} (${esc(s.hook)})${s.error ? " — unusable" : ""}</option>`).join("");
  $("neuron-layer").innerHTML = [...Array(c.n_layers).keys()].map((l) => `<option value="${l}">${l}</option>`).join("");
  $("neuron-layer").value = Math.floor(c.n_layers / 2);
  $("steer-source").innerHTML =
    S.info.directions.map((d) => `<option value="direction:${esc(d.name)}">direction ${esc(d.name)}</option>`).join("") +
    S.info.concepts.map((n) => `<option value="concept:${esc(n)}">concept ${esc(n)} (CAA, built on first use)</option>`).join("") +
    S.info.saes.filter((s) => !s.error).map((s) => `<option value="sae:${esc(s.name)}">SAE ${esc(s.name)} latent</option>`).join("");
  fillSteerLayers();
  $("circuit-select").innerHTML = S.info.circuits.map((g) =>
    `<option value="${esc(g.name)}">${esc(g.name)} (${g.nodes} nodes, ${g.edges} edges)</option>`).join("");

  $("run").addEventListener("click", runPrompt);
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); runPrompt(); } });
  $("tokens").addEventListener("click", (e) => { const t = e.target.closest(".tok"); if (t) selectPos(+t.dataset.pos); });
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => openTab(b.dataset.tab));
  $("lens-apply").addEventListener("click", () => { S.target = $("lens-target").value || null; S.dirty.lens = true; refresh(); });
  $("score-kind").addEventListener("change", () => { if (S.heads) renderHeadGrid(); });
  $("head-grid").addEventListener("click", (e) => {
    const td = e.target.closest("td.head");
    if (td) guarded(() => selectHead(+td.dataset.layer, +td.dataset.head));
  });
  $("dla-apply").addEventListener("click", () => { S.dirty.dla = true; refresh(); });
  $("sae-select").addEventListener("change", () => { S.dirty.sae = true; refresh(); });
  $("neuron-layer").addEventListener("change", () => { S.dirty.neurons = true; refresh(); });
  $("sae-table").addEventListener("click", (e) => {
    const chip = e.target.closest(".chip");
    if (chip) guarded(async () => renderCard($("feature-page"),
      await api(`/api/feature?sae=${encodeURIComponent($("sae-select").value)}&latent=${chip.dataset.latent}`)));
  });
  $("neuron-table").addEventListener("click", (e) => {
    const chip = e.target.closest(".chip");
    if (chip) guarded(async () => renderCard($("neuron-page"),
      await api(`/api/neuron?layer=${$("neuron-layer").value}&neuron=${chip.dataset.neuron}`)));
  });
  $("steer-source").addEventListener("change", fillSteerLayers);
  $("steer-run").addEventListener("click", runSteer);
  $("circuit-select").addEventListener("change", () => guarded(loadCircuitIfNeeded));
  $("circuit-edges").addEventListener("input", () => { if (S.circuit) drawCircuit(); });
  $("circuit-svg").addEventListener("click", (e) => { const g = e.target.closest(".node"); if (g) selectNode(g.dataset.id); });
  await first;
  document.body.dataset.ready = "1";
}

window.addEventListener("DOMContentLoaded", () => guarded(start));
