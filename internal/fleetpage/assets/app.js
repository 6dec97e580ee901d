// The fleet page: asks for an API key once (kept in sessionStorage),
// then polls the fleet API every 2 s. Read-only: GET requests only.
"use strict";

const KEY = "berth.fleet.apikey";
const EVERY_MS = 2000;
let timer = null;

const $ = (id) => document.getElementById(id);

// el builds an element with text (never HTML: values come from the fleet).
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function bar(ratio) {
  const b = el("span", null, "bar");
  if (ratio >= 1) b.classList.add("full");
  else if (ratio >= 0.8) b.classList.add("warn");
  const fill = el("span");
  fill.style.width = Math.max(0, Math.min(1, ratio)) * 100 + "%";
  b.appendChild(fill);
  return b;
}

class Refused extends Error {
  constructor(code, msg) { super(msg); this.code = code; }
}

async function get(path) {
  const resp = await fetch("api/" + path, {
    headers: { "Authorization": "Bearer " + sessionStorage.getItem(KEY) },
    cache: "no-store",
  });
  let body = {};
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) throw new Refused(resp.status, body.error || resp.statusText);
  return body;
}

function refuse(err) {
  stop();
  sessionStorage.removeItem(KEY);
  $("fleet").hidden = true;
  $("login").hidden = false;
  $("forget").hidden = true;
  const what = err.code === 401 ? "Refused (401): the key is unknown, wrong or revoked." :
    err.code === 403 ? "Refused (403): this key may not read the fleet (it needs the viewer role)." :
    "Refused (" + err.code + ").";
  $("refusal").textContent = what + " " + err.message;
}

function renderGroups(data) {
  const tb = $("groups").tBodies[0];
  tb.replaceChildren();
  for (const g of data.groups) {
    const tr = el("tr");
    tr.dataset.group = g.id;
    tr.appendChild(el("td", g.id));
    const labels = el("td");
    for (const l of g.labels) labels.appendChild(el("span", l, "label"));
    tr.appendChild(labels);
    tr.appendChild(el("td", g.state || "active"));
    tr.appendChild(el("td", g.executors, "num"));
    tr.appendChild(el("td", g.connections + " / " + g.capacity, "num"));
    const u = el("td", null, "util");
    u.appendChild(bar(g.utilization));
    u.appendChild(el("span", " " + (g.utilization * 100).toFixed(1) + "%", "pct"));
    tr.appendChild(u);
    tb.appendChild(tr);
  }
  more(tb, data, "groups", 6);
}

// more notes a listing longer than the page the API gave.
function more(tb, data, what, cols) {
  if (!data.next_page_token) return;
  const tr = el("tr");
  const td = el("td", "… more " + what + " than one page shows");
  td.colSpan = cols;
  tr.appendChild(td);
  tb.appendChild(tr);
}

function renderExecutors(data) {
  const tb = $("executors").tBodies[0];
  tb.replaceChildren();
  for (const e of data.executors) {
    const tr = el("tr");
    tr.dataset.executor = e.id;
    tr.appendChild(el("td", e.id));
    tr.appendChild(el("td", e.group));
    const c = el("td", null, "num");
    c.appendChild(bar(e.capacity > 0 ? e.connections / e.capacity : 0));
    c.appendChild(el("span", " " + e.connections + " / " + e.capacity));
    tr.appendChild(c);
    tr.appendChild(el("td", e.load.toFixed(1), "num"));
    tr.appendChild(el("td", e.draining ? "draining" : (e.drain_marked ? "drain marked" : "no")));
    tb.appendChild(tr);
  }
  more(tb, data, "executors", 5);
}

function pairs(dl, rows) {
  dl.replaceChildren();
  for (const [k, v] of rows) {
    dl.appendChild(el("dt", k));
    dl.appendChild(el("dd", v));
  }
}

function renderRebalance(r) {
  const p = r.plan, g = r.progress;
  pairs($("rebalance"), [
    ["leader", r.leader || "none"],
    ["state", r.paused ? "paused by " + r.paused_by + (r.paused_reason ? ": " + r.paused_reason : "") : (r.held ? "held: " + r.held : "running")],
    ["plan", p.total + " to move (policy " + p.policy + ", drain " + p.drain + ", balance " + p.balance + ", waiting " + p.waiting + ")"],
    ["progress", g.moved + " moved, " + g.failed + " failed, " + g.in_flight + " in flight, " + g.rate.toFixed(1) + "/s" +
      (g.eta_seconds > 0 ? ", ETA " + Math.round(g.eta_seconds) + " s" : "")],
    ["updated", r.updated_at || "never"],
  ]);
}

async function refresh() {
  try {
    const [groups, execs, rb] = await Promise.all([get("groups"), get("executors"), get("rebalance").catch((e) => e)]);
    renderGroups(groups);
    renderExecutors(execs);
    if (rb instanceof Refused) {
      if (rb.code === 401 || rb.code === 403) throw rb;
      pairs($("rebalance"), [["state", "unavailable: " + rb.message]]);
    } else {
      renderRebalance(rb);
    }
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    if (err instanceof Refused && (err.code === 401 || err.code === 403)) { refuse(err); return; }
    $("status").textContent = "update failed: " + err.message;
  }
}

function stop() {
  if (timer !== null) { clearInterval(timer); timer = null; }
}

function start() {
  $("login").hidden = true;
  $("fleet").hidden = false;
  $("forget").hidden = false;
  $("refusal").textContent = "";
  refresh();
  stop();
  timer = setInterval(refresh, EVERY_MS);
}

async function lookup(id) {
  const out = $("device");
  out.replaceChildren(el("p", "looking up " + id + "…"));
  try {
    const d = await get("devices/" + encodeURIComponent(id));
    const dl = el("dl");
    dl.id = "device-info";
    const rows = [
      ["device", d.id],
      ["presence", d.online ? "online" : "offline"],
      ["executor", d.online ? d.executor : "—"],
      ["group", d.online ? d.group : "—"],
      ["connected since", d.connected_since || "—"],
      ["queued messages", d.queued_messages],
      ["assigned", d.assigned_group ? d.assigned_group + " (label " + d.assigned_label + ")" : "no assignment record"],
    ];
    const x = d.explanation;
    if (x) {
      rows.push(["placement", "rule " + (x.rule || "(default)") + " → label " + x.label + " → group " + x.group + " by " + x.method]);
      rows.push(["reason", x.reason]);
      rows.push(["recorded", x.recorded_group + " (label " + x.recorded_label + ": " + x.recorded_reason + ")"]);
      rows.push(["candidates", x.candidates.map((c) => c.group + " " + (c.utilization * 100).toFixed(0) + "%" +
        (c.kept ? "" : " (dropped: " + c.dropped + ")")).join(", ") || "none"]);
    }
    pairs(dl, rows);
    out.replaceChildren(dl);
  } catch (err) {
    if (err instanceof Refused && (err.code === 401 || err.code === 403)) { refuse(err); return; }
    out.replaceChildren(el("p", "Not found or refused: " + err.message, "error"));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    start();
  });
  $("forget").addEventListener("click", () => {
    stop();
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  $("device-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    lookup($("device-id").value.trim());
  });
  if (sessionStorage.getItem(KEY)) start();
});
