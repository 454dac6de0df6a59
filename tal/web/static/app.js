// tal's web page: talks only to the JSON API of `tal serve` (same validation, same error messages).
"use strict";

const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7480", "#cf5d00",
                 "#57606a", "#4b8b3b"];
const MAX_LISTED = 200;
const $ = (id) => document.getElementById(id);
const state = { task: null, classes: [], videos: [], video: null, duration: 0, results: [], selected: -1, cursor: 0 };

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function postJson(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
}

function show(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

function seconds(t) {
  return `${t.toFixed(1)} s`;
}

// --- the video list -------------------------------------------------------------------------------------------

function renderVideoList() {
  const needle = $("video-search").value.trim().toLowerCase();
  const matches = state.videos.filter((v) => v.toLowerCase().includes(needle));
  const list = $("video-list");
  list.replaceChildren(...matches.slice(0, MAX_LISTED).map((video) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = video;
    button.dataset.video = video;
    if (video === state.video) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => selectVideo(video));
    item.append(button);
    return item;
  }));
  const shown = Math.min(matches.length, MAX_LISTED);
  $("video-count").textContent = matches.length > shown
    ? `${shown} of ${matches.length} matching videos shown: refine the search`
    : `${matches.length} of ${state.videos.length} videos`;
}

function moveInList(event) {  // arrow keys walk the list from the search box or a list entry
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  const buttons = [...$("video-list").querySelectorAll("button")];
  if (!buttons.length) return;
  const at = buttons.indexOf(document.activeElement);
  const next = event.key === "ArrowDown" ? Math.min(at + 1, buttons.length - 1) : Math.max(at - 1, 0);
  if (at === -1 && event.key === "ArrowUp") return;
  buttons[at === -1 ? 0 : next].focus();
  event.preventDefault();
}

async function loadVideos() {
  state.videos = (await api("/videos")).videos;
  renderVideoList();
}

// --- one video ------------------------------------------------------------------------------------------------

async function selectVideo(video) {
  state.video = video;
  state.results = [];
  state.selected = -1;
  state.cursor = 0;
  renderVideoList();
  show("error", "");
  show("warning", "");
  $("video-title").textContent = video;
  $("intro").hidden = true;
  const info = await api(`/videos/${encodeURIComponent(video)}`).catch((error) => {
    show("error", error.message);
    return { duration: null, file: false };
  });
  state.duration = info.duration || 0;
  const player = $("player");
  player.hidden = !info.file;
  $("no-file").hidden = info.file;
  if (info.file) {
    player.src = `/videos/${encodeURIComponent(video)}/file`;
  } else {
    player.removeAttribute("src");
    player.load();
  }
  $("query-form").hidden = state.task !== "grounding";
  $("detect-controls").hidden = state.task !== "detection";
  drawTimeline();
  if (state.task === "detection") await detect();
  else $("sentence").focus();
}

async function search(event) {
  event.preventDefault();
  if (!state.video) return;
  const topK = Number($("top-k").value);
  await ask("/query", { video: state.video, query: $("sentence").value,
                        top_k: Number.isInteger(topK) ? topK : $("top-k").value },
            (answer) => answer.moments.map((m, i) => ({ ...m, lane: `#${i + 1}`, colour: COLOURS[0] })));
}

function detect() {  // every detection once; the threshold slider filters them on the page
  return ask("/detect", { video: state.video, score_threshold: 0, top_k: 1000 }, (answer) => answer.detections.map((d) => {
    const label = d.label === null ? "proposal" : d.label;
    const index = Math.max(0, state.classes.indexOf(label));
    return { ...d, lane: label, colour: COLOURS[index % COLOURS.length] };
  }));
}

async function ask(path, payload, toResults) {  // draw the API's answer, or show its refusal and its warnings
  show("error", "");
  show("warning", "");
  try {
    const answer = await postJson(path, payload);
    state.results = toResults(answer);
    show("warning", (answer.warnings || []).join(" "));
  } catch (error) {
    state.results = [];
    show("error", error.message);
  }
  state.selected = -1;
  drawTimeline();
  renderResults();
}

function visible() {  // the results the page shows: every moment, or the detections above the threshold
  if (state.task !== "detection") return state.results;
  const threshold = Number($("threshold").value);
  return state.results.filter((d) => d.score >= threshold);
}

