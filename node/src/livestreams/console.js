// The console page's script: sign in, list, create, copy. Names are shown with textContent,
// never as HTML. Changes carry the CSRF token the sign-in answer gave.
"use strict";

let csrf = "";
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message || "";
}

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    throw new Error((data && data.error && data.error.message) || response.statusText);
  }
  return data;
}

function signedIn(token) {
  csrf = token;
  $("sign-in").classList.add("hidden");
  $("app").classList.remove("hidden");
  refresh();
}

async function refresh() {
  try {
    const page = await call("GET", "/api/v1/livestreams?limit=1000");
    const rows = page.data.map((l) => {
      const tr = document.createElement("tr");
      tr.dataset.id = l.id;
      for (const [text, cls] of [[l.name], [l.id], [l.status, "status-" + l.status], [l.playback.rtmp]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      return tr;
    });
    $("list").replaceChildren(...rows);
    showError("");
  } catch (e) {
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await call("POST", "/console/session", { token: $("token").value });
      $("token").value = "";
      signedIn(answer.csrf);
    } catch (e) {
      showError(e.message);
    }
  });
  $("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const created = await call("POST", "/api/v1/livestreams", { name: $("name").value });
      $("created-name").textContent = created.name;
      $("ingest").textContent = created.ingest.rtmp;
      $("key").textContent = created.stream_key;
      $("playback").textContent = created.playback.rtmp;
      $("created").classList.remove("hidden");
      $("name").value = "";
      refresh();
    } catch (e) {
      showError(e.message);
    }
  });
  $("refresh").addEventListener("click", refresh);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const text = $(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (e) {
        // No clipboard (an insecure origin): select it for Ctrl+C instead.
        window.getSelection().selectAllChildren($(button.dataset.copy));
      }
    });
  }
  try {
    const answer = await call("GET", "/console/session");
    signedIn(answer.csrf);
  } catch (e) {
    $("sign-in").classList.remove("hidden");
  }
});
