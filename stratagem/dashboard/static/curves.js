// Training curves as inline SVG: one small chart per panel the server lists (viz/plots.py's panels, so the
// page shows the charts curves.png has), a line per metric, a ± std band where the panel has one. Nothing is
// fetched or built: the page draws the rows /api/metrics returns.
"use strict";

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];  // matplotlib's tab10, as curves.png
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 360, H = 210, LEFT = 46, RIGHT = 10, BOTTOM = 24, LEGEND_ROW = 12;
const MARKERS_UP_TO = 40;  // steps; beyond this a marker per point is clutter (plots.py's rule)

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
  if (text !== undefined) el.textContent = text;
  return el;
}

function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function fmt(value) {
  const size = Math.abs(value);
  if (size >= 1000) return value.toLocaleString("en", {maximumFractionDigits: 0});
  if (size >= 10) return value.toFixed(1).replace(/\.0$/, "");
  if (size === 0) return "0";
  return value.toPrecision(3).replace(/\.?0+$/, "");
}

// About `count` round values from lo to hi (1, 2 or 5 times a power of ten apart), for the axes' labels.
function ticks(lo, hi, count) {
  const raw = (hi - lo) / count;
  let step = 10 ** Math.floor(Math.log10(raw));
  const ratio = raw / step;
  step *= ratio >= 7.07 ? 10 : ratio >= 3.16 ? 5 : ratio >= 1.41 ? 2 : 1;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function extent(values, fraction) {
  if (fraction) return [-0.04, 1.04];  // as curves.png: a rate reads in absolute terms
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!values.length) return [0, 1];
  if (lo === hi) { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

// One path through the points that have a value; a missing value breaks the line (as a NaN does in matplotlib).
function linePath(points) {
  let d = "", pen = false;
  for (const [x, y] of points) {
    if (y === null) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  }
  return d;
}

function drawPanel(panel, rows) {
  const steps = rows.map(r => r.step);
  const series = panel.lines.map(([key]) => rows.map(r => num(r[key])));
  const band = panel.band ? rows.map(r => num(r[panel.band])) : null;
  const values = series.flat().filter(v => v !== null);
  if (band) series[0].forEach((v, i) => { if (v !== null && band[i] !== null) values.push(v - band[i], v + band[i]); });
  const [y0, y1] = extent(values, panel.fraction);
  const legend = panel.lines.length > 1 || band;
  const TOP = 20 + (legend ? Math.ceil(panel.lines.length / 3) * LEGEND_ROW : 0);  // the legend above the chart
  let x0 = Math.min(...steps), x1 = Math.max(...steps);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const sx = s => LEFT + (s - x0) / (x1 - x0) * (W - LEFT - RIGHT);
  const sy = v => v === null ? null : TOP + (1 - (v - y0) / (y1 - y0)) * (H - TOP - BOTTOM);

  const svg = svgEl("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": panel.title});
  svg.appendChild(svgEl("text", {x: W / 2, y: 12, "text-anchor": "middle", "font-weight": "bold"}, panel.title));
  svg.appendChild(svgEl("rect", {x: LEFT, y: TOP, width: W - LEFT - RIGHT, height: H - TOP - BOTTOM, fill: "none",
    stroke: "#ccc"}));
  for (const v of ticks(y0, y1, 4)) {
    svg.appendChild(svgEl("line", {x1: LEFT, x2: W - RIGHT, y1: sy(v), y2: sy(v), stroke: "#eee"}));
    svg.appendChild(svgEl("text", {x: LEFT - 4, y: sy(v) + 3, "text-anchor": "end"}, fmt(v)));
  }
  for (const s of ticks(x0, x1, 5).filter(s => Number.isInteger(s))) {
    svg.appendChild(svgEl("text", {x: sx(s), y: H - 10, "text-anchor": "middle"}, String(s)));
  }
  if (band) {
    const upper = [], lower = [];
    series[0].forEach((v, i) => {
      if (v !== null && band[i] !== null) { upper.push([sx(steps[i]), sy(v + band[i])]); lower.push([sx(steps[i]), sy(v - band[i])]); }
    });
    if (upper.length > 1) {
      const d = linePath(upper) + linePath(lower.reverse()).replace(/^M/, "L") + "Z";
      svg.appendChild(svgEl("path", {d, fill: COLOURS[0], "fill-opacity": 0.18, stroke: "none", class: "band"}));
    }
  }
  panel.lines.forEach(([key, label], n) => {
    const colour = COLOURS[n % COLOURS.length];
    const points = series[n].map((v, i) => [sx(steps[i]), sy(v)]);
    const attrs = {d: linePath(points), fill: "none", stroke: colour, "stroke-width": 1.6, class: "curve",
      "data-key": key};
    if (key === "reward_max") Object.assign(attrs, {"stroke-dasharray": "2,3", "stroke-width": 1.2});
    svg.appendChild(svgEl("path", attrs));
    if (rows.length <= MARKERS_UP_TO) {
      points.forEach(([x, y], i) => {
        if (y === null) return;
        const dot = svgEl("circle", {cx: x, cy: y, r: 2.2, fill: colour});
        dot.appendChild(svgEl("title", {}, `${label}: step ${steps[i]}, ${fmt(series[n][i])}`));
        svg.appendChild(dot);
      });
    }
    if (legend) {
      const lx = LEFT + (n % 3) * 100, ly = 26 + Math.floor(n / 3) * LEGEND_ROW;
      svg.appendChild(svgEl("line", {x1: lx, x2: lx + 12, y1: ly - 3, y2: ly - 3, stroke: colour, "stroke-width": 2}));
      svg.appendChild(svgEl("text", {x: lx + 15, y: ly}, label.length > 15 ? label.slice(0, 14) + "…" : label));
    }
  });
  return svg;
}

// Every panel into `container`, replacing what was there.
function drawCurves(container, curves) {
  const rows = curves.rows || [];
  container.replaceChildren();
  if (!rows.length || !curves.panels.length) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "no metrics yet: the run has not finished a step";
    container.appendChild(note);
    return;
  }
  for (const panel of curves.panels) {
    const box = document.createElement("div");
    box.className = "panel";
    box.appendChild(drawPanel(panel, rows));
    container.appendChild(box);
  }
}

window.drawCurves = drawCurves;