function timelineSeconds() {
  const ends = state.results.map((r) => r.end);
  const player = $("player");
  const fromPlayer = !player.hidden && Number.isFinite(player.duration) ? player.duration : 0;
  return Math.max(state.duration || fromPlayer, ...ends, 1);
}

// --- timeline and results -------------------------------------------------------------------------------------

function drawTimeline() {
  const timeline = $("timeline");
  timeline.hidden = !state.video;
  const total = timelineSeconds();
  const lanes = laneRows(visible());
  $("lanes").replaceChildren(...lanes.map(({ name, results }) => {
    const lane = document.createElement("div");
    lane.className = "lane";
    const label = document.createElement("span");
    label.className = "lane-name";
    label.textContent = name;
    label.title = name;
    const track = document.createElement("div");
    track.className = "track";
    track.append(...results.map((result) => makeBar(result, total)));
    lane.append(label, track);
    return lane;
  }));
  const trackPixels = $("track-overlay").clientWidth;
  $("lanes").querySelectorAll(".bar").forEach((bar) => {  // a score only where it fits
    if (parseFloat(bar.style.width) * trackPixels / 100 < 34) bar.textContent = "";
  });
  const step = niceStep(total);
  const ticks = [];
  for (let t = 0; t <= 0.97 * total; t += step) {  // none at the right edge, where its label would not fit
    const tick = document.createElement("span");
    tick.className = "tick";
    tick.style.left = `${(100 * t) / total}%`;
    tick.textContent = `${Math.round(t)} s`;
    ticks.push(tick);
  }
  $("axis").replaceChildren(...ticks);
  movePlayhead();
}

const MAX_ROWS_PER_CLASS = 4;

function laneRows(shown) {
  // Grounding: one row per ranked moment. Detection: one lane per class, its detections packed into
  // rows so that they do not hide each other (at most MAX_ROWS_PER_CLASS; the rest share the last row).
  if (!shown.length) return [{ name: "", results: [] }];  // an empty lane keeps the timeline's height
  if (state.task !== "detection") return shown.map((r) => ({ name: r.lane, results: [r] }));
  const byClass = new Map();
  shown.forEach((r) => byClass.set(r.lane, [...(byClass.get(r.lane) || []), r]));
  const order = [...byClass.keys()].sort((a, b) => state.classes.indexOf(a) - state.classes.indexOf(b));
  return order.flatMap((name) => {
    const rows = [];
    byClass.get(name).slice().sort((a, b) => a.start - b.start).forEach((r) => {
      let row = rows.find((candidate) => candidate.end <= r.start);
      if (!row && rows.length < MAX_ROWS_PER_CLASS) rows.push(row = { end: -Infinity, results: [] });
      row = row || rows[rows.length - 1];
      row.results.push(r);
      row.end = Math.max(row.end, r.end);
    });
    return rows.map((row, i) => ({ name: i === 0 ? name : "", results: row.results }));
  });
}

function makeBar(result, total) {
  const bar = document.createElement("button");
  const index = state.results.indexOf(result);
  bar.type = "button";
  bar.className = "bar" + (index === state.selected ? " selected" : "");
  bar.style.left = `${(100 * result.start) / total}%`;
  bar.style.width = `${(100 * (result.end - result.start)) / total}%`;
  bar.style.background = result.colour;
  if (state.task === "detection") bar.style.opacity = String(0.35 + 0.65 * Math.min(1, result.score));
  bar.textContent = result.score.toFixed(2);
  bar.title = `${result.lane}: ${seconds(result.start)} to ${seconds(result.end)}, score ${result.score.toFixed(3)}`;
  bar.setAttribute("aria-label", bar.title);
  bar.addEventListener("click", (event) => { event.stopPropagation(); choose(index); });
  return bar;
}

function niceStep(total) {
  const rough = total / 8;
  const power = 10 ** Math.floor(Math.log10(rough));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
}

const MAX_RESULT_ROWS = 20;

