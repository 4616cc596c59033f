// Ridgeline's page: the sweeps, a sweep's trials (a table paged, sorted and filtered
// by the coordinator), its optimisation history (aggregated by the server) and a
// trial's intermediate values and log; live through server-sent events.
"use strict";

const app = document.getElementById("app");
const conn = document.getElementById("conn");
let config = { allow_control: false, login: false };
let live = null; // the EventSource of the sweep on screen
let timer = null; // the sweeps list's refresh

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = Plot.fmt;

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  if (r.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function stateTag(s) { return `<span class="state ${esc(s)}">${esc(s)}</span>`; }

function done(st) {
  const c = st.counts;
  return c.completed + c.failed + c.diverged + c.cancelled + c.pruned;
}

function closeLive() {
  if (live) { live.close(); live = null; }
  conn.classList.remove("live");
  if (timer) { clearInterval(timer); timer = null; }
}

// ---- the sweeps ----

async function sweepsPage(seq) {
  const render = async () => {
    const { sweeps } = await api("/api/sweeps");
    if (seq !== routeSeq) return; // the page moved on while this was on its way
    app.innerHTML = `<h1>Sweeps</h1>
      <table id="sweeps"><thead><tr><th>name</th><th>id</th><th>kind</th><th>state</th>
      <th>progress</th><th>best</th><th>ETA</th><th>elapsed</th></tr></thead><tbody>
      ${sweeps.map((s) => `<tr data-id="${esc(s.id)}"><td>${esc(s.name)}</td><td class="muted">${esc(s.id)}</td>
        <td>${esc(s.kind)}</td><td>${stateTag(s.state)}</td>
        <td><span class="bar"><span style="width:${(100 * done(s)) / Math.max(1, s.total)}%"></span></span>
          ${done(s)}/${s.total}</td>
        <td>${s.best ? esc(s.metric) + " " + fmt(s.best.value) + " (trial " + s.best.trial + ")"
          : s.pareto.length ? s.pareto.length + " on the Pareto front" : "–"}</td>
        <td>${s.eta_s !== null ? duration(s.eta_s) : "–"}</td><td>${duration(s.elapsed_s)}</td></tr>`).join("")}
      </tbody></table>${sweeps.length ? "" : '<p class="muted">No sweeps yet.</p>'}`;
    app.querySelectorAll("#sweeps tbody tr").forEach((tr) =>
      tr.addEventListener("click", () => { location.hash = "#/sweep/" + tr.dataset.id; }));
  };
  await render();
  // A list of sweeps, not of trials: a refresh every few seconds costs one small call.
  if (seq === routeSeq) timer = setInterval(() => render().catch(() => {}), 5000);
}

// ---- one sweep ----

const view = { id: null, tab: "trials", offset: 0, limit: 50, sort: "trial", desc: false, states: [], status: null, trial: null };

function header(st) {
  const c = st.counts;
  const control = config.allow_control
    ? (st.state === "running" ? '<button id="cancel" class="ghost">Cancel</button>'
      : st.state === "cancelled" ? '<button id="resume" class="ghost">Resume</button>' : "") +
      (st.kind === "search" && st.state !== "cancelled" ? ' <button id="enqueue" class="ghost">Enqueue a trial</button>' : "")
    : "";
  return `<h1>${esc(st.name)} <span class="muted">${esc(st.id)}</span> ${stateTag(st.state)} ${control}</h1>
    <div class="summary" id="summary">
      <div><b id="progress">${done(st)}/${st.total}</b>${st.kind === "landscape" ? "units" : "trials"} ended</div>
      <div><b>${c.running}</b>running</div><div><b>${c.completed}</b>completed</div>
      <div><b>${c.pruned}</b>pruned</div><div><b>${c.failed + c.diverged}</b>failed or diverged</div>
      <div><b>${st.best ? fmt(st.best.value) + " (trial " + st.best.trial + ")" : st.pareto.length ? st.pareto.length + " trials" : "–"}</b>
        ${st.best ? "best " + esc(st.metric) : st.pareto.length ? "Pareto front, hypervolume " + fmt(st.hypervolume) : "best"}</div>
      <div><b>${st.eta_s !== null ? duration(st.eta_s) : "–"}</b>left (estimate)</div>
      <div><b>${duration(st.elapsed_s)}</b>elapsed</div>
    </div>`;
}

async function sweepPage(id, trial, seq = routeSeq) {
  if (view.id !== id) Object.assign(view, { id, offset: 0, sort: "trial", desc: false, states: [], tab: "trials", retries: 0 });
  view.trial = trial;
  const st = await api("/api/sweeps/" + encodeURIComponent(id));
  // A scan's arrays and reports: none until its tiles are assembled.
  const land = st.kind !== "landscape" ? null
    : await api(`/api/sweeps/${encodeURIComponent(id)}/landscape`).catch((e) => ({ error: e.message }));
  if (seq !== routeSeq) return; // the page moved on while these were on their way
  view.status = st;
  view.land = land;
  if (land && !["surface", "hessian", "curvature", "files"].includes(view.tab)) view.tab = "surface";
  const tabs = st.kind === "landscape"
    ? (view.land.error ? [["files", "Files"]] : Scan.tabs(view.land))
    : [["trials", "Trials"], ["history", "History"], ["parameters", "Parameters"]]
      .concat(st.objectives.length > 1 ? [["pareto", "Pareto front"]] : []);
  // Without a surface yet only the files show; the tab chosen stays for when it comes.
  if (!tabs.some(([t]) => t === view.tab) && !(view.land && view.land.error)) view.tab = tabs[0][0];
  app.innerHTML = `<div id="head">${header(st)}</div>
    <div class="tabs">${tabs.map(([t, label]) => `<a href="#" data-tab="${t}">${label}</a>`).join("")}</div>
    ${view.land && view.land.error ? `<p class="muted" id="no-surface">${esc(view.land.error)}</p>` : ""}
    <div id="body"></div>`;
  app.querySelectorAll(".tabs a").forEach((a) => a.addEventListener("click", (e) => {
    e.preventDefault(); view.tab = a.dataset.tab; view.trial = null;
    history.replaceState(null, "", "#/sweep/" + id); showTab();
  }));
  wireControl();
  await showTab();
  // An ended sweep changes no more (until resumed, which reloads the page).
  if (st.state === "running") listen(id);
  // A scan that has just ended may still be assembling its surface: look again.
  if (view.land && view.land.error && st.state === "completed" && (view.retries = (view.retries || 0) + 1) <= 30) {
    setTimeout(() => { if (view.id === id) sweepPage(id, null).catch(() => {}); }, 1000);
  }
}

function wireControl() {
  for (const action of ["cancel", "resume", "enqueue"]) {
    const b = document.getElementById(action);
    if (b) b.addEventListener("click", async () => {
      // Optuna's enqueue_trial: parameters given run next; those left out are sampled.
      let body;
      if (action === "enqueue") {
        body = prompt('Parameters of the trial to run next, as JSON (e.g. {"lr": 0.01}):');
        if (!body) return;
      }
      b.disabled = true;
      try {
        await api(`/api/sweeps/${encodeURIComponent(view.id)}/${action}`, { method: "POST", body });
        if (action === "enqueue") sweepPage(view.id, null);
      } catch (e) { alert(e.message); b.disabled = false; }
    });
  }
}

async function showTab() {
  const shown = view.land && view.land.error ? "files" : view.tab;
  app.querySelectorAll(".tabs a").forEach((a) => a.classList.toggle("active", a.dataset.tab === (view.trial !== null ? "" : shown)));
  if (view.trial !== null && view.trial !== undefined) return trialView(view.trial);
  if (view.status.kind === "landscape") {
    const tab = view.land && view.land.error ? "files" : view.tab;
    return Scan.show(document.getElementById("body"), view.id, tab, view.land || {});
  }
  const body = document.getElementById("body");
  if (view.tab === "parameters") return Analysis.show(body, view.id, view.status, api);
  if (view.tab === "pareto") return Analysis.pareto(body, view.id, view.status, api);
  return view.tab === "history" ? historyView() : trialsView();
}

// Every event refreshes what is on screen, at most once a second.
let pending = null;
function listen(id) {
  if (live) return;
  live = new EventSource(`/api/sweeps/${encodeURIComponent(id)}/events`);
  live.onopen = () => { conn.classList.add("live"); window.ridgelineStreams = (window.ridgelineStreams || 0) + 1; };
  live.onerror = () => {
    conn.classList.remove("live");
    // A dropped stream is retried by the browser; one refused (the coordinator still
    // down, say) is closed for good: open another a little later.
    if (live && live.readyState === EventSource.CLOSED && view.id === id) {
      live = null;
      setTimeout(() => { if (view.id === id && !live) listen(id); }, 2000);
    }
  };
  live.onmessage = (e) => {
    const st = JSON.parse(e.data);
    st.spec = view.status && view.status.spec;
    view.status = st;
    const head = document.getElementById("head");
    if (!head) return;
    head.innerHTML = header(st);
    wireControl();
    if (!pending && st.kind !== "landscape") pending = setTimeout(() => { pending = null; showTab().catch(() => {}); }, 1000);
    // Ended: nothing more will come (the browser would otherwise reconnect forever). A
    // scan's surface exists only now: the page is built again.
    if (st.state !== "running") {
      closeLive();
      if (st.kind === "landscape") sweepPage(view.id, null).catch(() => {});
    }
  };
}

function columnsOf(st, rows) {
  // The space's names, and any other parameter a trial has (PBT's pbt_parent).
  const space = [...(st.space || [])];
  rows.forEach((t) => Object.keys(t.params || {}).forEach((p) => { if (!space.includes(p)) space.push(p); }));
  const metrics = [];
  (st.objectives.length ? st.objectives : [st.metric]).forEach((m) => m && metrics.push(m));
  rows.forEach((t) => Object.keys(t.metrics).forEach((m) => { if (!metrics.includes(m)) metrics.push(m); }));
  return { space, metrics };
}

async function trialsView() {
  const st = view.status;
  const q = new URLSearchParams({ offset: view.offset, limit: view.limit, sort: view.sort, desc: view.desc ? 1 : 0, history: 1 });
  view.states.forEach((s) => q.append("state", s));
  const page = await api(`/api/sweeps/${encodeURIComponent(view.id)}/trials?${q}`);
  const { space, metrics } = columnsOf(st, page.trials);
  const cols = [["trial", "trial"], ["state", "state"]]
    .concat(space.map((p) => ["param:" + p, p]), metrics.map((m) => ["metric:" + m, m]),
      [["attempts", "attempts"], ["worker", "worker"], ["duration", "duration"]]);
  const states = ["pending", "running", "completed", "pruned", "failed", "diverged", "cancelled"];
  const body = document.getElementById("body");
  body.innerHTML = `<div class="filters">${states.map((s) => `<label><input type="checkbox" value="${s}"
      ${view.states.includes(s) ? "checked" : ""}> ${s}</label>`).join("")}</div>
    <div class="pager"><button class="ghost" id="prev">Previous</button>
      <span id="rows">${page.total ? view.offset + 1 : 0}–${view.offset + page.trials.length} of ${page.total}</span>
      <button class="ghost" id="next">Next</button></div>
    <div class="scroll"><table id="trials"><thead><tr>${cols.map(([k, label]) =>
      `<th data-key="${esc(k)}" class="${view.sort === k ? "sorted" + (view.desc ? " desc" : "") : ""}">${esc(label)}</th>`).join("")}</tr></thead>
    <tbody>${page.trials.map((t) => `<tr data-trial="${t.trial}">${cols.map(([k]) => cell(t, k)).join("")}</tr>`).join("")}</tbody></table></div>
    <h2>Intermediate values <span class="muted">of ${esc(metrics[0] || "")} for the trials above (✕: pruned there)</span></h2>
    <canvas id="intermediate-all"></canvas>`;
  // One curve per trial on this page: filtering and sorting choose which.
  const m = metrics[0];
  const curves = page.trials.filter((t) => t.history.length).map((t) => ({
    points: t.history.map((h) => [h.step, h[m], "trial " + t.trial]).filter((p) => Number.isFinite(p[1])), width: 1, marker: "dot", size: 1.5,
  }));
  const stops = page.trials.filter((t) => t.state === "pruned" && t.history.length).map((t) => {
    const last = [...t.history].reverse().find((h) => Number.isFinite(h[m]));
    return last ? [last.step, last[m], "trial " + t.trial] : null;
  }).filter(Boolean);
  curves.push({ name: "pruned", points: stops, line: false, marker: "x", color: "#c0392b" });
  Plot.draw(body.querySelector("#intermediate-all"), curves, { xlabel: "step", ylabel: m, height: 300 });
  body.querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
    const k = th.dataset.key;
    if (view.sort === k) view.desc = !view.desc; else { view.sort = k; view.desc = false; }
    view.offset = 0; trialsView();
  }));
  body.querySelectorAll(".filters input").forEach((cb) => cb.addEventListener("change", () => {
    view.states = [...body.querySelectorAll(".filters input:checked")].map((x) => x.value);
    view.offset = 0; trialsView();
  }));
  body.querySelector("#prev").disabled = view.offset === 0;
  body.querySelector("#next").disabled = view.offset + view.limit >= page.total;
  body.querySelector("#prev").addEventListener("click", () => { view.offset = Math.max(0, view.offset - view.limit); trialsView(); });
  body.querySelector("#next").addEventListener("click", () => { view.offset += view.limit; trialsView(); });
  body.querySelectorAll("tbody tr").forEach((tr) => tr.addEventListener("click", () => {
    location.hash = `#/sweep/${view.id}/trial/${tr.dataset.trial}`;
  }));
}

