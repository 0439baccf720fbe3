// The lake browser's front end: hash routes (#/grid?sort=uniqueness) rendered from JSON views.
// Live, the JSON comes from the server's /api routes and images from /thumb and /image. In a static
// report (brain report) window.LAKEBRAIN_REPORT holds the same JSON, keyed by the same paths, and the
// thumbnails as data URIs; the grid's sorting, paging and map selection then run here over its rows.
"use strict";

const REPORT = window.LAKEBRAIN_REPORT || null;
const view = document.getElementById("view");

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(3);
  return String(value);
}

// A path with its parameters in the given order, empty ones left out: the key the report stores views under.
function apiPath(path, params = {}) {
  const query = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
  return query ? `${path}?${query}` : path;
}

async function api(path, body) {
  if (REPORT) return reportApi(path, body);
  const response = await fetch(path, body ? {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body)} : {});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function thumbUrl(id, size = 128) {
  if (REPORT) return REPORT.thumbs[id] || REPORT.placeholder;
  return `thumb/${encodeURIComponent(id)}?size=${size}`;
}

function imageUrl(id) {
  return REPORT ? thumbUrl(id) : `image/${encodeURIComponent(id)}`;
}

// --- the report's stand-in for /api/samples: the same sort, paging and id selection over its rows ---
function reportApi(path, body) {
  const [base, query] = path.split("?");
  if (base === "/api/samples") {
    const params = Object.fromEntries(new URLSearchParams(query || ""));
    Object.assign(params, body || {});
    if (params.where) throw new Error("WHERE filters need the live app (brain app); the report sorts and pages only");
    let rows = REPORT.samples;
    if (params.ids) { const wanted = new Set(params.ids); rows = rows.filter(r => wanted.has(r.sample_id)); }
    const sort = params.sort || null, desc = (params.order || "desc") === "desc";
    rows = [...rows].sort((a, b) => {
      if (sort) {
        const x = a[sort], y = b[sort];
        if (x !== y) {
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return desc ? y - x : x - y;
        }
      }
      return a.sample_id < b.sample_id ? -1 : 1;
    });
    const page = +(params.page || 0), perPage = +(params.per_page || 48);
    return {total: rows.length, page, per_page: perPage, sort, descending: desc, scores: REPORT.scores,
            items: rows.slice(page * perPage, (page + 1) * perPage)};
  }
  if (base.startsWith("/api/sample/") && !(path in REPORT.views)) {
    const row = REPORT.samples.find(r => r.sample_id === decodeURIComponent(base.slice("/api/sample/".length)));
    if (!row) throw new Error("this sample is not in the report");
    const scores = Object.fromEntries(REPORT.scores.filter(s => row[s] !== null && row[s] !== undefined).map(s => [s, row[s]]));
    return {sample: row, attributes: {}, scores, predictions: [], ground_truth: [], objects: [], neighbors: [],
            duplicates: [], partial: true};
  }
  if (base === "/api/map" && REPORT.views[apiPath(base, {key: new URLSearchParams(query || "").get("key")})]) {
    const params = new URLSearchParams(query || "");
    const data = structuredClone(REPORT.views[apiPath(base, {key: params.get("key")})]);
    const color = params.get("color");
    if (color) {
      const byId = new Map(REPORT.samples.map(r => [r.sample_id, r]));
      data.color = color;
      data.points.color = data.points.sample_id.map(id => (byId.get(id) || {})[color] ?? null);
    }
    return data;
  }
  if (path in REPORT.views) return REPORT.views[path];
  throw new Error(`${path} is not in this report (it holds the first page of each view)`);
}

// --- pieces ---
function card(item, {score = null, extra = "", kept = false} = {}) {
  const scoreText = score !== null && item[score] !== undefined ? `<div class="meta score">${esc(score)} ${fmt(item[score])}</div>` : "";
  return `<div class="card${kept ? " kept" : ""}" data-sample-id="${esc(item.sample_id)}"${score ? ` data-score="${esc(item[score] ?? "")}"` : ""}
      onclick="location.hash='#/sample/${encodeURIComponent(item.sample_id)}'">
    ${kept ? '<span class="badge kept">kept</span>' : ""}
    <img class="thumb" loading="lazy" src="${thumbUrl(item.sample_id)}" alt="${esc(item.sample_id)}">
    <div class="meta">${esc(item.label ?? "–")} · ${esc(item.split ?? "–")}</div>${scoreText}${extra}</div>`;
}

