// The home pages' script. Every page is rendered whole by the service; this adds what needs a
// script: the API key (kept in this tab's sessionStorage, sent as a header, never in a URL),
// live updates (a run's /events, the runs list while one runs), the form and the cancel button.
// A page is refreshed by fetching it again and swapping its <main>: one renderer, the server's.
"use strict";

const KEY_STORAGE = "llm-gateway-key";
const LIST_REFRESH_MS = 2000;
const RUN_REFRESH_MS = 1000;

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = storedKey();
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

function main() {
  return document.getElementById("main");
}

let refreshing = null;
let refreshAgain = false;

// Fetch this page again (with the key) and put its fresh <main> in place of ours.
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    const response = await fetch(location.pathname + location.search, {
      headers: authHeaders(), cache: "no-store",
    });
    const html = await response.text();
    const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
    if (!fresh) throw new Error("The page came back without its content (" + response.status + ")");
    if (fresh.dataset.locked && storedKey()) {
      sessionStorage.removeItem(KEY_STORAGE);
      fresh.querySelector("#key-error").textContent = "That key was refused; enter another.";
    }
    main().replaceWith(fresh);
    enhance();
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
    if (refreshAgain) {
      refreshAgain = false;
      refreshOrSay();
    }
  }
}

function showKeyState() {
  const state = document.getElementById("key-state");
  if (!state) return;
  state.textContent = "";
  if (!storedKey()) return;
  const forget = document.createElement("button");
  forget.type = "button";
  forget.id = "forget-key";
  forget.textContent = "Forget the key";
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.reload();
  });
  state.append("key set · ", forget);
}

// --- the key prompt -------------------------------------------------------------------------

function enhanceKeyForm(root) {
  const form = root.querySelector("#key-form");
  if (!form) return;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, form.querySelector("#key-input").value.trim());
    showKeyState();
    refreshOrSay();
  });
}

// --- the runs list: refreshed while a run goes on --------------------------------------------

let listTimer = null;

function enhanceList(root) {
  clearTimeout(listTimer);
  if (root.dataset.live) listTimer = setTimeout(refreshOrSay, LIST_REFRESH_MS);
}

// A refresh that fails (the service restarting, say) is said on the page, and tried again by
// the next event or timer.
function refreshOrSay() {
  refresh().catch((error) => say("Could not refresh the page: " + error.message));
}

// --- a run: follows its events ---------------------------------------------------------------

let following = null;
let runTimer = null;

function enhanceRun(root) {
  const id = root.dataset.run;
  if (!id) return;
  const cancel = root.querySelector("#cancel");
  if (cancel) {
    cancel.addEventListener("click", () => {
      cancelRun(id, cancel).catch((error) => say("Could not cancel: " + error.message));
    });
  }
  if (root.dataset.status === "running" && following !== id) {
    following = id;
    followEvents(id).catch((error) => say("Lost the run's events: " + error.message));
  }
}

function say(text) {
  const message = document.getElementById("message");
  if (message) message.textContent = text;
}

async function cancelRun(id, button) {
  button.disabled = true;
  say("Cancelling…");
  const response = await fetch("/benchmarks/" + encodeURIComponent(id), {
    method: "DELETE", headers: authHeaders(),
  });
  if (!response.ok && response.status !== 409) {
    say(await errorText(response));
    button.disabled = false;
    return;
  }
  await refresh();
}

// EventSource cannot send a header: the stream is read with fetch and parsed here.
async function followEvents(id) {
  const response = await fetch("/benchmarks/" + encodeURIComponent(id) + "/events", {
    headers: authHeaders({Accept: "text/event-stream"}), cache: "no-store",
  });
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (onEvent(block)) {
        reader.cancel();
        following = null;
        return refresh();
      }
    }
  }
  following = null;
  return refresh();
}

// One SSE block; true once the run has ended (its summary came).
function onEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return false;
  const view = JSON.parse(data.join("\n"));
  if (name === "summary") return true;
  if (name === "progress") showProgress(view.progress);
  return false;
}