function cell(t, k) {
  if (k === "trial") return `<td class="num">${t.trial}</td>`;
  if (k === "state") return `<td>${stateTag(t.state)}</td>`;
  if (k === "attempts") return `<td class="num">${t.attempts}</td>`;
  if (k === "worker") return `<td>${esc(t.worker)}</td>`;
  if (k === "duration") return `<td class="num">${t.duration_s ? duration(t.duration_s) : "–"}</td>`;
  const [kind, name] = [k.slice(0, k.indexOf(":")), k.slice(k.indexOf(":") + 1)];
  const v = kind === "param" ? (t.params || {})[name] : t.metrics[name];
  return typeof v === "number" ? `<td class="num">${fmt(v)}</td>` : `<td>${esc(v ?? "–")}</td>`;
}

async function historyView() {
  const st = view.status;
  const objectives = st.objectives.length ? st.objectives : [st.metric];
  const metric = view.metric && objectives.includes(view.metric) ? view.metric : objectives[0];
  const h = await api(`/api/sweeps/${encodeURIComponent(view.id)}/history?metric=${encodeURIComponent(metric)}`);
  const body = document.getElementById("body");
  body.innerHTML = `<p>${objectives.length > 1 ? `<select id="metric">${objectives.map((m) =>
      `<option ${m === metric ? "selected" : ""}>${esc(m)}</option>`).join("")}</select>` : ""}
    <span class="muted" id="history-note">${h.count} completed trials of ${h.trials}${h.points.length < h.count
      ? `; ${h.points.length} drawn (each bucket's lowest and highest)` : ""}.</span>
    <label><input type="checkbox" id="logy" ${view.logy ? "checked" : ""}> log scale</label></p>
    <canvas id="history"></canvas>`;
  Plot.draw(document.getElementById("history"), [
    { name: esc(metric), points: h.points, line: false, marker: "dot", color: "#8fa8d8" },
    { name: "best so far", points: h.best, step: true, color: "#e4572e", width: 2 },
  ], { xlabel: "trial", ylabel: metric, logy: view.logy, height: 380, extendTo: h.trials - 1 });
  const sel = document.getElementById("metric");
  if (sel) sel.addEventListener("change", () => { view.metric = sel.value; historyView(); });
  document.getElementById("logy").addEventListener("change", (e) => { view.logy = e.target.checked; historyView(); });
}

async function trialView(n) {
  const t = await api(`/api/sweeps/${encodeURIComponent(view.id)}/trials/${n}`);
  const body = document.getElementById("body");
  const names = [];
  t.history.forEach((h) => Object.keys(h).forEach((k) => { if (k !== "step" && !names.includes(k)) names.push(k); }));
  body.innerHTML = `<p><a href="#/sweep/${esc(view.id)}">← all trials</a></p>
    <h2>Trial ${t.trial} ${stateTag(t.state)}</h2>
    <div class="grid2"><dl id="trial-params">${Object.entries(t.params || {}).map(([k, v]) =>
      `<dt>${esc(k)}</dt><dd>${typeof v === "number" ? fmt(v) : esc(v)}</dd>`).join("")}
      <dt>attempts</dt><dd>${t.attempts}</dd><dt>worker</dt><dd>${esc(t.worker || "–")}</dd>
      <dt>duration</dt><dd>${duration(t.duration_s)}</dd>${t.error ? `<dt>error</dt><dd class="error">${esc(t.error)}</dd>` : ""}</dl>
      <dl id="trial-metrics">${Object.entries(t.metrics).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${fmt(v)}</dd>`).join("")}</dl></div>
    <h2>Intermediate values</h2><canvas id="intermediate"></canvas>
    <h2>Log</h2><pre class="log" id="log"></pre>`;
  const series = names.map((m) => ({ name: esc(m), points: t.history.map((h) => [h.step, h[m]]), marker: "dot" }));
  // A pruned trial: where the scheduler stopped it, marked on its metric's curve.
  const metric = view.status.metric;
  if (t.state === "pruned" && t.history.length && metric) {
    const last = [...t.history].reverse().find((h) => Number.isFinite(h[metric]));
    if (last) series.push({ name: "pruned", points: [[last.step, last[metric]]], line: false, marker: "x", color: "#c0392b" });
  }
  Plot.draw(document.getElementById("intermediate"), series, { xlabel: "step", ylabel: "value", height: 300 });
  const r = await api(`/api/sweeps/${encodeURIComponent(view.id)}/trials/${n}/log`);
  document.getElementById("log").textContent = r.text || "(no log: built-in trials keep none, or nothing was printed)";
}

// ---- routing ----

// Each navigation's number: a page whose data arrives after a later navigation (the
// login's redirect to the list, then a link) does not draw over it.
let routeSeq = 0;

async function route() {
  const seq = ++routeSeq;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  try {
    if (parts[0] === "sweep" && parts[1]) {
      const id = decodeURIComponent(parts[1]);
      if (view.id !== id) closeLive();
      if (timer) { clearInterval(timer); timer = null; }
      return await sweepPage(id, parts[2] === "trial" ? +parts[3] : null, seq);
    }
    closeLive(); view.id = null;
    return await sweepsPage(seq);
  } catch (e) {
    if (seq === routeSeq) app.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

(async () => {
  try { config = await api("/api/config"); } catch (e) { /* shown by the route */ }
  document.getElementById("logout").hidden = !config.login;
  window.addEventListener("hashchange", route);
  route();
})();
