// The dashboard page: polls the JSON API (app.py) and fills the sections in. Frames are PNGs the server
// draws with viz/render.py; this script only shows them. Program text is LLM output: it is only ever set as
// textContent, never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const $ = id => document.getElementById(id);
const state = {run: null, metricsKey: null, step: null, rows: [], parts: [], sort: null, selected: null,
  bestKey: null, replaysKey: null, replay: null, player: null};

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A failed request's message, as the server worded it ({"detail": ...}), in the banner on top.
function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}
$("message-close").addEventListener("click", () => { $("message").hidden = true; });

async function api(path, options) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON: keep the status text */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response.json();
}

const number = v => typeof v === "number" ? (Math.abs(v) >= 1000 ? v.toLocaleString("en", {maximumFractionDigits: 0})
  : v.toFixed(3).replace(/\.?0+$/, "") || "0") : (v === null || v === undefined ? "–" : String(v));

// --- a frame player: an image, a slider, play/pause; the next frame is asked for once this one has loaded ----
function player(box, frameUrl, length, label) {
  box.replaceChildren();
  box.hidden = false;
  const img = el("img", {alt: label});
  const slider = el("input", {type: "range", min: 0, max: Math.max(0, length - 1), value: 0});
  const play = el("button", {}, "▶ play");
  const where = el("span", {class: "muted mono"});
  const controls = el("div", {class: "controls"});
  controls.append(play, slider, where);
  box.append(controls, img);
  let playing = false;
  const show = i => {
    slider.value = i;
    where.textContent = `step ${i} / ${length - 1}`;
    img.src = frameUrl(i);
  };
  img.addEventListener("load", () => {
    if (playing && Number(slider.value) < length - 1) setTimeout(() => playing && show(Number(slider.value) + 1), 80);
    else if (playing) { playing = false; play.textContent = "▶ play"; }
  });
  img.addEventListener("error", () => {
    playing = false;
    play.textContent = "▶ play";
    fetch(img.src).then(r => r.json()).then(b => showMessage(`frame: ${b.detail}`), () => showMessage("frame failed"));
  });
  slider.addEventListener("input", () => show(Number(slider.value)));
  const controller = {  // a recording still being written grows: the player follows without starting over
    setLength(n) {
      length = n;
      slider.max = Math.max(0, n - 1);
      where.textContent = `step ${slider.value} / ${n - 1}`;
    },
  };
  play.addEventListener("click", () => {
    playing = !playing;
    play.textContent = playing ? "❚❚ pause" : "▶ play";
    if (playing) show(Number(slider.value) >= length - 1 ? 0 : Number(slider.value) + 1);
  });
  show(0);
  return controller;
}

// --- the run: title, status, and what changed since the last poll --------------------------------------
async function poll() {
  let run;
  try {
    run = await api("/api/run");
  } catch (err) {
    $("status").textContent = `cannot reach the dashboard (${err.message}); retrying`;
    return;
  }
  state.run = run;
  $("title").textContent = `${run.name} · ${run.env}`;
  document.title = `${run.name} · stratagem`;
  const m = run.metrics;
  const of = run.max_steps ? ` of ${run.max_steps}` : "";
  $("status").textContent = m.count ? `step ${m.last_step}${of} · updated ${new Date().toLocaleTimeString()}`
    : "no step finished yet";
  const metricsKey = `${m.count}:${m.last_step}`;
  if (metricsKey !== state.metricsKey) {
    state.metricsKey = metricsKey;
    api("/api/metrics").then(curves => drawCurves($("curves"), curves), err => showMessage(`curves: ${err.message}`));
  }
  updateSteps(run.steps);
  const bestKey = JSON.stringify(run.best);
  if (bestKey !== state.bestKey) { state.bestKey = bestKey; loadBest(); }
  const replaysKey = JSON.stringify(run.replays);
  if (replaysKey !== state.replaysKey) { state.replaysKey = replaysKey; showReplays(run.replays); }
}

// --- completions ---------------------------------------------------------------------------------------
function updateSteps(steps) {
  const select = $("step");
  const known = [...select.options].map(o => Number(o.value));
  if (known.length !== steps.length || known.some((s, i) => s !== steps[i])) {
    const chosen = select.value;
    select.replaceChildren(...steps.map(s => el("option", {value: s}, `step ${s}`)));
    if (chosen) select.value = chosen;
  }
  const newest = steps[steps.length - 1];
  if (state.step === null && newest !== undefined) loadStep(newest);
  else if ($("follow").checked && newest !== undefined && newest !== state.step) loadStep(newest);
}

