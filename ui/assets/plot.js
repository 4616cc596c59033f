// Charts on a <canvas>: lines and points over numeric axes, with nice ticks, a
// logarithmic y axis on demand, and the nearest point's values on hover. No library:
// the page must work on a cluster without internet.
"use strict";

const Plot = (() => {
  const COLORS = ["#2f6fde", "#e4572e", "#17a398", "#f3a712", "#7b4fc9", "#5c6f7e", "#c94f7c", "#3a9d23"];

  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    const raw = (hi - lo) / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return +v.toPrecision(4) + "";
  }

  // series: [{name, points: [[x, y], ...], color, line: true|false, marker: "dot"|"x"|null}]
  // opts: {xlabel, ylabel, logy, height}
  function draw(canvas, series, opts) {
    opts = opts || {};
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || canvas.parentElement.clientWidth || 640;
    const height = opts.height || 320;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.height = height + "px";
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    const ty = (y) => (opts.logy ? Math.log10(y) : y);
    const all = [];
    series.forEach((s) => s.points.forEach((p) => {
      if (Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!opts.logy || p[1] > 0)) all.push(p);
    }));
    const m = { l: 64, r: 16, t: 14, b: 40 };
    const w = width - m.l - m.r, h = height - m.t - m.b;
    g.font = "12px system-ui, 'DejaVu Sans', sans-serif";
    g.fillStyle = "#6b7385";
    if (!all.length) {
      g.fillText("no values yet", m.l + 10, m.t + 20);
      canvas._plot = null;
      return;
    }
    let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
    let y0 = Math.min(...all.map((p) => ty(p[1]))), y1 = Math.max(...all.map((p) => ty(p[1])));
    if (opts.extendTo !== undefined) x1 = Math.max(x1, opts.extendTo);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * w;
    const Y = (y) => m.t + h - ((ty(y) - y0) / (y1 - y0)) * h;
    // Axes and grid.
    g.strokeStyle = "#e2e5ec"; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    ticks(y0, y1, 6).forEach((v) => {
      const py = m.t + h - ((v - y0) / (y1 - y0)) * h;
      g.beginPath(); g.moveTo(m.l, py); g.lineTo(m.l + w, py); g.stroke();
      g.fillText(opts.logy ? fmt(Math.pow(10, v)) : fmt(v), m.l - 6, py);
    });
    g.textAlign = "center"; g.textBaseline = "top";
    ticks(x0, x1, 8).forEach((v) => {
      const px = X(v);
      g.beginPath(); g.moveTo(px, m.t); g.lineTo(px, m.t + h); g.stroke();
      g.fillText(fmt(v), px, m.t + h + 6);
    });
    g.strokeStyle = "#9aa1b1"; g.strokeRect(m.l, m.t, w, h);
    g.fillStyle = "#1d2433";
    if (opts.xlabel) g.fillText(opts.xlabel, m.l + w / 2, height - 16);
    if (opts.ylabel) {
      g.save(); g.translate(14, m.t + h / 2); g.rotate(-Math.PI / 2);
      g.textBaseline = "middle"; g.fillText(opts.ylabel, 0, 0); g.restore();
    }
    // Series.
    const placed = [];
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!opts.logy || p[1] > 0));
      g.strokeStyle = color; g.fillStyle = color; g.lineWidth = s.width || 1.6;
      if (s.line !== false && pts.length > 1) {
        g.beginPath();
        pts.forEach((p, k) => {
          const px = X(p[0]), py = Y(p[1]);
          if (k === 0) g.moveTo(px, py);
          else if (s.step) { g.lineTo(px, Y(pts[k - 1][1])); g.lineTo(px, py); }
          else g.lineTo(px, py);
        });
        if (s.step && opts.extendTo !== undefined) g.lineTo(X(opts.extendTo), Y(pts[pts.length - 1][1]));
        g.stroke();
      }
      pts.forEach((p) => {
        const px = X(p[0]), py = Y(p[1]);
        if (s.marker === "dot") { g.beginPath(); g.arc(px, py, s.size || 2.2, 0, 7); g.fill(); }
        if (s.marker === "x") {
          g.lineWidth = 2; g.beginPath();
          g.moveTo(px - 5, py - 5); g.lineTo(px + 5, py + 5); g.moveTo(px + 5, py - 5); g.lineTo(px - 5, py + 5);
          g.stroke();
        }
        placed.push({ px, py, x: p[0], y: p[1], name: s.name, label: p[2] });
      });
    });
    // Legend.
    g.textAlign = "left"; g.textBaseline = "middle";
    let lx = m.l + 8;
    series.filter((s) => s.name).forEach((s, i) => {
      g.fillStyle = s.color || COLORS[i % COLORS.length];
      g.fillRect(lx, m.t + 8, 10, 3);
      g.fillStyle = "#1d2433"; g.fillText(s.name, lx + 14, m.t + 9);
      lx += g.measureText(s.name).width + 34;
    });
    canvas._plot = { placed, opts };
    hover(canvas);
  }

  function hover(canvas) {
    if (canvas._hover) return;
    canvas._hover = true;
    let tip = null;
    canvas.addEventListener("mousemove", (e) => {
      const st = canvas._plot;
      if (!st || !st.placed.length) return;
      const r = canvas.getBoundingClientRect();
      const mx = e.clientX - r.left, my = e.clientY - r.top;
      let best = null, bd = 400;
      for (const p of st.placed) {
        const d = (p.px - mx) ** 2 + (p.py - my) ** 2;
        if (d < bd) { bd = d; best = p; }
      }
      if (!tip) { tip = document.createElement("div"); tip.className = "tooltip"; document.body.appendChild(tip); }
      if (!best) { tip.hidden = true; return; }
      tip.hidden = false;
      tip.textContent = (best.name ? best.name + ": " : "") + (st.opts.xlabel || "x") + " " + fmt(best.x) +
        ", " + (st.opts.ylabel || "y") + " " + fmt(best.y) + (best.label ? " (" + best.label + ")" : "");
      tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY + 12 + "px";
    });
    canvas.addEventListener("mouseleave", () => { if (tip) tip.hidden = true; });
  }

  return { draw, fmt, ticks, COLORS };
})();