function pager(total, page, perPage, go) {
  const pages = Math.max(1, Math.ceil(total / perPage));
  const prev = page > 0 ? `<button id="prev" onclick="${go(page - 1)}">‹ prev</button>` : "";
  const next = page + 1 < pages ? `<button id="next" onclick="${go(page + 1)}">next ›</button>` : "";
  return `<div class="pager">${prev}<span class="muted">page ${page + 1} of ${pages} (${total})</span>${next}</div>`;
}

function routeTo(path, params) { return `location.hash='#${apiPath(path, params).replace(/'/g, "%27")}'`; }

function boxesSvg(objects, width, height) {
  // bbox is [x, y, w, h] relative to the image; the SVG's viewBox is the unit square.
  const lines = objects.map(o => {
    const [x, y, w, h] = o.bbox || [0, 0, 0, 0];
    const kind = o.possible_missing ? "missing" : o.possible_spurious ? "spurious" : o.source === "ground_truth" ? "truth" : "prediction";
    const colour = {truth: "#12b76a", prediction: "#f04438", missing: "#f79009", spurious: "#d444f1"}[kind];
    const dash = o.source === "ground_truth" ? "" : ' stroke-dasharray="0.02 0.012"';
    const text = `${o.label ?? ""}${o.confidence != null ? " " + fmt(o.confidence) : ""}${kind === "missing" ? " (missing?)" : kind === "spurious" ? " (spurious?)" : ""}`;
    return `<rect class="box box-${kind}" x="${x}" y="${y}" width="${w}" height="${h}" fill="none" stroke="${colour}"
              stroke-width="0.012"${dash}><title>${esc(text)}</title></rect>
            <text x="${x + 0.01}" y="${y + 0.05}" font-size="0.045" fill="${colour}">${esc(text)}</text>`;
  }).join("");
  return `<svg viewBox="0 0 1 1" preserveAspectRatio="none">${lines}</svg>`;
}

const LEGEND = `<div class="legend"><span><i style="background:#12b76a"></i>ground truth</span>
  <span><i style="background:#f04438"></i>prediction</span><span><i style="background:#f79009"></i>possible missing</span>
  <span><i style="background:#d444f1"></i>possible spurious</span></div>`;

// --- views ---
async function overview() {
  const data = await api("/api/overview");
  const datasets = data.datasets.map(d => `<tr><td><a href="#${apiPath("/grid", {dataset: d.dataset})}">${esc(d.dataset)}</a></td>
      <td>${d.samples}</td><td>${d.labels}</td><td>${esc((d.splits || []).join(", "))}</td></tr>`).join("");
  const scores = data.scores.map(s => `<a class="badge" href="#${apiPath("/grid", {sort: s.name})}">${esc(s.name)}</a>`).join(" ");
  const runs = data.runs.map(r => `<tr><td><a href="#${r.view}">${esc(r.brain_key)}</a>${r.current ? ' <span class="badge">current</span>' : ""}</td>
      <td>${esc(r.method)}</td><td>${esc(r.dataset)}</td><td class="status-${esc(r.status)}" title="${esc(r.error || "")}">${esc(r.status)}</td>
      <td>${esc((r.started_at || "").replace("T", " ").slice(0, 19))}</td><td>${esc((r.finished_at || "").replace("T", " ").slice(0, 19))}</td>
      <td>${esc(Object.entries(r.rows_written).map(([t, n]) => `${t} ${n}`).join(", "))}</td>
      <td><a href="#/run/${esc(r.run_id)}">${esc(r.run_id.slice(0, 8))}</a></td></tr>`).join("");
  view.innerHTML = `<h1>Overview</h1>
    <h2>Datasets</h2><table class="data" id="datasets"><tr><th>dataset</th><th>samples</th><th>labels</th><th>splits</th></tr>${datasets}</table>
    <h2>Scores of the current runs</h2><p>${scores || '<span class="muted">none yet</span>'}</p>
    <h2>Run catalog</h2><table class="data" id="runs"><tr><th>brain key</th><th>method</th><th>dataset</th><th>status</th>
      <th>started</th><th>finished</th><th>rows</th><th>run</th></tr>${runs}</table>`;
}