async function loadStep(step) {
  try {
    const body = await api(`/api/completions/${encodeURIComponent(step)}`);
    state.step = body.step;
    state.rows = body.rows;
    state.parts = [...new Set(body.rows.flatMap(r => Object.keys(r.parts || {})))];
    if ([...$("step").options].some(o => Number(o.value) === body.step)) $("step").value = body.step;
    renderTable();
  } catch (err) {
    if (state.step === ASKED) {  // a bad ?step=: said once, and the newest step is shown instead
      state.step = null;
      if (state.run) updateSteps(state.run.steps);
    }
    showMessage(`completions of step ${step}: ${err.message}`);
  }
}

function outcomeSummary(outcomes) {
  const counts = {};
  for (const o of outcomes || []) counts[o] = (counts[o] || 0) + 1;
  return Object.entries(counts).map(([o, n]) => n > 1 ? `${o} ×${n}` : o).join(", ");
}

const COLUMNS = () => [
  {key: "index", label: "#", value: r => r.index, num: true},
  {key: "reward", label: "reward", value: r => r.reward, num: true},
  ...state.parts.map(p => ({key: `parts.${p}`, label: p, value: r => (r.parts || {})[p], num: true})),
  {key: "score", label: "score", value: r => r.score, num: true},
  {key: "outcomes", label: "outcome", value: r => outcomeSummary(r.outcomes)},
  {key: "sha", label: "sha", value: r => r.sha || ""},
  {key: "error", label: "error", value: r => [r.error, r.rule].filter(Boolean).join(": ")},
];

function renderTable() {
  const columns = COLUMNS();
  const head = el("tr");
  for (const column of columns) {
    const th = el("th", {"data-key": column.key, class: column.num ? "sortable num" : "sortable"}, column.label);
    if (state.sort && state.sort.key === column.key) th.setAttribute("aria-sort", state.sort.descending ? "descending" : "ascending");
    th.addEventListener("click", () => sortBy(column.key));
    head.appendChild(th);
  }
  $("completions").tHead.replaceChildren(head);
  const query = $("search").value.trim().toLowerCase();
  let rows = state.rows.filter(r => !query || [r.text, r.sha, outcomeSummary(r.outcomes), r.error, r.rule, r.message]
    .some(v => typeof v === "string" && v.toLowerCase().includes(query)));
  if (state.sort) {
    const column = columns.find(c => c.key === state.sort.key) || columns[0];
    const sign = state.sort.descending ? -1 : 1;
    const key = r => { const v = column.value(r); return v === null || v === undefined ? -Infinity : v; };
    rows = [...rows].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : a.index - b.index) * sign);
  }
  const body = $("completions").tBodies[0];
  body.replaceChildren(...rows.map(r => {
    const tr = el("tr", {"data-index": r.index});
    if (state.selected === r.index) tr.classList.add("selected");
    for (const column of columns) {
      const v = column.value(r);
      const td = el("td", {class: column.num ? "num" : ""}, column.num ? number(v) : v);
      if (column.key === "error" && v) td.classList.add("bad");
      if (column.key === "outcomes" && /win/.test(v)) td.classList.add("win");
      tr.appendChild(td);
    }
    tr.addEventListener("click", () => selectRow(r));
    return tr;
  }));
  $("count").textContent = `${rows.length} of ${state.rows.length} completions`;
}

function sortBy(key) {
  const same = state.sort && state.sort.key === key;
  state.sort = {key, descending: same ? !state.sort.descending : key !== "index" && key !== "sha"};
  renderTable();
}

function selectRow(row) {
  state.selected = row.index;
  $("program-box").hidden = false;
  const what = [row.error && `error ${row.error}`, row.message].filter(Boolean).join(": ");
  $("program-title").textContent = `step ${state.step}, #${row.index} · reward ${number(row.reward)}` +
    ` · ${outcomeSummary(row.outcomes)}${what ? " · " + what : ""}`;
  $("program").textContent = row.text || "";
  renderTable();
}

