// The /web page. The server does all the work (sessions, rules, drawing the frames with the viewer's
// render path, running programs in the sandbox); this script only sends what the player chose and
// shows what came back. No framework, no build step, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  header: "X-Session-Id", session: null, info: null, buttons: [], live: null, liveLog: [],
  run: null, runIndex: 0, playing: false, token: 0, delay: 120,
};
const ARROWS = { ArrowUp: "up", ArrowRight: "right", ArrowDown: "down", ArrowLeft: "left" };

function show(text, kind) {
  const m = $("message");
  m.textContent = text || "";
  m.className = text ? (kind || "info") : "";
}

function status(text) { $("status").textContent = text || ""; }

function busy(on) { document.body.dataset.busy = on ? "1" : "0"; }

function seedText() { return $("seed").value.trim(); }

// The seed exactly as typed: digits go as a JSON number (no rounding through a JS number), anything
// else as a string, so the server, not this page, says what is wrong with it.
function seedJSON() {
  const text = seedText();
  return /^-?\d+$/.test(text) ? text : JSON.stringify(text);
}

async function call(url, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.session) headers[state.header] = state.session;
  let response;
  try {
    response = await fetch(url, { method: "POST", headers, body });
  } catch (error) {
    throw Object.assign(new Error(`the server cannot be reached (${error.message})`), { status: 0 });
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    let detail = data && data.detail !== undefined ? data.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw Object.assign(new Error(detail), { status: response.status });
  }
  return data;
}

function logLine(entry, list) {
  const li = document.createElement("li");
  const reward = typeof entry.reward === "number" ? ` · ${entry.reward >= 0 ? "+" : ""}${entry.reward}` : "";
  li.textContent = `${entry.step} · ${entry.action || "reset"}${reward}${entry.done ? " · over" : ""}`;
  if (entry.done) li.classList.add("end");
  (list || $("log")).appendChild(li);
  return li;
}

function showLog(entries) {
  const list = $("log");
  list.replaceChildren();
  entries.forEach((entry) => logLine(entry, list));
  if (list.lastChild) list.lastChild.scrollIntoView({ block: "nearest" });
}

function setButtons(buttons, done) {
  state.buttons = buttons || [];
  const box = $("actions");
  box.replaceChildren();
  for (const button of state.buttons) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "action";
    b.textContent = b.dataset.label = button.label;
    b.disabled = !button.legal;
    b.addEventListener("click", () => step(button.action));
    box.appendChild(b);
  }
  $("fields").hidden = state.buttons.length > 0 || !(state.info && state.info.fields.length);
  for (const input of $("fields").querySelectorAll("input, select, button")) input.disabled = !!done;
}

function drawLive(data) {
  state.live = data;
  const frame = $("frame");
  frame.onload = frame.onerror = null;  // a run's frame still loading must not mark this one
  if (data.frame) frame.src = data.frame;
  frame.dataset.mode = "live";
  frame.dataset.step = String(data.step);
  setButtons(data.buttons, data.done);
  const score = data.observation && typeof data.observation.score === "number" ? data.observation.score : data.total;
  status(`${state.info ? state.info.env : ""} · seed ${data.seed === null ? "random" : data.seed} · step ${data.step}`
    + ` · score ${score}${data.done ? " · game over: Reset to play again" : ""}`);
}

async function reset() {
  stopRun();
  show("");
  busy(true);
  try {
    const text = seedText();
    const data = await call("/web/reset", text === "" ? "{}" : `{"seed": ${seedJSON()}}`);
    state.session = data.session_id;
    state.liveLog = [data.log];
    showLog(state.liveLog);
    drawLive(data);
    show("");
  } catch (error) {
    if (error.status === 404 && state.session) {  // the session was closed (idle too long): start a new one
      state.session = null;
      busy(false);
      return reset();
    }
    show(error.message, "error");
  } finally {
    busy(false);
  }
}