async function grid(params) {
  const sort = params.get("sort") || "", order = params.get("order") || "desc", where = params.get("where") || "";
  const page = +(params.get("page") || 0), dataset = params.get("dataset") || "";
  let data, problem = "";
  try {
    data = await api(apiPath("/api/samples", {sort, order, where, dataset, page, per_page: 48}));
  } catch (err) {  // keep the controls, so a bad WHERE can be fixed in place
    const scores = (await api(apiPath("/api/samples", {per_page: 1}))).scores;
    data = {total: 0, per_page: 48, scores, items: []};
    problem = `<p class="error" id="grid-error">${esc(err.message)}</p>`;
  }
  const options = ['<option value="">sample id</option>'].concat(data.scores.map(s =>
    `<option value="${esc(s)}"${s === sort ? " selected" : ""}>${esc(s)}</option>`)).join("");
  const go = p => routeTo("/grid", {sort, order, where, dataset, page: p});
  view.innerHTML = `<h1>Samples${dataset ? ` of ${esc(dataset)}` : ""}</h1>
    <div class="controls">
      <label>sort by <select id="sort">${options}</select></label>
      <select id="order"><option value="desc"${order === "desc" ? " selected" : ""}>highest first</option>
        <option value="asc"${order === "asc" ? " selected" : ""}>lowest first</option></select>
      <input id="where" type="text" placeholder="WHERE, e.g. split = 'test' AND uniqueness > 0.5" value="${esc(where)}">
      <button id="apply">apply</button>
    </div>
    ${problem}${pager(data.total, page, data.per_page, go)}
    <div class="grid" id="grid">${data.items.map(item => card(item, {score: sort || null})).join("")}</div>`;
  const apply = () => { location.hash = "#" + apiPath("/grid", {sort: document.getElementById("sort").value,
    order: document.getElementById("order").value, where: document.getElementById("where").value.trim(), dataset}); };
  document.getElementById("apply").onclick = apply;
  document.getElementById("sort").onchange = apply;
  document.getElementById("order").onchange = apply;
  document.getElementById("where").onkeydown = e => { if (e.key === "Enter") apply(); };
}

async function sample(id) {
  const data = await api(`/api/sample/${encodeURIComponent(id)}`);
  const s = data.sample;
  const objects = data.objects.length ? data.objects
    : data.ground_truth.map(o => ({...o, source: "ground_truth"})).concat(
        data.predictions.flatMap(p => (p.detections || []).map(o => ({...o, source: "prediction"}))));
  const size = Math.min(512, Math.max(256, s.width || 256));
  const fields = Object.entries(s).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(fmt(v))}</td></tr>`).join("");
  const scores = Object.entries(data.scores).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${fmt(v)}</td></tr>`).join("");
  const preds = data.predictions.map(p => `<tr><td>${esc(p.brain_key)}</td><td>${esc(p.label ?? "")}</td><td>${fmt(p.confidence)}</td>
      <td>${(p.detections || []).length}</td></tr>`).join("");
  const dups = data.duplicates.filter(d => d.sample_id !== s.sample_id || d.kept_sample_id !== s.sample_id);
  view.innerHTML = `<h1>Sample ${esc(s.sample_id)}</h1>
    <div class="sample-page">
      <div><div class="boxed"><img id="full" src="${imageUrl(s.sample_id)}" width="${size}" alt="${esc(s.sample_id)}">
        ${objects.length ? boxesSvg(objects) : ""}</div>${objects.length ? LEGEND : ""}
        <p class="live-only"><a id="similar-link" href="#/similar/${encodeURIComponent(s.sample_id)}">similar samples ›</a></p></div>
      <div><h2>Fields</h2><table class="data">${fields}</table>
        <h2>Scores</h2><table class="data" id="scores">${scores || '<tr><td class="muted">none</td></tr>'}</table>
        <h2>Predictions</h2><table class="data" id="predictions"><tr><th>key</th><th>label</th><th>confidence</th><th>boxes</th></tr>${preds}</table></div>
    </div>
    ${data.partial ? '<p class="muted">The report holds this sample\'s scores only; its neighbours and predictions are in the app.</p>' : ""}
    <h2>Nearest neighbours</h2><div class="grid" id="neighbors">${data.neighbors.map(n => card(n, {score: "distance"})).join("") || '<span class="muted">no kNN run</span>'}</div>
    ${dups.length ? `<h2>Duplicates</h2><div class="group">${dups.map(d => card(d, {score: "distance", kept: d.sample_id === d.kept_sample_id})).join("")}</div>` : ""}`;
}

