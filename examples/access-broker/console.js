// The access broker's console: log in, send requests, run bulk jobs, read and retry the
// audit log. Everything goes through the broker's JSON API with the session token, kept in
// sessionStorage. Values from the server are only ever set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("broker-token");
let user = sessionStorage.getItem("broker-user");
let auditAfter = null;
let bulkJob = null;
let pendingRefresh = null;

async function api(method, path, body, extraHeaders) {
  const headers = { Authorization: `Bearer ${token}` };
  Object.assign(headers, extraHeaders || {});
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401) {
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

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const method = $("method").value;
  const path = $("path").value.replace(/^\/+/, "");
  const target = `/proxy/${encodeURIComponent($("region").value)}/${encodeURIComponent($("service").value)}/${path}`;
  const body = ["GET", "HEAD"].includes(method) ? undefined : $("body").value;
  const response = await api(method, target, body, parseHeaders($("headers").value));
  const text = await response.text();
  $("response").hidden = false;
  $("response-status").textContent = `${response.status} ${response.statusText}`;
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
  if (auditAfter !== null) {
    params.set("after", String(auditAfter));
  }
  params.set("limit", "50");
  return params.toString();
}

async function loadAudit(fresh) {
  if (fresh) {
    auditAfter = null;
    $("audit-rows").replaceChildren();
  }
  $("audit-error").textContent = "";
  const response = await api("GET", `/api/audit?${auditQuery()}`);
  const page = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("audit-error").textContent = page.message || `the audit log could not be read (${response.status})`;
    return;
  }
  for (const record of page.records) {
    const row = document.createElement("tr");
    row.dataset.id = record.id;
    row.className = record.decision && record.decision.effect === "deny" ? "denied" : "";
    cell(row, record.seq);
    cell(row, new Date(record.time_ms).toLocaleString());
    cell(row, record.user);
    cell(row, `${record.method || ""} ${record.target || ""}${record.retry_of ? " (retry)" : ""}`, "target");
    cell(row, record.decision ? `${record.decision.effect}: ${record.decision.reason}` : "");
    cell(row, record.outcome ? `${record.outcome.status}: ${record.outcome.detail}` : "", "outcome");
    const actions = cell(row, "");
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "retry";
    retry.textContent = "Retry";
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      const answer = await api("POST", `/api/audit/${encodeURIComponent(record.id)}/retry`);
      retry.textContent = `Retried: ${answer.status}`;
      loadAudit(true);
    });
    actions.appendChild(retry);
    $("audit-rows").appendChild(row);
  }
  auditAfter = page.next_after;
  $("audit-more").hidden = page.next_after === null || page.next_after === undefined;
  // Outcomes are recorded when a response has been sent: while a shown request still has
  // none, look again shortly.
  const pending = page.records.some((r) => !r.outcome && !(r.decision && r.decision.effect === "deny"));
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
  $("bulk-text").textContent = `${view.state}: ${view.done}/${view.total}, ${view.failed} failed`;
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
