// Steno's page: ask for an API key, submit audio, follow /v1/jobs/{id}/events, offer the transcript.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_ITEM = "steno.apiKey";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const EXTENSIONS = { text: "txt", srt: "srt", vtt: "vtt", json: "json", verbose_json: "verbose.json" };
// Failed connections in a row before the page stops trying to follow a job.
const MAX_RECONNECTS = 5;
// The server sends a heartbeat comment every 15 s by default; a stream silent for this long
// is a dead connection that TCP has not noticed, so the page drops it and reconnects.
const STREAM_IDLE_MS = 60_000;

let following = null; // the AbortController of the job being followed
let blobUrls = []; // the shown job's transcripts, freed when another job is shown

function say(text) { $("message").textContent = text; }

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

// --- the API key ------------------------------------------------------------------------
// Kept in localStorage so a reload doesn't ask again. It travels only in the Authorization
// header, never in a URL: URLs end up in access logs and the browser's history.

function apiKey() { return localStorage.getItem(KEY_ITEM); }

function askForKey(reason) {
  stopFollowing(); // its calls would carry the key being replaced
  localStorage.removeItem(KEY_ITEM);
  $("auth").hidden = false;
  $("submit").hidden = true;
  $("key-line").hidden = true;
  $("key-message").textContent = reason;
  $("key").value = "";
  $("key").focus();
}

function useKey(key) {
  localStorage.setItem(KEY_ITEM, key);
  $("auth").hidden = true;
  $("submit").hidden = false;
  $("key-line").hidden = false;
  // The prefix names the key and is no secret; the rest stays off the screen.
  const named = /^stn_[0-9a-f]{10}_/.exec(key);
  $("key-prefix").textContent = named ? `${named[0]}…` : "(not a Steno key)";
}

// Every API call goes through here. A 401 (no key, an unknown or revoked one) forgets the key
// and asks again with the server's reason; the call then resolves to null.
async function api(path, options = {}) {
  const key = apiKey();
  if (!key) {
    askForKey("Enter your API key first.");
    return null;
  }
  const headers = { ...options.headers, Authorization: `Bearer ${key}` };
  const response = await fetch(path, { ...options, headers });
  if (response.status !== 401) return response;
  const reply = await response.json().catch(() => ({}));
  // A key saved while this call was out is not the one refused.
  if (apiKey() === key) askForKey(reply.detail || "The API refused this key.");
  return null;
}

// --- the job's events -------------------------------------------------------------------
// Read with fetch, not EventSource: EventSource cannot send an Authorization header, and the
// other way (the key in the URL) would write the key into access logs. So the page does what
// EventSource does itself: parse the stream, resume with Last-Event-ID, retry a dropped one.

// The text/event-stream format (HTML spec, "Interpreting an event stream"). feed() takes
// decoded text in chunks of any size: a line, or a CRLF, may be split across two of them.
function sseParser(onEvent, onRetry) {
  let buffer = "";
  let crPending = false; // the last chunk ended in "\r": a "\n" opening the next one pairs it
  let type = "";
  let data = [];
  let idField = "";
  let lastEventId = "";

  function line(text) {
    if (text === "") { // a blank line dispatches
      lastEventId = idField;
      if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id: lastEventId });
      type = "";
      data = [];
      return;
    }
    if (text.startsWith(":")) return; // a comment, such as the server's heartbeat
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) idField = value;
    else if (field === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
  }

  return {
    feed(chunk) {
      if (!chunk) return;
      if (crPending && chunk[0] === "\n") chunk = chunk.slice(1);
      buffer += chunk;
      const eol = /\r\n|\r|\n/g;
      let start = 0;
      for (let match; (match = eol.exec(buffer)); start = eol.lastIndex) {
        line(buffer.slice(start, match.index));
      }
      crPending = buffer.endsWith("\r");
      buffer = buffer.slice(start);
    },
    // The connection ended: a half-received event is dropped (a resume sends it again).
    end() {
      buffer = "";
      crPending = false;
      type = "";
      data = [];
      idField = lastEventId;
    },
    get lastEventId() { return lastEventId; },
  };
}

// Feeds a response body to the parser until it ends, the job ends, or it falls silent.
async function readStream(body, parser, finished) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let idle = null;
  const watch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => reader.cancel().catch(() => {}), STREAM_IDLE_MS);
  };
  try {
    watch();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      watch();
      parser.feed(decoder.decode(value, { stream: true }));
      if (finished()) {
        await reader.cancel();
        return;
      }
    }
    parser.feed(decoder.decode());
  } finally {
    clearTimeout(idle);
  }
}

