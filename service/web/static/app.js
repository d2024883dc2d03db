// Steno's page: submit audio, follow /v1/jobs/{id}/events (SSE), offer the transcript.
"use strict";

const $ = (id) => document.getElementById(id);
let source = null;

function say(text) { $("message").textContent = text; }

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

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

function follow(jobId) {
  if (source) source.close();
  $("job").hidden = false;
  $("job-id").textContent = jobId;
  $("segments").replaceChildren();
  $("downloads").hidden = true;
  $("error").hidden = true;
  setStatus("queued");
  setProgress("queued", 0, null);
  // EventSource resends Last-Event-ID on its own when the connection drops.
  source = new EventSource(`/v1/jobs/${jobId}/events`);
  const on = (kind, handle) =>
    source.addEventListener(kind, (message) => handle(JSON.parse(message.data)));
  on("queued", () => setStatus("queued"));
  on("started", () => { setStatus("running"); setProgress("starting", 0, null); });
  on("progress", (e) => { setStatus("running"); setProgress(e.stage, e.percent, e.eta_seconds); });
  on("segment", addSegment);
  on("completed", () => {
    setStatus("completed");
    setProgress("completed", 100, null);
    for (const link of document.querySelectorAll("#downloads a")) {
      const format = link.dataset.format;
      link.href = `/v1/jobs/${jobId}/transcript?format=${format}`;
      const ext = { text: "txt", verbose_json: "verbose.json" }[format] || format;
      link.setAttribute("download", `${jobId}.${ext}`);
    }
    $("downloads").hidden = false;
    finish();
  });
  on("failed", (e) => {
    setStatus("failed");
    $("error").textContent = `${e.code}: ${e.detail}`;
    $("error").hidden = false;
    finish();
  });
  on("cancelled", () => { setStatus("cancelled"); finish(); });
}

function finish() {
  // The server closes the stream after the terminal event; don't let EventSource reconnect.
  if (source) source.close();
  source = null;
}

async function submit(body, headers) {
  say("Uploading…");
  try {
    const response = await fetch("/v1/jobs", { method: "POST", body, headers });
    const reply = await response.json();
    if (response.status !== 202) {
      say(`Refused (${response.status}): ${reply.detail || reply.code}`);
      return;
    }
    say("");
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
  submit(form, {});
}

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

// A page opened at /#<job id> follows that job.
if (location.hash.length > 1) follow(location.hash.slice(1));