async function groups(kind, params) {
  const key = params.get("key") || "", page = +(params.get("page") || 0);
  const data = await api(apiPath(`/api/${kind}`, {key, page}));
  const go = p => routeTo(`/${kind}`, {key: data.brain_key, page: p});
  view.innerHTML = `<h1>${kind === "leaks" ? "Leaks between splits" : "Duplicates"} <span class="muted">(${esc(data.brain_key)}, ${esc(data.method)})</span></h1>
    ${pager(data.total, page, data.per_page, go)}
    <div id="groups">${data.groups.map(g => `<div class="group" data-group-id="${esc(g.group_id)}">
      ${card(g.kept, {kept: true})}${g.members.map(m => card(m, {score: "distance"})).join("")}</div>`).join("")
      || '<p class="muted">no groups</p>'}</div>`;
}

async function mistakes(params) {
  const key = params.get("key") || "", page = +(params.get("page") || 0);
  const data = await api(apiPath("/api/mistakes", {key, page}));
  const go = p => routeTo("/mistakes", {key: data.brain_key, page: p});
  let body;
  if (data.kind === "mistakenness") {
    body = `<div class="grid" id="mistakes">${data.items.map(m => card({...m, label: m.given_label}, {score: "mistakenness",
      extra: `<div class="meta wrap">given <b>${esc(m.given_label)}</b> → predicted <b>${esc(m.predicted_label ?? m.suggested_label)}</b>
              ${m.confidence != null ? `(${fmt(m.confidence)})` : ""}</div>${m.is_issue ? '<span class="badge issue">issue</span>' : ""}`})).join("")}</div>`;
  } else {
    body = LEGEND + `<div class="grid" id="mistakes">${data.items.map(m => `<div class="card" data-sample-id="${esc(m.sample_id)}"
        onclick="location.hash='#/sample/${encodeURIComponent(m.sample_id)}'">
      <div class="boxed"><img class="thumb" src="${thumbUrl(m.sample_id, 256)}" alt="">${boxesSvg(m.objects)}</div>
      <div class="meta score">mistakenness ${fmt(m.mistakenness)}</div>
      <div class="meta">missing ${m.num_missing} · spurious ${m.num_spurious}</div></div>`).join("")}</div>`;
  }
  view.innerHTML = `<h1>Label mistakes <span class="muted">(${esc(data.brain_key)}, most likely first)</span></h1>
    ${pager(data.total, page, data.per_page, go)}${body}`;
}

async function map(params) {
  const key = params.get("key") || "", color = params.get("color") || "label";
  const data = await api(apiPath("/api/map", {key, color}));
  const options = data.fields.map(f => `<option${f === color ? " selected" : ""}>${esc(f)}</option>`).join("");
  view.innerHTML = `<h1>Map <span class="muted">(${esc(data.brain_key)}; drag a box or lasso to select)</span></h1>
    <div class="controls"><label>colour by <select id="color">${options}</select></label></div>
    <div id="map"></div><h2 id="selection-title" class="muted">Nothing selected</h2><div class="grid" id="selection"></div>`;
  document.getElementById("color").onchange = e => { location.hash = "#" + apiPath("/map", {key: data.brain_key, color: e.target.value}); };
  const p = data.points;
  const numeric = p.color.some(v => typeof v === "number");
  let traces;
  const common = {mode: "markers", type: p.x.length > 20000 ? "scattergl" : "scatter", hoverinfo: "none"};
  if (numeric) {
    traces = [{...common, x: p.x, y: p.y, customdata: p.sample_id, text: p.label, name: color,
               marker: {color: p.color, colorscale: "Viridis", showscale: true, size: 6, colorbar: {title: {text: color}}}}];
  } else {
    const groupsByValue = new Map();
    p.sample_id.forEach((id, i) => {
      const value = String(p.color[i] ?? "None");
      if (!groupsByValue.has(value)) groupsByValue.set(value, {x: [], y: [], ids: [], labels: []});
      const g = groupsByValue.get(value);
      g.x.push(p.x[i]); g.y.push(p.y[i]); g.ids.push(id); g.labels.push(p.label[i]);
    });
    traces = [...groupsByValue.entries()].sort().map(([value, g]) => ({...common, x: g.x, y: g.y, customdata: g.ids,
      text: g.labels, name: value, marker: {size: 6}}));
  }
  const plot = document.getElementById("map");
  await Plotly.newPlot(plot, traces, {dragmode: "select", margin: {l: 30, r: 10, t: 10, b: 30}, legend: {title: {text: color}},
                                      hovermode: "closest"}, {displaylogo: false, responsive: true});
  const hover = document.getElementById("hover-thumb");
  plot.on("plotly_hover", e => {
    const pt = e.points[0];
    hover.querySelector("img").src = thumbUrl(pt.customdata, 128);
    hover.querySelector("div").textContent = `${pt.text ?? ""} · ${pt.customdata}`;
    const at = e.event && e.event.clientX !== undefined ? e.event : plot.getBoundingClientRect();
    hover.style.left = ((at.clientX ?? at.left) + 16) + "px";
    hover.style.top = ((at.clientY ?? at.top) + 16) + "px";
    hover.hidden = false;
  });
  plot.on("plotly_unhover", () => { hover.hidden = true; });
  plot.on("plotly_selected", async e => {
    const ids = e && e.points ? [...new Set(e.points.map(pt => pt.customdata))] : [];
    await showSelection(ids);
  });
  plot.on("plotly_deselect", () => showSelection([]));
}

