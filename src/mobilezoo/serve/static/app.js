// The upload page: choose or drop a photo, POST it to v1/classify, draw its top-5 as labelled bars.
"use strict";

const $ = (id) => document.getElementById(id);
let previewUrl = null;
const KEY = "mobilezoo-api-key";

// With `serve --api-key`, every API call carries "Authorization: Bearer <key>"; the page (static, no data) asks for
// the key when the server answers 401, and keeps it in this tab's sessionStorage only.
function apiFetch(url, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return fetch(url, { ...options, headers });
}

function askForKey(message) {
  $("auth").hidden = false;
  $("key").focus();
  setStatus(message, true);
}

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function loadModelInfo() {
  try {
    const r = await apiFetch("v1/models");
    if (r.status === 401) {
      const body = await r.json().catch(() => ({}));
      $("model").textContent = "model information needs the API key";
      askForKey(sessionStorage.getItem(KEY) ? `${body.detail || "wrong API key"}: enter it again` : "");
      return;
    }
    if (!r.ok) throw new Error(`${r.status}`);
    $("auth").hidden = true;
    const m = (await r.json()).models[0];
    $("model").textContent = `${m.name} · ${m.backend} on ${m.device} · ${m.num_classes} classes`;
  } catch (e) {
    $("model").textContent = "model information unavailable";
  }
}

function drawBars(prediction) {
  const list = $("bars");
  list.replaceChildren();
  for (const t of prediction.topk) {
    const li = document.createElement("li");
    li.className = "bar";
    li.dataset.index = t.index;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = t.name;  // textContent: class names are never parsed as HTML
    label.title = `class ${t.index}`;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0.5, t.score * 100).toFixed(2)}%`;
    track.append(fill);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${(t.score * 100).toFixed(1)}%`;
    li.append(label, track, score);
    list.append(li);
  }
}

async function classify(file) {
  if (!file) return;
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("source").textContent = file.name;
  $("result").hidden = false;
  $("bars").replaceChildren();
  setStatus(`classifying ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const r = await apiFetch("v1/classify?topk=5", { method: "POST", body: form });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) askForKey("");
    if (!r.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? "");
      throw new Error(`${r.status}: ${detail}`);
    }
    drawBars(body.predictions[0]);
    setStatus(`top-5 of ${body.model}`);
    document.body.dataset.state = "done";
  } catch (e) {
    setStatus(`could not classify ${file.name} (${e.message})`, true);
    document.body.dataset.state = "error";
  }
}

function setup() {
  const drop = $("drop");
  $("file").addEventListener("change", (ev) => classify(ev.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    setStatus("");
    loadModelInfo();
  });
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (file) classify(file);
  });
  loadModelInfo();
}

document.addEventListener("DOMContentLoaded", setup);