function showProgress(progress) {
  const bar = document.getElementById("run-progress");
  if (bar) {
    bar.max = progress.total || 1;
    bar.value = progress.done;
  }
  const text = document.getElementById("progress-text");
  if (text) {
    const total = progress.total === null ? "?" : progress.total;
    text.textContent = progress.done + "/" + total + " requests (" + progress.ok + " ok, " +
      progress.failed + " failed) · elapsed " + Math.round(progress.elapsed_seconds) + " s";
  }
  const step = document.getElementById("step-text");
  if (step && progress.steps) step.textContent = "step " + (progress.step || 1) + " of " + progress.steps;
  // Statistics so far and the last failures: the server renders them.
  if (!runTimer) {
    runTimer = setTimeout(() => {
      runTimer = null;
      refreshOrSay();
    }, RUN_REFRESH_MS);
  }
}

// --- the form --------------------------------------------------------------------------------

function enhanceForm(root) {
  const form = root.querySelector("#benchmark-form");
  if (form) form.addEventListener("submit", (event) => submitForm(event, form));
}

function formBody(form) {
  const body = new FormData();
  for (const element of form.elements) {
    if (!element.name) continue;
    if (element.type === "file") {
      if (element.files.length) body.append(element.name, element.files[0]);
    } else if (element.dataset.list) {
      for (const item of element.value.split(/[\s,]+/)) if (item) body.append(element.name, item);
    } else if (element.value.trim() !== "") {
      body.append(element.name, element.value);
    }
  }
  return body;
}

async function submitForm(event, form) {
  event.preventDefault();
  for (const slot of form.querySelectorAll(".field-error")) slot.textContent = "";
  const summary = form.querySelector("#form-errors");
  summary.textContent = "";
  const button = form.querySelector("#start");
  button.disabled = true;
  try {
    const response = await fetch("/benchmark?background=true", {
      method: "POST", headers: authHeaders(), body: formBody(form),
    });
    if (response.status === 202) {
      const accepted = await response.json();
      location.assign("/runs/" + encodeURIComponent(accepted.id));
      return;
    }
    showErrors(form, summary, response.status, await response.json().catch(() => null));
  } catch (error) {
    summary.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// The API's own messages: FastAPI's list of field errors, or the service's one detail.
function showErrors(form, summary, status, payload) {
  const detail = payload && payload.detail;
  if (!Array.isArray(detail)) {
    summary.textContent = status + ": " + (detail || "the service refused the benchmark");
    return;
  }
  const lines = [];
  for (const item of detail) {
    const field = (item.loc || []).filter((part) => typeof part === "string" && part !== "body");
    const name = field[field.length - 1];
    const slot = name && form.querySelector('.field-error[data-for="' + CSS.escape(name) + '"]');
    if (slot) slot.textContent = item.msg;
    lines.push((name ? name + ": " : "") + item.msg);
  }
  summary.textContent = status + ": " + lines.join("; ");
}

async function errorText(response) {
  const payload = await response.json().catch(() => null);
  const detail = payload && payload.detail;
  return response.status + ": " + (typeof detail === "string" ? detail : response.statusText);
}

// --- downloads: with a key, a link cannot carry it; the file is fetched with it instead ------

function enhanceDownloads(root) {
  for (const link of root.querySelectorAll('a[href^="/benchmarks/"]')) {
    link.addEventListener("click", async (event) => {
      if (!storedKey()) return;
      event.preventDefault();
      const response = await fetch(link.getAttribute("href"), {headers: authHeaders()});
      if (!response.ok) {
        say(await errorText(response));
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      if (link.getAttribute("href").endsWith("/report")) {
        location.assign(url);  // a page to read, not a file to keep
        return;
      }
      const save = document.createElement("a");
      save.href = url;
      save.download = link.getAttribute("href").split("/").pop() || "download";
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    });
  }
}

// --- start -----------------------------------------------------------------------------------

function enhance() {
  const root = main();
  enhanceKeyForm(root);
  enhanceList(root);
  enhanceRun(root);
  enhanceForm(root);
  enhanceDownloads(root);
  if (root.dataset.locked && storedKey()) refreshOrSay();
}

document.addEventListener("DOMContentLoaded", () => {
  showKeyState();
  enhance();
});
