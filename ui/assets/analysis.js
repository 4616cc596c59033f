// A search's analysis: parameter importance, parallel coordinates, slices, a contour
// of the objective over two parameters, and the Pareto front of several objectives.
// The server sends at most a few thousand completed trials (the best among them) and
// computes the importance over all.
"use strict";

const Analysis = (() => {
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = Plot.fmt;
  const ui = { a: null, b: null };

  // A parameter's values as numbers on its axis (log10 for log-uniform ones).
  function axis(cols, p) {
    const c = cols.columns["param:" + p.name];
    const raw = c.values;
    const v = raw.map((x) => (x === null ? NaN : p.log ? Math.log10(x) : x));
    const label = (x) => (c.labels.length ? c.labels[Math.round(x)] ?? fmt(x) : p.log ? fmt(Math.pow(10, x)) : fmt(x));
    return { name: p.name, v, label, categorical: p.categorical || c.labels.length > 0, log: p.log };
  }

  function objectiveColors(vals, max) {
    const fin = vals.filter((v) => v !== null && Number.isFinite(v));
    const lo = Math.min(...fin), hi = Math.max(...fin);
    // Darkest is best.
    return vals.map((v) => (v === null ? [200, 200, 200] : Landscape.color(max ? (hi - v) / (hi - lo || 1) : (v - lo) / (hi - lo || 1))));
  }

  function parallel(canvas, cols, axes, obj, max) {
    const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth || 900, h = 380;
    canvas.width = w * dpr; canvas.height = h * dpr; canvas.style.height = h + "px";
    const g = canvas.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const all = axes.concat([{ name: obj, v: cols.columns["metric:" + obj].values.map((x) => (x === null ? NaN : x)), label: fmt }]);
    const m = { l: 50, r: 50, t: 30, b: 30 };
    const X = (k) => m.l + (k * (w - m.l - m.r)) / Math.max(1, all.length - 1);
    const ranges = all.map((a) => {
      const f = a.v.filter(Number.isFinite);
      const lo = Math.min(...f), hi = Math.max(...f);
      return [lo, hi > lo ? hi : lo + 1];
    });
    const Y = (k, v) => m.t + (h - m.t - m.b) * (1 - (v - ranges[k][0]) / (ranges[k][1] - ranges[k][0]));
    const colors = objectiveColors(cols.columns["metric:" + obj].values, max);
    // Worst first, so that the best are drawn on top.
    const order = cols.trials.map((_, i) => i).sort((i, j) => {
      const a = all[all.length - 1].v[i], b = all[all.length - 1].v[j];
      return max ? a - b : b - a;
    });
    g.lineWidth = 1;
    order.forEach((i) => {
      const [r, gg, b] = colors[i];
      g.strokeStyle = `rgba(${r},${gg},${b},0.45)`;
      g.beginPath();
      all.forEach((a, k) => (k ? g.lineTo(X(k), Y(k, a.v[i])) : g.moveTo(X(k), Y(k, a.v[i]))));
      g.stroke();
    });
    g.fillStyle = "#1d2433"; g.strokeStyle = "#1d2433"; g.font = "12px system-ui, 'DejaVu Sans', sans-serif";
    all.forEach((a, k) => {
      g.beginPath(); g.moveTo(X(k), m.t); g.lineTo(X(k), h - m.b); g.stroke();
      g.textAlign = "center"; g.fillText(a.name, X(k), m.t - 12);
      g.textAlign = "left";
      g.fillText(a.label(ranges[k][1]), X(k) + 4, m.t + 4);
      g.fillText(a.label(ranges[k][0]), X(k) + 4, h - m.b - 2);
    });
  }

  function contour(canvas, A, B, obj, vals, max) {
    // The objective's mean per cell of a 20 × 20 grid over the two parameters.
    const n = 20;
    const range = (v) => { const f = v.filter(Number.isFinite); return [Math.min(...f), Math.max(...f)]; };
    const [a0, a1] = range(A.v), [b0, b1] = range(B.v);
    const sum = Array.from({ length: n }, () => new Array(n).fill(0)), cnt = Array.from({ length: n }, () => new Array(n).fill(0));
    A.v.forEach((a, i) => {
      const b = B.v[i], z = vals[i];
      if (!Number.isFinite(a) || !Number.isFinite(b) || z === null) return;
      const j = Math.min(n - 1, Math.floor(((a - a0) / (a1 - a0 || 1)) * n)), k = Math.min(n - 1, Math.floor(((b - b0) / (b1 - b0 || 1)) * n));
      sum[k][j] += z; cnt[k][j] += 1;
    });
    const z = sum.map((row, k) => row.map((s, j) => (cnt[k][j] ? (max ? -s : s) / cnt[k][j] : null)));
    const xs = Array.from({ length: n }, (_, j) => a0 + ((j + 0.5) * (a1 - a0)) / n);
    const ys = Array.from({ length: n }, (_, k) => b0 + ((k + 0.5) * (b1 - b0)) / n);
    Landscape.heatmap(canvas, xs, ys, z, { title: `${max ? "−" : ""}${obj}, mean per cell (darkest best)`, levels: 8, height: 400,
      xlabel: `${A.log ? "log10 " : ""}${A.name} (x), ${B.log ? "log10 " : ""}${B.name} (y)` });
  }

  async function show(body, id, status, api) {
    const cols = await api(`/api/sweeps/${encodeURIComponent(id)}/columns`);
    const obj = cols.objectives[0], max = cols.modes[0] === "max";
    if (!cols.completed) { body.innerHTML = '<p class="muted">No completed trials yet.</p>'; return; }
    const axes = cols.params.map((p) => axis(cols, p));
    // By default the first two numeric parameters (a choice makes a poor axis).
    const byDefault = axes.filter((x) => !x.categorical).concat(axes.filter((x) => x.categorical));
    if (!ui.a || !axes.some((x) => x.name === ui.a)) ui.a = byDefault[0] && byDefault[0].name;
    if (!ui.b || !axes.some((x) => x.name === ui.b)) ui.b = (byDefault[1] || byDefault[0] || {}).name;
    const pick = (id2, cur) => `<select id="${id2}">${axes.map((x) => `<option ${x.name === cur ? "selected" : ""}>${esc(x.name)}</option>`).join("")}</select>`;
    body.innerHTML = `<p class="muted" id="drawn">${cols.drawn} of ${cols.completed} completed trials drawn${cols.drawn < cols.completed ? " (evenly spaced, the best among them)" : ""}.</p>
      <h2>Parameter importance <span class="muted">for ${esc(obj)}</span></h2><div id="importance" class="muted">computing…</div>
      <h2>Parallel coordinates</h2><canvas id="parallel"></canvas>
      <h2>Slices</h2><div class="grid2" id="slices">${axes.map((a, k) => `<canvas id="slice-${k}"></canvas>`).join("")}</div>
      ${axes.length > 1 ? `<h2>Contour</h2><p>${pick("ca", ui.a)} against ${pick("cb", ui.b)}</p><canvas id="contour2"></canvas>` : ""}`;
    parallel(body.querySelector("#parallel"), cols, axes, obj, max);
    const vals = cols.columns["metric:" + obj].values;
    axes.forEach((a, k) => Plot.draw(body.querySelector("#slice-" + k),
      [{ points: a.v.map((x, i) => [x, vals[i] === null ? NaN : vals[i], "trial " + cols.trials[i]]), line: false, marker: "dot" }],
      { xlabel: (a.log ? "log10 " : "") + a.name + (a.categorical ? " (" + cols.columns["param:" + a.name].labels.join(", ") + ")" : ""), ylabel: obj, height: 240 }));
    const drawContour = () => {
      const A = axes.find((x) => x.name === ui.a), B = axes.find((x) => x.name === ui.b);
      if (A && B) contour(body.querySelector("#contour2"), A, B, obj, vals, max);
    };
    if (axes.length > 1) {
      drawContour();
      body.querySelector("#ca").addEventListener("change", (e) => { ui.a = e.target.value; drawContour(); });
      body.querySelector("#cb").addEventListener("change", (e) => { ui.b = e.target.value; drawContour(); });
    }
    const imp = await api(`/api/sweeps/${encodeURIComponent(id)}/importance`);
    const top = Math.max(1e-12, ...imp.importance.map((x) => x.importance));
    body.querySelector("#importance").innerHTML = `<table id="importance-table">${imp.importance.map((x) =>
      `<tr><td>${esc(x.param)}</td><td style="width:60%"><span class="bar" style="width:100%"><span style="width:${(100 * Math.max(0, x.importance)) / top}%"></span></span></td>
       <td class="num">${fmt(x.importance)}</td></tr>`).join("")}</table><p class="muted">${esc(imp.method)}; ${imp.trials} trials.</p>`;
  }

  async function pareto(body, id, status, api) {
    const cols = await api(`/api/sweeps/${encodeURIComponent(id)}/columns`);
    const objs = cols.objectives;
    const front = new Set(status.pareto.map((p) => p.trial));
    const pairs = [];
    for (let i = 0; i < objs.length; i++) for (let j = i + 1; j < objs.length; j++) pairs.push([i, j]);
    body.innerHTML = `<p>${status.pareto.length} trials on the front, hypervolume ${fmt(status.hypervolume)}
      <span class="muted">(${objs.map((o, k) => esc(o) + " " + esc(cols.modes[k])).join(", ")}; feasible trials only)</span></p>
      <div class="grid2">${pairs.map((_, k) => `<canvas id="pareto-${k}"></canvas>`).join("")}</div>
      <h2>The front</h2><table id="front"><thead><tr><th>trial</th>${objs.map((o) => `<th>${esc(o)}</th>`).join("")}</tr></thead><tbody>
      ${status.pareto.map((p) => `<tr data-trial="${p.trial}"><td class="num">${p.trial}</td>${p.values.map((v) => `<td class="num">${fmt(v)}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
    pairs.forEach(([i, j], k) => {
      const xi = cols.columns["metric:" + objs[i]].values, yj = cols.columns["metric:" + objs[j]].values;
      const rest = cols.trials.map((t, n) => [xi[n], yj[n], "trial " + t]).filter((_, n) => !front.has(cols.trials[n]));
      const f = status.pareto.map((p) => [p.values[i], p.values[j], "trial " + p.trial]).sort((a, b) => a[0] - b[0]);
      Plot.draw(body.querySelector("#pareto-" + k), [
        { name: "trials", points: rest.map((p) => [p[0] ?? NaN, p[1] ?? NaN, p[2]]), line: false, marker: "dot", color: "#9aa1b1" },
        { name: "Pareto front", points: f, marker: "dot", color: "#e4572e", size: 3.5 },
      ], { xlabel: objs[i], ylabel: objs[j], height: 360 });
    });
    body.querySelectorAll("#front tbody tr").forEach((tr) => tr.addEventListener("click", () => { location.hash = `#/sweep/${id}/trial/${tr.dataset.trial}`; }));
  }

  return { show, pareto };
})();
