// The pages of a landscape scan: its surface (contours and 3-D, or a 1-D curve with
// its barrier), the Hessian's spectrum, curvature maps and the files to download.
"use strict";

const Scan = (() => {
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const fmt = Plot.fmt;
  const state = { log: false, field: "surface" };

  function tabs(land) {
    const t = [["surface", "Surface"]];
    if (land.hessian) t.push(["hessian", "Hessian"]);
    if (land.curvature) t.push(["curvature", "Curvature"]);
    t.push(["files", "Files"]);
    return t;
  }

  function surfaceView(body, land) {
    const fields = ["surface", "accuracy", "val_surface", "val_accuracy"].filter((f) => Array.isArray(land[f]));
    const field = fields.includes(state.field) ? state.field : "surface";
    const z = land[field];
    const meta = land.meta || {};
    const oneD = land.shape.length === 1;
    body.innerHTML = `<p>${fields.length > 1 ? `<select id="field">${fields.map((f) =>
        `<option ${f === field ? "selected" : ""}>${f}</option>`).join("")}</select>` : ""}
      <label><input type="checkbox" id="log" ${state.log ? "checked" : ""}> log scale</label>
      <span class="muted">${land.shape.join(" × ")} points${land.stride.some((s) => s > 1) ? `, drawn every ${land.stride.join(" × ")}` : ""};
      lowest loss ${fmt(meta.loss_min)}${meta.loss_min_at ? ` at α ${fmt(meta.loss_min_at.x)}${meta.loss_min_at.y !== undefined ? ", β " + fmt(meta.loss_min_at.y) : ""}` : ""}.</span></p>
      ${oneD ? '<canvas id="curve"></canvas><p id="barrier"></p>' : '<div class="grid2"><canvas id="contour"></canvas><canvas id="surface3d"></canvas></div>'}`;
    const sel = body.querySelector("#field");
    if (sel) sel.addEventListener("change", () => { state.field = sel.value; surfaceView(body, land); });
    body.querySelector("#log").addEventListener("change", (e) => { state.log = e.target.checked; surfaceView(body, land); });
    if (oneD) return curve(body, land, field);
    const marks = meta.loss_min_at && meta.loss_min_at.y !== undefined
      ? [{ x: meta.loss_min_at.x, y: meta.loss_min_at.y, label: "min" }] : [];
    // A plane through three checkpoints: θ at the origin, θ₂ at (1, 0), θ₃ at (0, 1).
    if (meta.directions && meta.directions.type === "target") {
      marks.push({ x: 0, y: 0, label: "θ" }, { x: 1, y: 0, label: "θ₂" }, { x: 0, y: 1, label: "θ₃" });
    }
    Landscape.heatmap(body.querySelector("#contour"), land.x, land.y, z,
      { log: state.log, title: field, marks, path: land.trajectory, xlabel: "α, β" });
    Landscape.surface(body.querySelector("#surface3d"), land.x, land.y, z, { log: state.log });
  }

  function curve(body, land, field) {
    const z = land[field][0];
    const series = [{ name: field, points: land.x.map((x, i) => [x, z[i]]), marker: "dot" }];
    // An interpolation's two checkpoints, at α = 0 and 1.
    const meta = land.meta || {};
    if (meta.directions && meta.directions.type === "target") {
      const at = (a) => land.x.findIndex((x) => Math.abs(x - a) < 1e-9);
      const pts = [0, 1].map(at).filter((i) => i >= 0).map((i) => [land.x[i], z[i], i === at(0) ? "θ" : "θ₂"]);
      series.push({ name: "checkpoints", points: pts, line: false, marker: "dot", size: 5, color: "#1d2433" });
    }
    const lmc = land.lmc;
    if (lmc && field === "surface" && lmc.loss) {
      // The chord between the endpoints α = 0 and 1, above which the barrier rises.
      series.push({ name: "chord", points: [[0, lmc.loss.start], [1, lmc.loss.end]], color: "#9aa1b1" });
      series.push({ name: "barrier", points: [[lmc.alpha, lmc.loss.start * (1 - lmc.alpha) + lmc.loss.end * lmc.alpha + lmc.barrier]], line: false, marker: "x", color: "#c0392b" });
      body.querySelector("#barrier").innerHTML = `Barrier ${fmt(lmc.barrier)} at α = ${fmt(lmc.alpha)}
        <span class="muted">(${esc(lmc.definition)})</span>`;
    }
    if (land.connectivity) {
      const c = land.connectivity;
      series.push({ name: "trained curve", points: c.t.map((t, i) => [t, c.curve.loss[i]]), color: "#17a398" });
      body.querySelector("#barrier").innerHTML += `<br>Trained ${esc(c.type)} curve: barrier ${fmt(c.curve.barrier.barrier)} against the line's ${fmt(c.line.barrier.barrier)}.`;
    }
    Plot.draw(body.querySelector("#curve"), series, { xlabel: "α", ylabel: field, logy: state.log, height: 380 });
  }

  function hessianView(body, land) {
    const h = land.hessian;
    const d = h.density;
    body.innerHTML = `<div class="grid2"><div><h2>Top eigenvalues</h2>
      <table id="eigen"><thead><tr><th>#</th><th>eigenvalue</th><th>residual</th><th>converged</th></tr></thead><tbody>
      ${h.top_eigenvalues.map((e, i) => `<tr><td>${i + 1}</td><td class="num">${fmt(e.value)}</td><td class="num">${fmt(e.residual)}</td><td>${e.converged ? "yes" : "no"}</td></tr>`).join("")}
      ${h.lambda_min ? `<tr><td>min</td><td class="num">${fmt(h.lambda_min.value)}</td><td class="num">${fmt(h.lambda_min.residual)}</td><td>${h.lambda_min.converged ? "yes" : "no"}</td></tr>` : ""}
      </tbody></table>
      <p>Trace ${fmt(h.trace.estimate)} ± ${fmt(h.trace.std_error)} <span class="muted">(${esc(h.trace.method)}, ${h.trace.probes} probes)</span></p>
      <p class="muted">${esc(h.method)}; ${h.parameters} parameters, ${h.rounds} rounds.</p></div>
      <div><h2>Eigenvalue density</h2>${d ? `<label><input type="checkbox" id="logd" ${state.logd ? "checked" : ""}> log scale</label>
      <canvas id="density"></canvas><p class="muted">${esc(d.method)}, ${d.probes} probes × ${d.steps} steps; ${esc(d.note)}</p>` : "<p class='muted'>No density was asked for.</p>"}</div></div>`;
    if (d) {
      const draw = () => Plot.draw(body.querySelector("#density"), [{ name: "density", points: d.eigenvalue.map((e, i) => [e, d.density[i]]), color: "#7b4fc9" },
        { name: "top eigenvalues", points: h.top_eigenvalues.map((e) => [e.value, Math.max(...d.density) * 0.05]), line: false, marker: "x", color: "#c0392b" }],
      { xlabel: "eigenvalue", ylabel: "density", logy: state.logd, height: 320 });
      draw();
      body.querySelector("#logd").addEventListener("change", (e) => { state.logd = e.target.checked; draw(); });
    }
  }

  function curvatureView(body, land) {
    const c = land.curvature;
    const [ny, nx] = c.shape;
    const grid = (v) => Array.from({ length: ny }, (_, i) => v.slice(i * nx, (i + 1) * nx));
    body.innerHTML = `<p class="muted">${esc(c.method)}</p><div class="grid2"><canvas id="lmax"></canvas><canvas id="ctrace"></canvas></div>`;
    Landscape.heatmap(body.querySelector("#lmax"), c.x, c.y, grid(c.lambda_max), { title: "top eigenvalue λmax", height: 380, levels: 6 });
    Landscape.heatmap(body.querySelector("#ctrace"), c.x, c.y, grid(c.trace), { title: "trace", height: 380, levels: 6 });
  }

  async function filesView(body, id) {
    const r = await fetch(`/api/sweeps/${encodeURIComponent(id)}/files`, { credentials: "same-origin" }).then((x) => x.json());
    body.innerHTML = `<table id="files"><thead><tr><th>file</th><th>size</th></tr></thead><tbody>
      ${r.files.map((f) => `<tr><td><a href="/api/sweeps/${encodeURIComponent(id)}/files/${f.path.split("/").map(encodeURIComponent).join("/")}" download>${esc(f.path)}</a></td>
        <td class="num">${f.size < 1024 ? f.size + " B" : f.size < 1 << 20 ? (f.size / 1024).toFixed(1) + " KiB" : (f.size / 1048576).toFixed(1) + " MiB"}</td></tr>`).join("")}
      </tbody></table>`;
  }

  async function show(body, id, tab, land) {
    if (tab === "hessian" && land.hessian) return hessianView(body, land);
    if (tab === "curvature" && land.curvature) return curvatureView(body, land);
    if (tab === "files") return filesView(body, id);
    return surfaceView(body, land);
  }

  return { tabs, show };
})();
