// The operator page: plays the live channel and shows /api/status once a second. Read-only.
"use strict";

const PLAYLIST = "/channel/live.m3u8";
const STATUS_URL = "/api/status";
const REFRESH_MS = 1000;
const RETRY_MS = 3000;

// What the page has seen, for an operator's console and for the browser test.
const state = { playing: null, fragments: [], statusUpdates: 0, status: null, playerErrors: [] };
window.vortexOperator = state;

const $ = (selector) => document.querySelector(selector);

function seconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return `${value.toFixed(1)} s`;
}

function mib(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  return `${(value / 1048576).toFixed(1)} MiB`;
}

// Cells are filled with textContent only: slot ids and reasons come from recipes.
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function fillTable(selector, rows, emptyText, columns) {
  const body = $(`${selector} tbody`);
  body.replaceChildren(...(rows.length ? rows : [row([[emptyText, "empty"], ...Array(columns - 1).fill("")])]));
}

function slack(value) {
  return [seconds(value), Number.isFinite(value) && value < 0 ? "num neg" : "num"];
}

function showCard(selector, slot) {
  const card = $(selector);
  if (!slot) {
    card.querySelector(".slot").textContent = "—";
    card.querySelector(".detail").textContent = "";
    return;
  }
  card.querySelector(".slot").textContent = slot.slot_id;
  card.querySelector(".slot").className = slot.filler ? "slot filler" : "slot";
  const parts = [slot.filler ? "filler" : "", slot.state || ""];
  if (Number.isFinite(slot.air_in_s)) parts.push(slot.air_in_s >= 0 ? `airs in ${seconds(slot.air_in_s)}` : `aired ${seconds(-slot.air_in_s)} ago`);
  if (Number.isFinite(slot.deadline_slack_s)) parts.push(`slack ${seconds(slot.deadline_slack_s)}`);
  card.querySelector(".detail").textContent = parts.filter(Boolean).join(" · ");
}

function showStatus(status) {
  $("#phase").textContent = status.phase || "unknown";
  showCard("#on-air", status.on_air);
  showCard("#next", status.next);
  const slots = status.slots || [];
  fillTable("#timeline", slots.map((s) => row([
    [s.slot_id, s.filler ? "filler" : ""],
    [s.state || "", s.late ? "late" : ""], s.running_stage || "",
    [seconds(s.air_in_s), "num"], [seconds(s.deadline_in_s), "num"], slack(s.deadline_slack_s),
  ])), "no slots", 6);
  const arena = Object.entries(status.arena || {});
  fillTable("#arena", arena.map(([region, r]) => row([
    region, r.kind || "", [mib(r.budget_bytes), "num"], [mib(r.used_bytes), "num"], [mib(r.peak_bytes), "num"],
    [r.budget_bytes > 0 ? `${((100 * r.used_bytes) / r.budget_bytes).toFixed(0)} %` : "—", "num"],
  ])), "no arena", 6);
  const misses = status.misses || [];
  fillTable("#misses", misses.map((m) => row([
    m.slot_id, [seconds(Number.isFinite(m.air_in_s) ? -m.air_in_s : null), "num"],
    m.filler ? ["filler aired", "filler"] : "no", m.reason || "",
  ])), "no misses", 4);
  const fillers = status.fillers_aired || 0;
  $("#fillers-aired").textContent = `${fillers} filler${fillers === 1 ? "" : "s"} aired`;
}

let statusInFlight = false;
async function refreshStatus() {
  if (statusInFlight) return;  // a slow daemon gets one request at a time, not a pile-up
  statusInFlight = true;
  const error = $("#status-error");
  try {
    const response = await fetch(STATUS_URL, { cache: "no-store" });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    state.status = body;
    state.statusUpdates += 1;
    showStatus(body);
    error.hidden = true;
  } catch (exc) {
    error.textContent = `status unavailable: ${exc.message}`;
    error.hidden = false;
  } finally {
    statusInFlight = false;
  }
}

function setPlayerState(text) {
  $("#player-state").textContent = text;
}

function startPlayer() {
  const video = $("#channel");
  video.muted = true;  // autoplay is only allowed muted
  video.addEventListener("playing", () => setPlayerState("playing"));
  video.addEventListener("waiting", () => setPlayerState("buffering"));
  if (!window.Hls || !Hls.isSupported()) {
    // Safari plays HLS natively.
    if (video.canPlayType("application/vnd.apple.mpegurl")) { video.src = PLAYLIST; return; }
    setPlayerState("this browser cannot play HLS");
    return;
  }
  const hls = new Hls({ enableWorker: true });
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((exc) => setPlayerState(`press play (${exc.name})`)));
  hls.on(Hls.Events.FRAG_CHANGED, (_event, data) => {
    const frag = data.frag;
    state.playing = { sn: frag.sn, cc: frag.cc, url: frag.relurl || frag.url };
    state.fragments.push(state.playing);
    $("#playing-fragment").textContent = state.playing.url;
  });
  hls.on(Hls.Events.ERROR, (_event, data) => {
    if (!data.fatal) return;  // hls.js retries those itself
    state.playerErrors.push(`${data.type}: ${data.details}`);
    setPlayerState(`error (${data.details}), retrying`);
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) { hls.recoverMediaError(); return; }
    // A channel not started yet (404) or a daemon restarting: try again, never give up.
    setTimeout(() => { hls.loadSource(PLAYLIST); hls.startLoad(); }, RETRY_MS);
  });
  hls.loadSource(PLAYLIST);
  hls.attachMedia(video);
}

startPlayer();
refreshStatus();
setInterval(refreshStatus, REFRESH_MS);