$("step").addEventListener("change", () => { $("follow").checked = false; loadStep(Number($("step").value)); });
$("search").addEventListener("input", renderTable);
$("as-a").addEventListener("click", () => { $("compare-a").value = `${state.step}:${state.selected}`; });
$("as-b").addEventListener("click", () => { $("compare-b").value = `${state.step}:${state.selected}`; });

// --- the best program and its replays ------------------------------------------------------------------
async function loadBest() {
  try {
    const best = await api("/api/best");
    const info = best.info;
    $("best-info").textContent = info ? `step ${info.step} · reward ${number(info.reward)} · mean score ` +
      `${number(info.mean_score)} · win rate ${number(info.win_rate)} · sha ${info.sha}` : "none yet";
    $("best-source").hidden = !best.source;
    $("best-source").textContent = best.source || "";
  } catch (err) {
    showMessage(`best program: ${err.message}`);
  }
}

function showReplays(replays) {
  const list = $("replay-list");
  list.replaceChildren();
  if (!replays.length) { list.appendChild(el("span", {class: "muted"}, "no replays yet")); $("replay-player").hidden = true; return; }
  const playable = replays.filter(r => !r.problem);
  for (const r of replays) {
    const text = r.problem ? `${r.name}: ${r.problem}` : `seed ${r.seed} · score ${number(r.score)}${r.won ? " · won" : ""}` +
      ` · ${r.steps} steps${r.finished ? "" : " (being written)"}`;
    const button = el("button", {"data-name": r.name}, text);
    button.disabled = Boolean(r.problem);
    button.addEventListener("click", () => openReplay(r));
    list.appendChild(button);
  }
  const again = playable.find(r => state.replay && r.name === state.replay.name);
  if (again) {  // the one being watched is still there: keep its place
    markReplay(again);
    if (again.steps !== state.replay.steps) state.player.setLength(again.steps);
    state.replay = again;
  } else if (playable.length) {
    openReplay(playable.reduce((a, b) => (b.score ?? -Infinity) > (a.score ?? -Infinity) ? b : a));
  } else {
    $("replay-player").hidden = true;
  }
  if (playable.length && !$("compare-seed").dataset.touched) $("compare-seed").value = playable[0].seed;
}

function markReplay(r) {
  for (const b of $("replay-list").querySelectorAll("button")) b.classList.toggle("active", b.dataset.name === r.name);
}

function openReplay(r) {
  state.replay = r;
  markReplay(r);
  state.player = player($("replay-player"), i => `/api/replays/${encodeURIComponent(r.name)}/frames/${i}`, r.steps,
    `seed ${r.seed}`);
}

// --- side by side ----------------------------------------------------------------------------------------
$("compare-seed").addEventListener("input", () => { $("compare-seed").dataset.touched = "1"; });
$("compare-run").addEventListener("click", async () => {
  const seedText = $("compare-seed").value.trim();
  const seed = /^-?\d+$/.test(seedText) ? Number(seedText) : seedText;
  const button = $("compare-run");
  button.disabled = true;
  $("compare-status").textContent = "playing both programs in the sandbox…";
  try {
    const result = await api("/api/compare", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({a: $("compare-a").value.trim(), b: $("compare-b").value.trim(), seed})});
    $("compare-status").textContent = `seed ${result.seed}`;
    const body = $("compare-sides").tBodies[0];
    body.replaceChildren(...result.sides.map((s, i) => {
      const tr = el("tr");
      for (const v of ["AB"[i], s.program, s.sha, number(s.score), s.won === null ? "–" : s.won ? "yes" : "no",
        number(s.moves), [s.error, s.message].filter(Boolean).join(": ")]) tr.appendChild(el("td", {}, v));
      return tr;
    }));
    $("compare-sides").hidden = false;
    if (result.frames) player($("compare-player"), i => `/api/compare/${result.id}/frames/${i}`, result.frames, "A and B");
    else { $("compare-player").hidden = true; showMessage("neither program played a move on this seed (see the table)"); }
  } catch (err) {
    $("compare-status").textContent = "";
    showMessage(`side by side: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

// --- start: ?step=N opens that step's completions (and stops following the newest) --------------------------
const ASKED = "asked";
const asked = new URLSearchParams(location.search).get("step");
if (asked !== null) { $("follow").checked = false; state.step = ASKED; loadStep(asked); }
poll();
setInterval(() => { if (!document.hidden) poll(); }, POLL_MS);  // a tab out of sight asks nothing...
document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });  // ...until it is back