async function showSelection(ids) {
  const title = document.getElementById("selection-title"), target = document.getElementById("selection");
  if (!ids.length) { title.textContent = "Nothing selected"; target.innerHTML = ""; return; }
  const data = await api(apiPath("/api/samples", {per_page: 200}), {ids});
  title.textContent = `${data.total} selected` + (data.total > data.items.length ? ` (first ${data.items.length} shown)` : "");
  target.innerHTML = data.items.map(item => card(item)).join("");
}

async function similar(id) {
  const data = await api(apiPath(`/api/similar/${encodeURIComponent(id)}`, {k: 24}));
  view.innerHTML = `<h1>Similar to <a href="#/sample/${encodeURIComponent(id)}">${esc(id)}</a> <span class="muted">(${esc(data.brain_key)})</span></h1>
    <div class="grid" id="results">${card({sample_id: id, label: "query"}, {kept: false})}${data.items.map(n => card(n, {score: "distance"})).join("")}</div>`;
}

async function search(params) {
  const text = params.get("text") || "";
  view.innerHTML = `<h1>Search</h1><div class="controls"><input id="text" type="text" placeholder="a text query (CLIP indexes)" value="${esc(text)}">
    <button id="go">search</button></div><p class="muted">Or open a sample and follow “similar samples”.</p><div id="results"></div>`;
  const go = () => { location.hash = "#" + apiPath("/search", {text: document.getElementById("text").value.trim()}); };
  document.getElementById("go").onclick = go;
  document.getElementById("text").onkeydown = e => { if (e.key === "Enter") go(); };
  if (!text) return;
  const results = document.getElementById("results");
  try {
    const data = await api(apiPath("/api/search", {text, k: 24}));
    results.innerHTML = `<div class="grid">${data.items.map(n => card(n, {score: "distance"})).join("")}</div>`;
  } catch (err) {
    results.innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
}

async function run(id) {
  const data = await api(`/api/run/${encodeURIComponent(id)}`);
  view.innerHTML = `<h1>Run ${esc(data.run_id)} <span class="muted">(${esc(data.brain_key)}, ${esc(data.method)})</span></h1>
    <pre class="data">${esc(JSON.stringify(data, null, 2))}</pre>`;
}

// --- routing ---
async function render() {
  const hash = location.hash.slice(1) || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", a.getAttribute("href") === `#/${parts[0] || ""}`));
  document.getElementById("hover-thumb").hidden = true;
  view.dataset.ready = "false";
  try {
    switch (parts[0]) {
      case undefined: await overview(); break;
      case "grid": await grid(params); break;
      case "sample": await sample(decodeURIComponent(parts[1])); break;
      case "duplicates": case "leaks": await groups(parts[0], params); break;
      case "mistakes": await mistakes(params); break;
      case "map": await map(params); break;
      case "similar": await similar(decodeURIComponent(parts[1])); break;
      case "search": await search(params); break;
      case "run": await run(decodeURIComponent(parts[1])); break;
      default: view.innerHTML = `<p class="error">No page ${esc(path)}</p>`;
    }
  } catch (err) {
    view.innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
  view.dataset.ready = "true";
}

if (REPORT) {
  document.body.classList.add("report");
  document.getElementById("source").textContent = `static report of ${REPORT.lake}, ${REPORT.created}`;
}
window.addEventListener("hashchange", render);
render();