async function step(action) {
  if (!state.session) { show("press Reset first to start an episode", "error"); return; }
  const wasRun = state.run !== null;
  stopRun();
  show("");
  busy(true);
  try {
    const data = await call("/web/step", JSON.stringify({ action }));
    state.liveLog.push(data.log);
    if (wasRun) showLog(state.liveLog); else logLine(data.log).scrollIntoView({ block: "nearest" });
    drawLive(data);
    show("");
  } catch (error) {
    const hint = error.status === 404 ? " (press Reset to start a new episode)" : "";
    show(error.message + hint, "error");
  } finally {
    busy(false);
  }
}

function stepJSON() {
  let action;
  try {
    action = JSON.parse($("action-json").value);
  } catch (error) {
    show(`the action is not JSON: ${error.message}`, "error");
    return;
  }
  step(action);
}

// A form for actions that are not a choice of ids: one input per field of the action schema.
function buildFields(fields) {
  const form = $("fields");
  form.replaceChildren();
  for (const field of fields) {
    const label = document.createElement("label");
    label.title = field.description || "";
    label.append(field.name);
    let input;
    if (field.enum) {
      input = document.createElement("select");
      for (const value of field.enum) input.append(new Option(String(value), JSON.stringify(value)));
    } else {
      input = document.createElement("input");
      if (field.type === "boolean") input.type = "checkbox";
      else if (field.type === "integer" || field.type === "number") { input.type = "number"; input.size = 6; }
      if (field.minimum !== undefined) input.min = field.minimum;
      if (field.maximum !== undefined) input.max = field.maximum;
      if (field.default !== undefined && field.default !== null) {
        if (field.type === "boolean") input.checked = !!field.default;
        else input.value = field.type === "json" ? JSON.stringify(field.default) : String(field.default);
      }
    }
    input.dataset.field = field.name;
    input.dataset.type = field.type;
    label.append(input);
    form.append(label);
  }
  const go = document.createElement("button");
  go.type = "submit";
  go.textContent = "Step";
  form.append(go);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const action = {};
    try {
      for (const input of form.querySelectorAll("[data-field]")) {
        const kind = input.dataset.type;
        if (kind === "boolean") { action[input.dataset.field] = input.checked; continue; }
        if (input.value === "") continue;
        if (input.tagName === "SELECT" || kind === "json") action[input.dataset.field] = JSON.parse(input.value);
        else if (kind === "integer" || kind === "number") action[input.dataset.field] = Number(input.value);
        else action[input.dataset.field] = input.value;
      }
    } catch (error) {
      show(`a field is not JSON: ${error.message}`, "error");
      return;
    }
    step(action);
  });
}

// --- a program's run: played on the server in the sandbox, then shown step by step ----------------
function stopRun() {
  state.playing = false;
  state.token += 1;
  if (state.run) {  // back to the live episode: its log and its last frame
    state.run = null;
    showLog(state.liveLog);
    if (state.live) drawLive(state.live);
  }
  for (const id of ["prev", "pause", "next", "scrub"]) $(id).disabled = true;
  $("pause").textContent = "Pause";
}

async function runProgram() {
  stopRun();
  busy(true);
  show("running the program in the sandbox…", "info");
  try {
    const seed = seedText() === "" ? "0" : seedJSON();
    const data = await call("/web/run", `{"program": ${JSON.stringify($("program").value)}, "seed": ${seed}}`);
    state.run = data;
    showLog(data.steps);
    const scrub = $("scrub");
    scrub.max = String(data.shown - 1);
    for (const id of ["prev", "pause", "next", "scrub"]) $(id).disabled = false;
    const result = data.result || {};
    const how = result.error ? `stopped: ${result.error}${result.message ? ` (${result.message})` : ""}`
      : (result.won ? "won" : "game over");
    const cut = data.shown < data.steps_total ? ` (showing the first ${data.shown} of ${data.steps_total} steps)` : "";
    show(`program ${data.program}, seed ${data.seed}: score ${result.score}, ${result.moves} moves, ${how}${cut}`,
      result.error ? "error" : "info");
    await showRunStep(0);
    state.playing = true;
    $("pause").textContent = "Pause";
    playRun();
  } catch (error) {
    show(error.message, "error");
  } finally {
    busy(false);
  }
}

