// The access broker's console: log in, send requests, run bulk jobs, read and retry the
// audit log. Everything goes through the broker's JSON API with the session token, kept in
// sessionStorage. Values from the server are only ever set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("broker-token");
let user = sessionStorage.getItem("broker-user");
// The audit view's cursor (next_before newest first, next_after oldest first) and the
// number of rows shown so far.
let auditCursor = null;
let auditShown = 0;
let bulkJob = null;
let pendingRefresh = null;

// Set by the broker on every answer that came from behind it (a service or a region proxy).
const UPSTREAM = "X-Broker-Upstream";

function fromUpstream(response) {
  return response.headers.get(UPSTREAM) !== null;
}

async function api(method, path, body, extraHeaders) {
  const headers = { Authorization: `Bearer ${token}` };
  Object.assign(headers, extraHeaders || {});
  const response = await fetch(path, { method, headers, body });
  // Only the broker's own 401 means the session is over: a service's 401 is its answer.
  if (response.status === 401 && !fromUpstream(response)) {
    logout();
  }
  return response;
}

function show() {
  const in_ = Boolean(token);
  $("login-section").hidden = in_;
  $("app").hidden = !in_;
  $("logout").hidden = !in_;
  $("who").textContent = in_ ? `logged in as ${user}` : "not logged in";
  if (in_) {
    loadAudit(true);
  }
}

function logout() {
  token = null;
  sessionStorage.removeItem("broker-token");
  sessionStorage.removeItem("broker-user");
  show();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("login-error").textContent = "";
  const username = $("username").value;
  const response = await fetch("/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: $("password").value }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || !answer.token) {
    $("login-error").textContent = answer.message || `login failed (${response.status})`;
    return;
  }
  $("password").value = "";
  token = answer.token;
  user = username;
  sessionStorage.setItem("broker-token", token);
  sessionStorage.setItem("broker-user", user);
  show();
});

$("logout").addEventListener("click", logout);

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) {
      headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
  }
  return headers;
}

// The badge class of an HTTP status: s2 (2xx) … s5 (5xx).
function statusClass(status) {
  return `badge s${Math.floor(status / 100)}`;
}

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const method = $("method").value;
  const path = $("path").value.replace(/^\/+/, "");
  const target = `/proxy/${encodeURIComponent($("region").value)}/${encodeURIComponent($("service").value)}/${path}`;
  const body = ["GET", "HEAD"].includes(method) ? undefined : $("body").value;
  const response = await api(method, target, body, parseHeaders($("headers").value));
  if (!token) {
    return; // the broker ended the session
  }
  const text = await response.text();
  $("response").hidden = false;
  $("response-status").textContent = `${response.status} ${response.statusText}`;
  $("response-status").className = statusClass(response.status);
  $("response-origin").textContent = fromUpstream(response) ? "from the service" : "from the broker";
  let shown = text;
  try {
    shown = JSON.stringify(JSON.parse(text), null, 2);
  } catch (_) {
    // not JSON: shown as it came
  }
  $("response-body").textContent = shown;
  loadAudit(true);
});

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) {
    td.className = className;
  }
  row.appendChild(td);
  return td;
}

function span(text, className, title) {
  const element = document.createElement("span");
  element.textContent = text;
  element.className = className;
  if (title) {
    element.title = title;
  }
  return element;
}

// "2026-12-07 14:03:27", local time: short, and the same width in every row.
function formatTime(ms) {
  const at = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} `
    + `${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

function rowStatus(record) {
  if (record.decision && record.decision.effect === "deny") {
    return "denied";
  }
  return record.outcome ? record.outcome.status : "pending";
}

function auditOrder() {
  return $("f-order").value === "oldest" ? "oldest" : "newest";
}

function auditQuery() {
  const params = new URLSearchParams();
  for (const [id, name] of [["f-user", "user"], ["f-region", "region"], ["f-service", "service"], ["f-status", "status"]]) {
    if ($(id).value) {
      params.set(name, $(id).value);
    }
  }
  if ($("f-from").value) {
    params.set("from_ms", String(new Date($("f-from").value).getTime()));
  }
  const order = auditOrder();
  params.set("order", order);
  if (auditCursor !== null) {
    params.set(order === "newest" ? "before" : "after", String(auditCursor));
  }
  params.set("limit", "50");
  return params.toString();
}

function auditRow(record) {
  const row = document.createElement("tr");
  row.dataset.id = record.id;
  const status = rowStatus(record);
  row.className = status;
  auditShown += 1;
  const number = cell(row, auditShown, "n");
  number.title = `audit record ${record.seq}`;
  cell(row, formatTime(record.time_ms), "time").title = new Date(record.time_ms).toString();
  cell(row, record.user).title = record.user;
  const request = cell(row, "", "target");
  const target = record.target || record.resource || "";
  request.title = `${record.method || ""} ${target}`;
  request.append(span(record.method || "", "method"));
  if (record.retry_of) {
    request.append(span("retry", "tag", `retry of ${record.retry_of}`));
  }
  request.append(document.createTextNode(target));
  cell(row, "").append(span(status, `badge ${status}`));
  const detail = status === "denied"
    ? (record.decision && record.decision.reason) || ""
    : (record.outcome && record.outcome.detail) || (record.decision && record.decision.reason) || "";
  cell(row, detail, "detail").title = detail;
  const actions = cell(row, "", "action");
  if (record.retry && record.retry.possible) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = "Retry";
    retry.title = "send it again, as you";
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      const answer = await api("POST", `/api/audit/${encodeURIComponent(record.id)}/retry`);
      retry.textContent = `${answer.status}`;
      loadAudit(true);
    });
    actions.appendChild(retry);
  } else {
    // Offered only where it can succeed; otherwise, why not.
    const reason = (record.retry && record.retry.reason) || "cannot be retried";
    actions.appendChild(span("can't retry", "no-retry", reason));
  }
  return row;
}