function renderResults() {
  const shown = visible();
  const items = shown.slice(0, MAX_RESULT_ROWS).map((result) => {
    const index = state.results.indexOf(result);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = index === state.selected ? "selected" : "";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = result.colour;
    const what = document.createElement("span");
    what.textContent = `${state.task === "detection" ? result.lane + ": " : ""}${seconds(result.start)} to ${seconds(result.end)}`;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${result.score.toFixed(3)}`;
    button.append(swatch, what, score);
    button.addEventListener("click", () => choose(index));
    item.append(button);
    return item;
  });
  $("results").replaceChildren(...items);
  const more = shown.length - items.length;
  show("more-results", more > 0 ? `and ${more} more on the timeline (raise the threshold to see fewer)` : "");
  show("empty-results", state.task === "detection" && state.video && !shown.length
    ? "No detection scores above the threshold: lower it." : "");
}

function choose(index) {  // a moment clicked: select it and play from its start
  state.selected = index;
  const result = state.results[index];
  const player = $("player");
  state.cursor = result.start;
  if (!player.hidden) {
    player.currentTime = result.start;
    player.play().catch(() => {});  // autoplay rules may refuse: the player still sits at the start
  }
  drawTimeline();
  renderResults();
}

function movePlayhead() {
  const player = $("player");
  const t = !player.hidden && player.readyState > 0 ? player.currentTime : state.cursor || 0;
  $("playhead").style.left = `${(100 * t) / timelineSeconds()}%`;
}

function seekFromTimeline(event) {
  const box = $("track-overlay").getBoundingClientRect();
  const t = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width)) * timelineSeconds();
  state.cursor = t;
  const player = $("player");
  if (!player.hidden) player.currentTime = t;
  movePlayhead();
}

// --- uploads --------------------------------------------------------------------------------------------------

function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) { show("upload-status", "Choose a video file first."); return; }
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  const request = new XMLHttpRequest();  // fetch cannot report upload progress
  request.open("POST", `/uploads?name=${encodeURIComponent(file.name)}`);
  request.setRequestHeader("Content-Type", "application/octet-stream");
  request.upload.onprogress = (e) => {
    if (e.lengthComputable) { bar.value = e.loaded / e.total; show("upload-status", `Sending ${Math.round(100 * bar.value)}%`); }
  };
  request.onerror = () => show("upload-status", "The upload failed: the connection was lost.");
  request.onload = () => {
    let body = {};
    try { body = JSON.parse(request.responseText); } catch (error) { body = { error: request.statusText }; }
    if (request.status !== 202) { bar.hidden = true; show("upload-status", body.error || request.statusText); return; }
    pollUpload(body.video);
  };
  request.send(file);
}

async function pollUpload(video) {
  const bar = $("upload-progress");
  try {
    const job = await api(`/uploads/${encodeURIComponent(video)}`);
    bar.value = job.progress;
    if (job.state === "failed") { bar.hidden = true; show("upload-status", job.error); return; }
    if (job.state !== "done") {
      show("upload-status", `Extracting features of ${video}: ${Math.round(100 * job.progress)}%`);
      setTimeout(() => pollUpload(video), 500);
      return;
    }
    bar.hidden = true;
    show("upload-status", `${video} is ready.`);
    await loadVideos();
    await selectVideo(video);
  } catch (error) {
    show("upload-status", error.message);
  }
}

// --- start ----------------------------------------------------------------------------------------------------

async function start() {
  try {
    const health = await api("/health");
    state.task = health.task;
    state.classes = health.classes || [];
    $("task-name").textContent = health.task === "detection"
      ? `action detection, ${state.classes.length} classes` : "moment retrieval: find what a sentence describes";
    if (health.uploads) {
      $("upload-form").hidden = false;
      $("upload-limits").textContent = `Up to ${Math.round(health.uploads.max_bytes / 2 ** 20)} MB and `
        + `${Math.round(health.uploads.max_duration_s)} s; features are extracted as the model was trained.`;
    }
    await loadVideos();
  } catch (error) {
    show("error", `The server did not answer: ${error.message}`);
  }
}

$("video-search").addEventListener("input", renderVideoList);
$("video-search").addEventListener("keydown", moveInList);
$("video-list").addEventListener("keydown", moveInList);
$("query-form").addEventListener("submit", search);
$("upload-form").addEventListener("submit", upload);
$("timeline").addEventListener("click", seekFromTimeline);
$("threshold").addEventListener("input", () => {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  drawTimeline();
  renderResults();
});
$("player").addEventListener("timeupdate", movePlayhead);
$("player").addEventListener("loadedmetadata", drawTimeline);
start();