function stopFollowing() {
  if (following) following.abort();
  following = null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setStatus(status) {
  const badge = $("status");
  badge.textContent = status;
  badge.className = `badge ${status}`;
}

function setProgress(stage, percent, eta) {
  $("stage").textContent = stage;
  const shown = Math.max(0, Math.min(100, percent));
  $("percent").textContent = `${shown.toFixed(0)} %`;
  $("bar-fill").style.width = `${shown}%`;
  document.querySelector(".bar").setAttribute("aria-valuenow", shown.toFixed(0));
  $("eta").textContent = eta == null ? "" : `about ${clock(eta)} left`;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function addSegment(segment) {
  const item = document.createElement("li");
  const when = document.createElement("time");
  when.textContent = `${clock(segment.start)}–${clock(segment.end)}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = segment.text.trim();
  item.append(when, text);
  item.dataset.id = segment.id;
  $("segments").append(item);
}

function showJob(jobId) {
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  $("segments").replaceChildren();
  $("downloads").hidden = true;
  for (const link of document.querySelectorAll("#downloads a")) link.removeAttribute("href");
  for (const url of blobUrls) URL.revokeObjectURL(url);
  blobUrls = [];
  $("error").hidden = true;
  setStatus("queued");
  setProgress("queued", 0, null);
}

async function follow(jobId) {
  stopFollowing();
  const control = new AbortController();
  following = control;
  showJob(jobId);
  const handlers = {
    queued: () => setStatus("queued"),
    started: () => { setStatus("running"); setProgress("starting", 0, null); },
    progress: (e) => { setStatus("running"); setProgress(e.stage, e.percent, e.eta_seconds); },
    segment: addSegment,
    completed: () => {
      setStatus("completed");
      setProgress("completed", 100, null);
      offerDownloads(jobId, control.signal);
    },
    failed: (e) => { setStatus("failed"); showError(`${e.code}: ${e.detail}`); },
    cancelled: () => setStatus("cancelled"),
  };
  let ended = false;
  let retryMs = 2000; // until the server's retry: field says otherwise
  const parser = sseParser((event) => {
    // The id is recorded before a handler runs: one that throws is not replayed forever.
    ended = ended || TERMINAL.has(event.type);
    if (handlers[event.type]) handlers[event.type](JSON.parse(event.data));
  }, (ms) => { retryMs = ms; });

  for (let failures = 0; ; ) {
    try {
      const last = parser.lastEventId;
      const response = await api(`/v1/jobs/${jobId}/events`, {
        headers: last ? { "Last-Event-ID": last } : {},
        signal: control.signal,
        cache: "no-store",
      });
      if (!response) return; // 401: the page is asking for a key
      if (response.ok) {
        failures = 0;
        await readStream(response.body, parser, () => ended);
      } else if (response.status < 500) { // 404, 429: retrying won't help soon
        const reply = await response.json().catch(() => ({}));
        showError(`Cannot follow this job (${response.status}): ${reply.detail || reply.code}`);
        return;
      }
    } catch (error) {
      if (control.signal.aborted) return;
      console.warn("job event stream dropped:", error);
    }
    parser.end();
    // The server closes the stream after the terminal event; anything else is a drop.
    if (ended || control.signal.aborted) return;
    failures += 1;
    if (failures > MAX_RECONNECTS) {
      showError("Lost the connection to the API; reload the page to try again.");
      return;
    }
    await sleep(retryMs * failures);
    if (control.signal.aborted) return;
  }
}

// A link cannot send the Authorization header, so each transcript is fetched here and offered
// as a blob: URL, its download attribute naming the file.
async function offerDownloads(jobId, signal) {
  const links = [...document.querySelectorAll("#downloads a")];
  const fetched = await Promise.all(links.map(async (link) => {
    const format = link.dataset.format;
    try {
      const response = await api(`/v1/jobs/${jobId}/transcript?format=${format}`, { signal });
      if (!response || !response.ok) return false;
      const blob = await response.blob();
      if (signal.aborted) return false; // another job is shown now
      const url = URL.createObjectURL(blob);
      blobUrls.push(url);
      link.href = url;
      link.download = `${jobId}.${EXTENSIONS[format]}`;
      return true;
    } catch {
      return false;
    }
  }));
  if (signal.aborted) return;
  links.forEach((link, i) => { link.hidden = !fetched[i]; });
  $("downloads").hidden = !fetched.some(Boolean);
  if (!fetched.every(Boolean)) showError("Some transcript formats could not be fetched.");
}

// --- submitting -------------------------------------------------------------------------

async function submit(body, headers) {
  say("Uploading…");
  try {
    const response = await api("/v1/jobs", { method: "POST", body, headers });
    say("");
    if (!response) return; // 401: the page is asking for a key
    const reply = await response.json().catch(() => ({}));
    if (response.status !== 202) {
      say(`Refused (${response.status}): ${reply.detail || reply.code}`);
      return;
    }
    history.replaceState(null, "", `#${reply.id}`);
    follow(reply.id);
  } catch (error) {
    say(`Could not reach the API: ${error}`);
  }
}

function submitFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  $("file").value = ""; // picking the same file again (after a 401, say) is a new change
  submit(form, {});
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("key").value.trim();
  if (!key) return;
  $("key").value = "";
  useKey(key);
  // Take up again the job a 401 or a key change stopped following.
  if (location.hash.length > 1) follow(location.hash.slice(1));
});
$("key-change").addEventListener("click", () => askForKey("Key forgotten; enter one to go on."));

$("file").addEventListener("change", (event) => submitFile(event.target.files[0]));
const drop = $("drop");
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const kind of ["dragleave", "drop"]) {
  drop.addEventListener(kind, (event) => { event.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (event) => submitFile(event.dataTransfer.files[0]));
$("url-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const url = $("url").value.trim();
  if (url) submit(JSON.stringify({ audio_url: url }), { "content-type": "application/json" });
});

// With a stored key the page is ready, and a page opened at /#<job id> follows that job.
if (apiKey()) {
  useKey(apiKey());
  if (location.hash.length > 1) follow(location.hash.slice(1));
} else {
  askForKey("Steno needs an API key.");
}
