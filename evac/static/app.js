// evac's status page: reads /api/v1 with the session cookie, follows running jobs' event streams.
// No framework and no build step; every value from the API is set as text, never as HTML.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 5000;
const FAILURES = 10;
const FAILED = new Set(["failed", "partial"]);
const KEEP_FINISHED_MS = 60000; // a finished job's card stays this long

const streams = new Map(); // job id -> EventSource
const progress = new Map(); // job id -> what its events said so far
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function ago(ts) {
  if (!ts) return "";
  const s = Math.max(0, Date.now() / 1000 - ts);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return new Date(ts * 1000).toLocaleString();
}

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = text;
}

class Refused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options) {
  const response = await fetch(API + path, { credentials: "same-origin", ...options });
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) throw new Refused(response.status, (body && body.error) || response.statusText);
  return body;
}

// ------------------------------------------------------------------ signing in and out
function showSignIn(why) {
  stopAll();
  document.getElementById("main").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-why").textContent = why;
  setStatus("signed-out", "signed out");
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  const token = input.value.trim();
  input.value = "";
  try {
    await api("/session", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: "{}",
    });
  } catch (error) {
    showSignIn(`Not signed in: ${error.message}`);
    return;
  }
  document.getElementById("signin").hidden = true;
  refresh();
}

async function signOut() {
  try {
    await api("/session", { method: "DELETE" });
  } finally {
    showSignIn("Signed out.");
  }
}

// ------------------------------------------------------------------ the page
async function refresh() {
  clearTimeout(timer);
  try {
    const [fleet, recent, running] = await Promise.all([
      api("/hosts"),
      api(`/jobs?limit=50`),
      api(`/jobs?state=running&limit=50`),
    ]);
    document.getElementById("signin").hidden = true;
    document.getElementById("main").hidden = false;
    document.getElementById("signout").hidden = false;
    renderBanners(fleet);
    renderHosts(fleet.hosts, fleet.monitor);
    renderRunning(running.jobs);
    renderFailures(recent.jobs);
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    setStatus("ok", "live");
  } catch (error) {
    if (error instanceof Refused && error.status === 401) {
      showSignIn("Sign in with an API token that has the read scope.");
      return;
    }
    if (error instanceof Refused && error.status === 404) setStatus("off", error.message);
    else setStatus("error", `cannot read the API: ${error.message}`);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function renderBanners(fleet) {
  const banners = document.getElementById("banners");
  banners.replaceChildren();
  if (fleet.ha && fleet.ha.armed === false) {
    const who = fleet.ha.by ? ` by ${fleet.ha.by}` : "";
    banners.append(
      el("p", { class: "banner warn", id: "ha-disarmed" },
        `HA is disarmed${who} ${ago(fleet.ha.since)}: ${fleet.ha.reason || "no reason given"}. `,
        "Nothing is fenced or restarted automatically."),
    );
  }
  if (fleet.storm_brake) {
    banners.append(
      el("p", { class: "banner alert", id: "storm-brake" },
        `Storm brake engaged ${ago(fleet.storm_brake.since)}: ${fleet.storm_brake.reason}. `,
        "Automatic failover is held until `evac brake release`."),
    );
  }
}

function renderHosts(hosts, monitor) {
  const rows = hosts.map((host) => {
    const guests = host.guests.map((g) =>
      el("li", { "data-guest": g.name, class: g.error ? "bad" : null, title: g.error || `${g.memory_mib} MiB, ${g.vcpus} vCPU` }, g.name),
    );
    const age = host.snapshot_age === null ? "never seen" : `seen ${Math.round(host.snapshot_age)} s ago`;
    return el("tr", { "data-host": host.name, "data-state": host.state, "data-health": host.health || "" },
      el("th", { scope: "row" }, host.name, el("small", {}, host.address || "")),
      el("td", { class: `state ${host.state}`, title: host.reason || null }, host.state,
        host.reason ? el("small", {}, host.reason) : null),
      el("td", { class: `health ${host.health || "unknown"}`, title: host.health_reason || null },
        host.health || (monitor ? "unknown" : "not monitored here")),
      el("td", { class: "guests", "data-count": host.guests.length },
        el("ul", {}, guests), el("small", {}, `${host.guests.length} guest(s), ${age}`)),
      el("td", { class: "jobs" }, host.jobs.map((id) => el("span", { class: "jobref" }, `#${id} `))),
    );
  });
  document.querySelector("#hosts tbody").replaceChildren(...rows);
}

function renderFailures(jobs) {
  const failed = jobs.filter((job) => FAILED.has(job.state)).slice(0, FAILURES);
  const rows = failed.map((job) =>
    el("tr", { "data-job": job.id, "data-state": job.state },
      el("td", {}, `#${job.id}`),
      el("td", {}, job.runbook),
      el("td", {}, job.target),
      el("td", { class: `state ${job.state}` }, job.state),
      el("td", {}, ago(job.updated)),
      el("td", { class: "error" }, job.error),
    ),
  );
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "none" }, "No failed job among the last 50.")));
  document.querySelector("#failures tbody").replaceChildren(...rows);
}