function showRunStep(index) {
  const run = state.run;
  if (!run) return Promise.resolve();
  state.runIndex = Math.max(0, Math.min(index, run.shown - 1));
  $("scrub").value = String(state.runIndex);
  const items = $("log").children;
  for (const li of $("log").querySelectorAll("li.current")) li.classList.remove("current");
  const li = items[state.runIndex];
  if (li) { li.classList.add("current"); li.scrollIntoView({ block: "nearest" }); }
  const entry = run.steps[state.runIndex];
  status(`program ${run.program} · seed ${run.seed} · step ${entry.step} of ${run.shown - 1}`);
  const frame = $("frame");
  frame.dataset.mode = "run";
  return new Promise((resolve) => {
    frame.onload = () => { frame.dataset.step = String(state.runIndex); resolve(); };
    frame.onerror = () => { show(`frame ${state.runIndex} could not be loaded`, "error"); resolve(); };
    frame.src = run.frames + state.runIndex;
  });
}

async function playRun() {
  const token = state.token;
  while (state.playing && token === state.token && state.run && state.runIndex < state.run.shown - 1) {
    await new Promise((resolve) => setTimeout(resolve, state.delay));
    if (!state.playing || token !== state.token) return;
    await showRunStep(state.runIndex + 1);
  }
  if (token === state.token) { state.playing = false; $("pause").textContent = "Play"; }
}

function togglePlay() {
  if (!state.run) return;
  state.playing = !state.playing;
  state.token += 1;
  $("pause").textContent = state.playing ? "Pause" : "Play";
  if (state.playing) {
    if (state.runIndex >= state.run.shown - 1) showRunStep(0).then(playRun); else playRun();
  }
}

function seek(index) {
  state.playing = false;
  state.token += 1;
  $("pause").textContent = "Play";
  showRunStep(index);
}

async function start() {
  $("reset").addEventListener("click", reset);
  $("step-json").addEventListener("click", stepJSON);
  $("run").addEventListener("click", runProgram);
  $("pause").addEventListener("click", togglePlay);
  $("prev").addEventListener("click", () => seek(state.runIndex - 1));
  $("next").addEventListener("click", () => seek(state.runIndex + 1));
  $("scrub").addEventListener("input", () => seek(Number($("scrub").value)));
  document.addEventListener("keydown", (event) => {
    if (event.target.closest && event.target.closest("input, textarea, select")) return;
    const name = ARROWS[event.key];
    const button = name && [...$("actions").children].find((b) => b.dataset.label === name && !b.disabled);
    if (button) { event.preventDefault(); button.click(); }
  });
  window.addEventListener("pagehide", () => {  // give the session back: the server's table is bounded
    if (state.session) {
      fetch("/web/close", { method: "POST", keepalive: true, headers: { [state.header]: state.session } });
    }
  });
  try {
    const response = await fetch("/web/info");
    state.info = await response.json();
  } catch (error) {
    show(`the server cannot be reached (${error.message})`, "error");
    return;
  }
  const info = state.info;
  state.header = info.session_header || state.header;
  document.title = `stratagem · ${info.env}`;
  $("env-name").textContent = info.env;
  $("env-description").textContent = info.description || "";
  $("program").placeholder = info.template;
  $("run-note").textContent = `Paste a program defining ${info.strategy.function}(${info.strategy.args.join(", ")}) `
    + `(returns ${info.strategy.returns}). It plays one episode on the seed above, in the server's sandbox `
    + `(${info.runs.sandbox}); then its steps are shown one by one.`;
  buildFields(info.fields);
  await reset();
  document.body.dataset.ready = "1";
}

start();
