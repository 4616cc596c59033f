// Loss surfaces on a <canvas>: a heat map with contour lines (marching squares) and a
// 3-D surface that turns under the mouse, both on a linear or logarithmic scale, with
// the trajectory and the minimum marked and the value under the pointer shown.
"use strict";

const Landscape = (() => {
  // Viridis, sampled at nine points and interpolated.
  const VIRIDIS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
    [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  function color(t) {
    if (!Number.isFinite(t)) return [200, 200, 200];
    t = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i;
    return VIRIDIS[i].map((c, k) => Math.round(c + f * (VIRIDIS[i + 1][k] - c)));
  }

  // Values mapped to [0, 1] on the chosen scale; the range of the finite ones.
  function scaler(z, log) {
    const f = (v) => (v === null || !Number.isFinite(v) || (log && v <= 0) ? NaN : log ? Math.log10(v) : v);
    let lo = Infinity, hi = -Infinity;
    z.forEach((row) => row.forEach((v) => { const s = f(v); if (Number.isFinite(s)) { lo = Math.min(lo, s); hi = Math.max(hi, s); } }));
    if (!(hi > lo)) hi = lo + 1;
    return { t: (v) => (f(v) - lo) / (hi - lo), lo, hi, f };
  }

  function size(canvas, height) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600;
    canvas.width = w * dpr; canvas.height = height * dpr; canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { g, w, h: height };
  }

  // Contour segments of level `c` over the grid (marching squares), in grid units.
  function contour(z, c) {
    const segs = [];
    for (let i = 0; i + 1 < z.length; i++) {
      for (let j = 0; j + 1 < z[i].length; j++) {
        const a = z[i][j], b = z[i][j + 1], d = z[i + 1][j], e = z[i + 1][j + 1];
        if (![a, b, d, e].every(Number.isFinite)) continue;
        const pts = [];
        const edge = (v0, v1, p0, p1) => {
          if ((v0 < c) !== (v1 < c)) { const t = (c - v0) / (v1 - v0); pts.push([p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])]); }
        };
        edge(a, b, [j, i], [j + 1, i]); edge(b, e, [j + 1, i], [j + 1, i + 1]);
        edge(e, d, [j + 1, i + 1], [j, i + 1]); edge(d, a, [j, i + 1], [j, i]);
        for (let k = 0; k + 1 < pts.length; k += 2) segs.push([pts[k], pts[k + 1]]);
      }
    }
    return segs;
  }

  // opts: {log, title, marks: [{x, y, label}], path: {x: [], y: []}, levels}
  function heatmap(canvas, xs, ys, z, opts) {
    opts = opts || {};
    const { g, w, h } = size(canvas, opts.height || 460);
    const m = { l: 60, r: 80, t: 24, b: 40 };
    const pw = w - m.l - m.r, ph = h - m.t - m.b;
    const s = scaler(z, opts.log);
    const ny = z.length, nx = z[0].length;
    const X = (x) => m.l + ((x - xs[0]) / (xs[nx - 1] - xs[0] || 1)) * pw;
    const Y = (y) => m.t + ph - ((y - ys[0]) / (ys[ny - 1] - ys[0] || 1)) * ph;
    // Cells.
    const cw = pw / nx, ch = ph / ny;
    for (let i = 0; i < ny; i++) for (let j = 0; j < nx; j++) {
      const [r, gg, b] = color(s.t(z[i][j]));
      g.fillStyle = `rgb(${r},${gg},${b})`;
      g.fillRect(m.l + j * cw, m.t + ph - (i + 1) * ch, cw + 0.6, ch + 0.6);
    }
    // Contour lines on the same scale.
    const sz = z.map((row) => row.map((v) => s.f(v)));
    const levels = opts.levels || 12;
    g.strokeStyle = "rgba(255,255,255,0.75)"; g.lineWidth = 1;
    const gx = (u) => m.l + (u + 0.5) * cw, gy = (v) => m.t + ph - (v + 0.5) * ch;
    for (let k = 1; k < levels; k++) {
      const c = s.lo + ((s.hi - s.lo) * k) / levels;
      g.beginPath();
      contour(sz, c).forEach(([p, q]) => { g.moveTo(gx(p[0]), gy(p[1])); g.lineTo(gx(q[0]), gy(q[1])); });
      g.stroke();
    }
    // Axes.
    g.fillStyle = "#1d2433"; g.font = "12px system-ui, 'DejaVu Sans', sans-serif";
    g.textAlign = "center"; g.textBaseline = "top";
    Plot.ticks(xs[0], xs[nx - 1], 6).forEach((v) => g.fillText(Plot.fmt(v), X(v), m.t + ph + 6));
    g.textAlign = "right"; g.textBaseline = "middle";
    Plot.ticks(ys[0], ys[ny - 1], 6).forEach((v) => g.fillText(Plot.fmt(v), m.l - 6, Y(v)));
    g.textAlign = "center"; g.fillText(opts.xlabel || "α (x direction)", m.l + pw / 2, h - 12);
    if (opts.title) { g.textBaseline = "top"; g.fillText(opts.title, m.l + pw / 2, 4); }
    // Colour bar.
    for (let k = 0; k < ph; k++) {
      const [r, gg, b] = color(1 - k / ph);
      g.fillStyle = `rgb(${r},${gg},${b})`; g.fillRect(w - m.r + 16, m.t + k, 14, 1.5);
    }
    g.fillStyle = "#1d2433"; g.textAlign = "left";
    [0, 0.5, 1].forEach((f) => {
      const v = s.lo + f * (s.hi - s.lo);
      g.fillText(Plot.fmt(opts.log ? Math.pow(10, v) : v), w - m.r + 34, m.t + ph - f * ph);
    });
    // The trajectory and marks.
    if (opts.path && opts.path.x && opts.path.x.length) {
      g.strokeStyle = "#e4572e"; g.lineWidth = 2; g.beginPath();
      opts.path.x.forEach((x, k) => (k ? g.lineTo(X(x), Y(opts.path.y[k])) : g.moveTo(X(x), Y(opts.path.y[k]))));
      g.stroke();
      g.fillStyle = "#e4572e";
      opts.path.x.forEach((x, k) => { g.beginPath(); g.arc(X(x), Y(opts.path.y[k]), 2.5, 0, 7); g.fill(); });
    }
    (opts.marks || []).forEach((p) => {
      g.fillStyle = "#fff"; g.strokeStyle = "#1d2433"; g.lineWidth = 1.5;
      g.beginPath(); g.arc(X(p.x), Y(p.y), 5, 0, 7); g.fill(); g.stroke();
      if (p.label) { g.fillStyle = "#fff"; g.textAlign = "left"; g.fillText(p.label, X(p.x) + 8, Y(p.y)); }
    });
    canvas._grid = { xs, ys, z, m, pw, ph };
    hover(canvas, (mx, my) => {
      const j = Math.floor(((mx - m.l) / pw) * nx), i = Math.floor(((m.t + ph - my) / ph) * ny);
      if (i < 0 || j < 0 || i >= ny || j >= nx) return null;
      return `α ${Plot.fmt(xs[j])}, β ${Plot.fmt(ys[i])}: ${Plot.fmt(z[i][j])}`;
    });
  }

  // A 3-D surface: drag to turn it (azimuth and elevation).
  function surface(canvas, xs, ys, z, opts) {
    opts = opts || {};
    const st = canvas._view || (canvas._view = { az: -0.6, el: 0.55 });
    const draw = () => {
      const { g, w, h } = size(canvas, opts.height || 460);
      const s = scaler(z, opts.log);
      const ny = z.length, nx = z[0].length;
      const ca = Math.cos(st.az), sa = Math.sin(st.az), ce = Math.cos(st.el), se = Math.sin(st.el);
      // Grid in [-1, 1]², height in [0, 0.8].
      const P = (i, j) => {
        const u = (2 * j) / (nx - 1 || 1) - 1, v = (2 * i) / (ny - 1 || 1) - 1;
        const t = s.t(z[i][j]);
        const hgt = Number.isFinite(t) ? t * 0.8 : NaN;
        const xr = u * ca - v * sa, yr = u * sa + v * ca;
        return { x: xr, y: yr * se + hgt * ce, d: yr * ce - hgt * se, t };
      };
      const pts = [];
      for (let i = 0; i < ny; i++) { pts.push([]); for (let j = 0; j < nx; j++) pts[i].push(P(i, j)); }
      const quads = [];
      for (let i = 0; i + 1 < ny; i++) for (let j = 0; j + 1 < nx; j++) {
        const q = [pts[i][j], pts[i][j + 1], pts[i + 1][j + 1], pts[i + 1][j]];
        if (q.some((p) => !Number.isFinite(p.y))) continue;
        quads.push({ q, d: (q[0].d + q[1].d + q[2].d + q[3].d) / 4, t: (q[0].t + q[1].t + q[2].t + q[3].t) / 4 });
      }
      quads.sort((a, b) => b.d - a.d); // far first
      const scale = Math.min(w, h) * 0.36, cx = w / 2, cy = h * 0.62;
      g.lineWidth = 0.3; g.strokeStyle = "rgba(0,0,0,0.25)";
      quads.forEach(({ q, t }) => {
        const [r, gg, b] = color(t);
        g.fillStyle = `rgb(${r},${gg},${b})`;
        g.beginPath();
        q.forEach((p, k) => (k ? g.lineTo(cx + p.x * scale, cy - p.y * scale) : g.moveTo(cx + p.x * scale, cy - p.y * scale)));
        g.closePath(); g.fill(); if (nx * ny <= 10000) g.stroke();
      });
      g.fillStyle = "#6b7385"; g.font = "12px system-ui, 'DejaVu Sans', sans-serif";
      g.fillText("drag to turn" + (opts.log ? " · log scale" : ""), 10, 16);
      canvas._quads = quads.length;
      // Where each grid point landed, for the readout under the pointer.
      const verts = [];
      pts.forEach((row, i) => row.forEach((p, j) => {
        if (Number.isFinite(p.y)) verts.push({ sx: cx + p.x * scale, sy: cy - p.y * scale, d: p.d, i, j });
      }));
      hover(canvas, (mx, my) => {
        // The nearest point within 12 px, the front-most of those about as near.
        let best = null;
        for (const v of verts) {
          const r2 = (v.sx - mx) ** 2 + (v.sy - my) ** 2;
          if (r2 > 144) continue;
          if (!best || r2 + 4 * v.d < best.r2 + 4 * best.v.d) best = { v, r2 };
        }
        if (!best) return null;
        const { i, j } = best.v;
        return `α ${Plot.fmt(xs[j])}, β ${Plot.fmt(ys[i])}: ${Plot.fmt(z[i][j])}`;
      });
    };
    draw();
    if (!canvas._drag) {
      canvas._drag = true;
      let last = null;
      canvas.addEventListener("mousedown", (e) => { last = [e.clientX, e.clientY]; });
      window.addEventListener("mouseup", () => { last = null; });
      canvas.addEventListener("mousemove", (e) => {
        if (!last) return;
        st.az += (e.clientX - last[0]) * 0.01;
        st.el = Math.max(0.05, Math.min(1.5, st.el + (e.clientY - last[1]) * 0.01));
        last = [e.clientX, e.clientY];
        canvas._redraw();
      });
    }
    canvas._redraw = draw;
  }

  function hover(canvas, text) {
    canvas._text = text;
    if (canvas._hoverable) return;
    canvas._hoverable = true;
    const tip = document.createElement("div");
    tip.className = "tooltip"; tip.hidden = true; document.body.appendChild(tip);
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect();
      const t = canvas._text(e.clientX - r.left, e.clientY - r.top);
      tip.hidden = !t;
      if (t) { tip.textContent = t; tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px"; }
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  }

  return { heatmap, surface, color };
})();