// ------------------------------------------------------------------ running jobs, live
function renderRunning(jobs) {
  const box = document.getElementById("running");
  const ids = new Set(jobs.map((job) => job.id));
  const now = Date.now();
  for (const [id, s] of [...progress.entries()]) {
    const shownLongEnough = !s.finishedAt || now - s.finishedAt > KEEP_FINISHED_MS;
    if (!ids.has(id) && !streams.has(id) && shownLongEnough) progress.delete(id);
  }
  for (const job of jobs) {
    if (!progress.has(job.id)) progress.set(job.id, { job, step: "", action: "", total: 0, done: 0, failed: 0, items: new Map(), message: "", finished: null });
    else progress.get(job.id).job = job;
    follow(job.id);
  }
  const cards = [...progress.values()].sort((a, b) => a.job.id - b.job.id).map(card);
  box.replaceChildren(...(cards.length ? cards : [el("p", { class: "none" }, "No job is running.")]));
}

function follow(id) {
  if (streams.has(id)) return;
  const source = new EventSource(`${API}/jobs/${id}/events`);
  streams.set(id, source);
  const on = (kind, handle) =>
    source.addEventListener(kind, (message) => {
      handle(JSON.parse(message.data));
      redraw(id);
    });
  const state = () => progress.get(id);
  on("job.started", (e) => { state().job.runbook = e.data.runbook; });
  on("step.started", (e) => Object.assign(state(), { step: e.step, action: e.data.action, total: 0, done: 0, failed: 0, items: new Map(), message: "" }));
  on("step.items", (e) => { state().total = e.data.count; });
  on("item.started", (e) => state().items.set(e.item, { state: "running", message: "", pct: 0 }));
  on("progress", (e) => {
    const s = state();
    if (!e.item) s.message = e.message;
    else {
      const item = s.items.get(e.item) || { state: "running", message: "", pct: 0 };
      item.message = e.message;
      if (e.data.total) item.pct = Math.min(100, Math.round((100 * e.data.processed) / e.data.total));
      s.items.set(e.item, item);
    }
  });
  on("item.finished", (e) => {
    const s = state();
    const ok = e.data.state === "succeeded";
    s.done += 1;
    if (!ok) s.failed += 1;
    s.items.set(e.item, { state: e.data.state, message: e.message || "", pct: ok ? 100 : (s.items.get(e.item) || {}).pct || 0 });
  });
  on("step.finished", (e) => { state().message = `step ${e.step} ${e.data.state}${e.message ? `: ${e.message}` : ""}`; });
  on("job.finished", (e) => Object.assign(state(), { finished: e.data.state, finishedAt: Date.now() }));
  source.addEventListener("end", (message) => {
    const end = JSON.parse(message.data);
    source.close();
    streams.delete(id);
    const s = progress.get(id);
    if (s) Object.assign(s, { finished: s.finished || end.state, finishedAt: Date.now() });
    redraw(id);
    refresh();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) streams.delete(id); // the next refresh opens it again
  };
}

function redraw(id) {
  const s = progress.get(id);
  const old = document.querySelector(`#running [data-job="${id}"]`);
  if (!s || !old) return;
  old.replaceWith(card(s));
}

function card(s) {
  const job = s.job;
  const state = s.finished || job.state;
  const items = [...s.items.entries()].map(([key, item]) =>
    el("li", { "data-item": key, "data-state": item.state, "data-pct": item.pct },
      el("span", { class: "key" }, key), " ",
      el("span", { class: `state ${item.state}` }, item.state), " ",
      el("span", { class: "message" }, item.message)),
  );
  const total = Math.max(s.total, s.done);
  return el("article", { class: "job", "data-job": job.id, "data-state": state, "data-step": s.step, "data-done": s.done, "data-total": total },
    el("h3", {}, `#${job.id} ${job.runbook}`, job.target ? ` on ${job.target}` : "", job.dry_run ? " (dry run)" : "",
      el("span", { class: `state ${state}` }, state)),
    el("p", { class: "step" }, s.step ? `step ${s.step} (${s.action})` : "starting",
      total ? ` — ${s.done} of ${total} done${s.failed ? `, ${s.failed} failed` : ""}` : ""),
    total ? el("progress", { max: total, value: s.done }) : null,
    el("ul", { class: "items" }, items),
    el("p", { class: "message" }, s.message),
  );
}

function stopAll() {
  clearTimeout(timer);
  for (const source of streams.values()) source.close();
  streams.clear();
  progress.clear();
}

document.getElementById("signin").addEventListener("submit", signIn);
document.getElementById("signout").addEventListener("click", signOut);
refresh();