async function loadAudit(fresh) {
  if (fresh) {
    auditCursor = null;
  }
  $("audit-error").textContent = "";
  const response = await api("GET", `/api/audit?${auditQuery()}`);
  const page = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("audit-error").textContent = page.message || `the audit log could not be read (${response.status})`;
    return;
  }
  if (fresh) {
    auditShown = 0;
    $("audit-rows").replaceChildren();
  }
  for (const record of page.records) {
    $("audit-rows").appendChild(auditRow(record));
  }
  const next = auditOrder() === "newest" ? page.next_before : page.next_after;
  auditCursor = next === undefined ? null : next;
  $("audit-more").hidden = auditCursor === null;
  $("audit-empty").hidden = auditShown > 0;
  // Outcomes are recorded when a response has been sent: while a shown request still has
  // none, look again shortly.
  const pending = page.records.some((r) => rowStatus(r) === "pending");
  if (fresh && pending && pendingRefresh === null) {
    pendingRefresh = setTimeout(() => {
      pendingRefresh = null;
      loadAudit(true);
    }, 1000);
  }
}

$("audit-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  loadAudit(true);
});
$("f-order").addEventListener("change", () => loadAudit(true));
$("audit-more").addEventListener("click", () => loadAudit(false));

$("bulk-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const ids = $("bulk-ids").value.split("\n").map((s) => s.trim()).filter((s) => s);
  const job = {
    method: $("bulk-method").value,
    path_template: $("bulk-path").value,
    ids,
    concurrency: Number($("bulk-concurrency").value),
    rate_per_second: Number($("bulk-rate").value),
  };
  if ($("bulk-body").value) {
    job.body_template = $("bulk-body").value;
    job.content_type = "application/json";
  }
  const response = await api("POST", "/api/bulk", JSON.stringify(job), { "Content-Type": "application/json" });
  const answer = await response.json().catch(() => ({}));
  $("bulk-progress").hidden = false;
  $("bulk-failures").replaceChildren();
  if (!response.ok) {
    $("bulk-text").textContent = answer.message || `refused (${response.status})`;
    return;
  }
  bulkJob = answer.id;
  $("bulk-cancel").hidden = false;
  followBulk();
});

$("bulk-cancel").addEventListener("click", async () => {
  if (bulkJob) {
    await api("POST", `/api/bulk/${encodeURIComponent(bulkJob)}/cancel`);
  }
});

async function followBulk() {
  const response = await api("GET", `/api/bulk/${encodeURIComponent(bulkJob)}`);
  const view = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("bulk-text").textContent = view.message || `lost the job (${response.status})`;
    return;
  }
  $("bulk-bar").max = view.total;
  $("bulk-bar").value = view.done;
  let text = `${view.state}: ${view.done} of ${view.total} sent, ${view.failed} failed`;
  if (view.state !== "running" && view.not_started > 0) {
    text += `, ${view.not_started} never sent`;
  }
  $("bulk-text").textContent = text;
  $("bulk-failures").replaceChildren(...view.results.filter((r) => r.error).map((r) => {
    const li = document.createElement("li");
    li.textContent = `${r.id}: ${r.status} ${r.error}`;
    return li;
  }));
  if (view.state === "running") {
    setTimeout(followBulk, 300);
  } else {
    $("bulk-cancel").hidden = true;
    loadAudit(true);
  }
}

show();
