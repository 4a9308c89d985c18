// The policy-delivery UI: artifacts, each one's pipeline, candidate, hosts and history, and
// the operations the caller's role allows. Everything comes from the JSON API with the
// bearer token kept in this tab's sessionStorage. Values from the server (names, actors,
// messages, SPIFFE IDs) are only ever set as text, never parsed as HTML.
"use strict";

const TOKEN_KEY = "policy-delivery-token";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY);
// The artifact shown, its last detail answer, and the hosts view's query.
let current = null;
let detail = null;
const hostQuery = { offset: 0, limit: 50, filter: "", state: "" };
let hostFilterTimer = null;
let pendingOperation = null;

const OPERATIONS = {
  promote: { verb: "Promote", done: "promoted" },
  pause: { verb: "Pause", done: "paused" },
  resume: { verb: "Resume", done: "resumed" },
  rollback: { verb: "Roll back", done: "rolled back" },
};
const HOST_STATES = [
  ["", "All"],
  ["current", "Current"],
  ["drift", "Drift"],
  ["unreported", "No report"],
  ["error", "Error"],
];

// ---------------------------------------------------------------------------------------
// Small helpers: elements from text, numbers and times.

function el(tag, options, children) {
  const node = document.createElement(tag);
  const o = options || {};
  if (o.text !== undefined && o.text !== null) node.textContent = String(o.text);
  if (o.className) node.className = o.className;
  if (o.title) node.title = String(o.title);
  if (o.href) node.href = o.href;
  for (const child of children || []) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function cell(text, options) {
  return el("td", Object.assign({ text }, options || {}));
}

function badge(text, kind) {
  return el("span", { text, className: `badge ${kind || ""}` });
}

function short(revision) {
  return revision ? revision.slice(0, 12) : "";
}

// A message as the pipeline wrote it, its 64-digit revision ids cut to 12 (the element's
// title keeps the whole message).
function shortened(message) {
  return (message || "").replace(/\b[0-9a-f]{64}\b/g, (id) => `${short(id)}…`);
}

// A revision as people know it: the manifest's name, with the short content id.
function revisionLabel(named, revision) {
  if (!revision) return "none";
  return named ? `${named} (${short(revision)})` : short(revision);
}

const numbers = new Intl.NumberFormat("en");

function percent(rate) {
  if (rate === null || rate === undefined) return "–";
  return `${(rate * 100).toFixed(rate < 0.1 ? 2 : 1)}%`;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

function timestamp(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function duration(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

// How long ago `ms` was, by the server's clock (`nowMs`), so a skewed laptop does not lie.
function ago(ms, nowMs) {
  return `${duration(Math.max(0, Math.round((nowMs - ms) / 1000)))} ago`;
}

// ---------------------------------------------------------------------------------------
// The API.

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, answer.code || "error",
      answer.message || `the server answered ${response.status}`);
  }
  return answer;
}

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 403) {
      return `Not allowed (403): ${error.message}`;
    }
    return `${error.message} (${error.status} ${error.code})`;
  }
  return `The server could not be reached: ${error.message}`;
}

// A 401 ends the session (the token is unknown or revoked); anything else is shown.
function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    signOut(`Your token was not accepted (401): ${error.message}. Sign in again.`);
    return;
  }
  notice(describe(error));
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// ---------------------------------------------------------------------------------------
// Signing in and out.

function signOut(message) {
  token = null;
  current = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("artifact-filter").value = "";
  $("who").textContent = "";
  $("sign-out").hidden = true;
  notice("");
  show("sign-in");
  $("sign-in-error").textContent = message || "";
  $("token").focus();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  token = $("token").value.trim();
  try {
    const listing = await api("GET", "/v1/artifacts");
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    signedIn(listing.principal);
    route();
  } catch (error) {
    token = null;
    $("sign-in-error").textContent = error instanceof ApiError && error.status === 401
      ? `This token is not accepted (401): ${error.message}`
      : describe(error);
  }
});

// Signing out by hand starts the next person at the list; a 401 keeps the place, so
// signing in again returns to it.
$("sign-out").addEventListener("click", () => {
  history.replaceState(null, "", "#/");
  signOut("");
});

function signedIn(principal) {
  $("who").textContent = principal ? `signed in as ${principal}` : "";
  $("sign-out").hidden = false;
}

function show(view) {
  for (const id of ["sign-in", "list-view", "artifact-view"]) {
    $(id).hidden = id !== view;
  }
}

function crumbs(name) {
  const nav = $("crumbs");
  nav.replaceChildren();
  if (name) {
    nav.append(el("a", { text: "Artifacts", href: "#/" }), el("span", { text: " / " }),
      el("span", { text: name, className: "here" }));
  }
}

// ---------------------------------------------------------------------------------------
// The artifact list: every artifact the caller may read, filtered in the page.

let artifactRows = [];

function stateOf(artifact) {
  const s = artifact.state || {};
  if (s.paused) return ["paused", "warn"];
  if (s.candidate) return ["rolling out", "info"];
  if (s.stable) return ["stable", "ok"];
  return ["no revision", ""];
}

async function loadList() {
  show("list-view");
  crumbs(null);
  let listing;
  try {
    listing = await api("GET", "/v1/artifacts");
  } catch (error) {
    failed(error);
    return;
  }
  notice("");
  signedIn(listing.principal);
  const body = $("artifact-rows");
  const fragment = document.createDocumentFragment();
  artifactRows = listing.artifacts.map((a) => {
    const [label, kind] = stateOf(a);
    const s = a.state || {};
    const link = el("a", { text: a.artifact, href: `#/artifacts/${encodeURIComponent(a.artifact)}` });
    const row = el("tr", {}, [
      el("td", { className: "name" }, [link]),
      cell(a.bundle),
      cell(s.stable ? revisionLabel(a.stable_bundle_revision, s.stable) : "none",
        { className: "mono", title: s.stable || "" }),
      cell(s.candidate ? revisionLabel(a.candidate_bundle_revision, s.candidate.revision) : "–",
        { className: "mono", title: s.candidate ? s.candidate.revision : "" }),
      cell(a.candidate_step || "–"),
      el("td", {}, [badge(label, kind)]),
      cell(shortened(s.last_event), { className: "message", title: s.last_event || "" }),
    ]);
    row.dataset.artifact = a.artifact;
    fragment.append(row);
    const haystack = [a.artifact, a.bundle, a.candidate_step || "", label,
      a.stable_bundle_revision || "", a.candidate_bundle_revision || ""].join(" ").toLowerCase();
    return { row, haystack };
  });
  body.replaceChildren(fragment);
  filterList();
}

function filterList() {
  const words = $("artifact-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const { row, haystack } of artifactRows) {
    const match = words.every((w) => haystack.includes(w));
    row.hidden = !match;
    if (match) shown += 1;
  }
  const total = artifactRows.length;
  $("artifact-count").textContent = shown === total
    ? `${numbers.format(total)} artifacts`
    : `${numbers.format(shown)} of ${numbers.format(total)} artifacts`;
  $("artifacts-empty").hidden = shown > 0;
}

$("artifact-filter").addEventListener("input", filterList);

// ---------------------------------------------------------------------------------------
// One artifact: its pipeline, candidate, hosts, revisions and history.

async function loadArtifact(name) {
  show("artifact-view");
  crumbs(name);
  if (current !== name) {
    current = name;
    detail = null;
    Object.assign(hostQuery, { offset: 0, filter: "", state: "" });
    $("host-filter").value = "";
    $("reason").value = "";
    $("action-result").textContent = "";
    $("artifact-name").textContent = name;
    for (const id of ["artifact-badges", "steps", "candidate", "host-rows", "revision-rows",
      "event-rows", "host-states"]) {
      $(id).replaceChildren();
    }
    $("artifact-summary").textContent = "Loading…";
  }
  await Promise.all([loadDetail(name), loadHosts(name)]);
}

async function loadDetail(name) {
  let answer;
  try {
    answer = await api("GET", `/v1/artifacts/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status !== 401) {
      $("artifact-summary").textContent = "";
    }
    failed(error);
    return;
  }
  if (current !== name) return;
  notice("");
  detail = answer;
  signedIn(answer.principal);
  renderHeader(answer);
  renderActions(answer);
  renderSteps(answer);
  renderCandidate(answer);
  renderRevisions(answer);
  renderHistory(answer);
  $("loaded-at").textContent = `as of ${timestamp(answer.now_ms)}`;
}

function stepNames(answer) {
  return (answer.steps || []).map((s) => s.name);
}

function renderHeader(answer) {
  const s = answer.state || {};
  const badges = $("artifact-badges");
  const [label, kind] = stateOf(answer);
  badges.replaceChildren(badge(label, kind), badge(`bundle ${answer.bundle}`, "plain"));
  const named = (revision) => {
    const found = answer.revisions.find((r) => r.revision === revision);
    return revisionLabel(found ? found.bundle_revision : null, revision);
  };
  const parts = [`Stable: ${s.stable ? named(s.stable) : "none"}`];
  if (s.candidate) {
    const step = stepNames(answer)[s.candidate.step] || `step ${s.candidate.step}`;
    parts.push(`candidate ${named(s.candidate.revision)} at ${step}`);
  }
  if (s.last_event) parts.push(`last: ${shortened(s.last_event)}`);
  $("artifact-summary").textContent = parts.join(" · ");
}

// Buttons by role (the server's `allowed`), enabled where the state lets them act.
function renderActions(answer) {
  const allowed = answer.allowed || {};
  const s = answer.state || {};
  const possible = {
    promote: [Boolean(s.candidate) && !s.paused,
      s.paused ? "Paused: resume first" : "No candidate to promote"],
    pause: [!s.paused, "Already paused"],
    resume: [Boolean(s.paused), "Not paused"],
    rollback: [Boolean(s.candidate), "No candidate to roll back"],
  };
  let any = false;
  for (const op of Object.keys(OPERATIONS)) {
    const button = $(`op-${op}`);
    const may = allowed[op] === true;
    button.hidden = !may;
    any = any || may;
    const [ok, why] = possible[op];
    button.disabled = !ok;
    button.title = ok ? "" : why;
  }
  $("actions").hidden = !any;
  $("read-only").hidden = any;
}

function promotionText(step) {
  const p = step.promotion || {};
  if (p.mode === "manual") return "promoted by an operator";
  if (p.mode === "always") return "promoted automatically";
  if (p.mode === "business_hours") {
    return `promoted automatically ${(p.days || []).join(", ")} ` +
      `${pad(p.start_hour)}:00–${pad(p.end_hour)}:00 ${p.timezone}`;
  }
  return p.mode || "";
}

function limitsText(t) {
  const parts = [];
  if (t.max_deny_rate !== null && t.max_deny_rate !== undefined) {
    parts.push(`deny ≤ ${percent(t.max_deny_rate)}`);
  }
  if (t.max_error_rate !== null && t.max_error_rate !== undefined) {
    parts.push(`errors ≤ ${percent(t.max_error_rate)}`);
  }
  if (t.min_decisions) parts.push(`≥ ${numbers.format(t.min_decisions)} decisions`);
  return parts.length ? parts.join(", ") : "no limits";
}

function renderSteps(answer) {
  const s = answer.state || {};
  const reached = s.candidate ? s.candidate.step : -1;
  const list = $("steps");
  list.replaceChildren();
  (answer.steps || []).forEach((step, i) => {
    const marks = [];
    if (i === reached) marks.push(badge("candidate here", "info"));
    else if (i < reached) marks.push(badge("reached", "plain"));
    const scopes = el("ul", { className: "scopes" },
      step.scopes.map((scope) => el("li", { text: scope, className: "mono" })));
    const covered = el("span", { className: "muted covered",
      title: "Hosts a candidate reaches at this step (no earlier step covers them)" });
    covered.dataset.step = String(i);
    list.append(el("li", { className: i === reached ? "step here" : "step" }, [
      el("div", { className: "step-head" }, [
        el("strong", { text: step.name }), ...marks, covered,
      ]),
      scopes,
      el("div", { className: "muted", text: promotionText(step) +
        (step.soak_seconds ? ` after ${duration(step.soak_seconds)} of soak` : "") }),
      el("div", { className: "muted", text: `Limits: ${limitsText(step.thresholds || {})}` }),
    ]));
  });
}

// One metric against its limit: value, limit and a bar filled to the share of the limit.
function meter(label, value, limitText, share, bad) {
  const fill = el("span", { className: bad ? "fill bad" : "fill" });
  fill.style.width = `${Math.min(100, Math.max(0, share * 100)).toFixed(1)}%`;
  return el("div", { className: "metric" }, [
    el("span", { className: "metric-label", text: label }),
    el("span", { className: "metric-value", text: value }),
    el("span", { className: "gauge" }, [fill]),
    el("span", { className: "metric-limit muted", text: limitText }),
  ]);
}

function renderCandidate(answer) {
  const box = $("candidate");
  box.replaceChildren();
  const r = answer.readiness;
  const s = answer.state || {};
  if (!r) {
    box.append(el("p", { className: "muted", text: s.stable
      ? "No candidate: every host in scope runs the stable revision."
      : "No revision has been published yet." }));
    return;
  }
  const found = answer.revisions.find((x) => x.revision === r.revision);
  const t = r.thresholds || {};
  const m = r.metrics;
  box.append(el("p", {}, [
    el("span", { text: "Revision " }),
    el("strong", { className: "mono", text: revisionLabel(found && found.bundle_revision, r.revision),
      title: r.revision }),
    el("span", { text: ` in step ${r.step_name} (${r.step + 1} of ${answer.steps.length})` }),
  ]));
  const min = t.min_decisions || 0;
  box.append(meter("Decisions", numbers.format(m.decisions),
    min ? `needs ${numbers.format(min)}` : "no minimum", min ? m.decisions / min : 1, false));
  const rate = (label, value, max, count) => {
    const limited = max !== null && max !== undefined;
    const over = limited && value !== null && value > max;
    return meter(label, value === null ? "–" : `${percent(value)} (${numbers.format(count)})`,
      limited ? `limit ${percent(max)}` : "no limit",
      limited && value !== null ? (max > 0 ? value / max : (value > 0 ? 1 : 0)) : 0, over);
  };
  box.append(rate("Deny rate", r.deny_rate, t.max_deny_rate, m.denies));
  box.append(rate("Error rate", r.error_rate, t.max_error_rate, m.errors));
  box.append(meter("Soak", duration(r.soaked_seconds),
    r.soak_seconds ? `of ${duration(r.soak_seconds)}` : "no soak time",
    r.soak_seconds ? r.soaked_seconds / r.soak_seconds : 1, false));
  let mode = r.manual ? "Promoted by an operator" : "Promoted by the scheduler";
  if (r.window_open === true) mode += " (window open now)";
  if (r.window_open === false) mode += " (window closed now)";
  if (r.paused) mode += "; paused";
  box.append(el("p", { className: "muted", text: mode }));
  let verdict;
  if (r.breach) verdict = el("p", { className: "verdict bad", text: `Over the limit: ${r.breach}` });
  else if (r.waiting) verdict = el("p", { className: "verdict warn", text: `Not ready: ${r.waiting}` });
  else verdict = el("p", { className: "verdict ok", text: "Ready to leave this step" });
  box.append(verdict);
}

function renderRevisions(answer) {
  const s = answer.state || {};
  const rows = answer.revisions.slice().reverse().map((r) => {
    const marks = [];
    if (r.revision === s.stable) marks.push(badge("stable", "ok"));
    if (s.candidate && r.revision === s.candidate.revision) marks.push(badge("candidate", "info"));
    return el("tr", {}, [
      cell(short(r.revision), { className: "mono", title: r.revision }),
      cell(r.bundle_revision, { className: "mono" }),
      cell(timestamp(r.published_at_ms), { title: new Date(r.published_at_ms).toISOString() }),
      cell(r.published_by),
      el("td", {}, marks),
    ]);
  });
  $("revision-rows").replaceChildren(...rows);
  if (!rows.length) {
    $("revision-rows").append(el("tr", {}, [cell("No revision published yet.", { className: "muted" })]));
  }
}

const EVENT_KINDS = { promote: "info", rollback: "bad", pause: "warn", resume: "ok", publish: "plain", tick: "plain" };

function renderHistory(answer) {
  const rows = answer.events.slice().reverse().map((e) => el("tr", {}, [
    cell(timestamp(e.at_ms), { title: new Date(e.at_ms).toISOString(), className: "nowrap" }),
    el("td", {}, [badge(e.kind, EVENT_KINDS[e.kind] || "plain")]),
    cell(e.actor, { className: "nowrap" }),
    cell(e.revision ? revisionLabel(e.bundle_revision, e.revision) : "",
      { className: "mono nowrap", title: e.revision || "" }),
    cell(shortened(e.message), { className: "message", title: e.message }),
  ]));
  $("event-rows").replaceChildren(...rows);
  if (!rows.length) {
    $("event-rows").append(el("tr", {}, [cell("Nothing has happened yet.", { className: "muted" })]));
  }
}

// ---------------------------------------------------------------------------------------
// Hosts, a page at a time from the server.

async function loadHosts(name) {
  const params = new URLSearchParams({ offset: hostQuery.offset, limit: hostQuery.limit });
  if (hostQuery.filter) params.set("filter", hostQuery.filter);
  if (hostQuery.state) params.set("state", hostQuery.state);
  let page;
  try {
    page = await api("GET", `/v1/artifacts/${encodeURIComponent(name)}/hosts?${params}`);
  } catch (error) {
    failed(error);
    return;
  }
  if (current !== name) return;
  renderHosts(page);
}

const HOST_STATE_KIND = { current: "ok", drift: "warn", unreported: "plain", error: "bad" };
const HOST_STATE_LABEL = { current: "current", drift: "drift", unreported: "no report", error: "error" };

function renderHosts(page) {
  $("hosts-total").textContent = `${numbers.format(page.total)} known`;
  const chips = $("host-states");
  chips.replaceChildren(...HOST_STATES.map(([state, label]) => {
    const n = state ? page.counts[state] : page.filtered;
    const chip = el("button", { text: `${label} ${numbers.format(n)}`, className: "chip" });
    chip.type = "button";
    chip.dataset.state = state;
    chip.setAttribute("aria-pressed", String(hostQuery.state === state));
    return chip;
  }));
  for (const covered of document.querySelectorAll("#steps .covered")) {
    const n = page.per_step[Number(covered.dataset.step)];
    const more = covered.dataset.step === "0" ? "" : " more";
    covered.textContent = n === undefined ? "" : `reaches ${numbers.format(n)}${more} hosts`;
  }
  const rows = page.hosts.map((h) => {
    const stale = h.state === "drift" || h.state === "error";
    return el("tr", { className: stale ? "attention" : "" }, [
      cell(h.spiffe_id, { className: "mono id", title: h.configured ? h.spiffe_id
        : `${h.spiffe_id} (reported, but no longer configured)` }),
      cell(h.step || "none", { className: h.step ? "" : "muted" }),
      cell(h.assigned_revision ? revisionLabel(h.assigned_bundle_revision, h.assigned_revision) : "none",
        { className: "mono", title: h.assigned_revision || "no revision is assigned" }),
      cell(h.active_revision || (h.reported_at_ms === null ? "–" : "none"), { className: "mono" }),
      cell(h.reported_at_ms === null ? "never" : ago(h.reported_at_ms, page.now_ms),
        { title: h.reported_at_ms === null ? "" : timestamp(h.reported_at_ms), className: "nowrap" }),
      el("td", {}, [badge(HOST_STATE_LABEL[h.state], HOST_STATE_KIND[h.state]),
        h.error ? el("span", { className: "error small", text: ` ${h.error}`, title: h.error }) : null]),
    ]);
  });
  $("host-rows").replaceChildren(...rows);
  if (!rows.length) {
    $("host-rows").append(el("tr", {}, [cell("No host matches.", { className: "muted" })]));
  }
  const first = page.matched ? page.offset + 1 : 0;
  const last = Math.min(page.offset + page.hosts.length, page.matched);
  $("hosts-range").textContent =
    `${numbers.format(first)}–${numbers.format(last)} of ${numbers.format(page.matched)}`;
  $("hosts-prev").disabled = page.offset === 0;
  $("hosts-next").disabled = page.offset + page.limit >= page.matched;
}

$("host-states").addEventListener("click", (event) => {
  const chip = event.target.closest("button.chip");
  if (!chip || !current) return;
  hostQuery.state = chip.dataset.state;
  hostQuery.offset = 0;
  loadHosts(current);
});

$("host-filter").addEventListener("input", () => {
  clearTimeout(hostFilterTimer);
  hostFilterTimer = setTimeout(() => {
    hostQuery.filter = $("host-filter").value.trim();
    hostQuery.offset = 0;
    if (current) loadHosts(current);
  }, 200);
});

$("host-limit").addEventListener("change", () => {
  hostQuery.limit = Number($("host-limit").value);
  hostQuery.offset = 0;
  if (current) loadHosts(current);
});

$("hosts-prev").addEventListener("click", () => {
  hostQuery.offset = Math.max(0, hostQuery.offset - hostQuery.limit);
  if (current) loadHosts(current);
});

$("hosts-next").addEventListener("click", () => {
  hostQuery.offset += hostQuery.limit;
  if (current) loadHosts(current);
});

$("refresh").addEventListener("click", () => {
  if (current) loadArtifact(current);
});

// ---------------------------------------------------------------------------------------
// Operations: confirm, send with the reason, show the answer, refresh.

function confirmText(op) {
  const s = (detail && detail.state) || {};
  const steps = detail ? stepNames(detail) : [];
  const candidate = s.candidate ? short(s.candidate.revision) : "the candidate";
  switch (op) {
    case "promote": {
      const next = s.candidate ? steps[s.candidate.step + 1] : null;
      return next
        ? `Move ${candidate} of ${current} from ${steps[s.candidate.step]} on to ${next}?`
        : `Make ${candidate} the stable revision of ${current} on every host?`;
    }
    case "pause":
      return `Hold ${current}: no promotion, by hand or by the scheduler, until it is resumed?`;
    case "resume":
      return `Let ${current} move on again?`;
    default:
      return `Withdraw ${candidate} of ${current}? Every host goes back to the stable revision.`;
  }
}

for (const op of Object.keys(OPERATIONS)) {
  $(`op-${op}`).addEventListener("click", () => {
    pendingOperation = op;
    $("confirm-title").textContent = `${OPERATIONS[op].verb} ${current}`;
    $("confirm-text").textContent = confirmText(op);
    const reason = $("reason").value.trim();
    $("confirm-reason").textContent = reason ? `Reason: ${reason}` : "No reason given.";
    $("confirm-ok").textContent = OPERATIONS[op].verb;
    $("confirm-ok").className = op === "rollback" ? "danger" : "";
    $("confirm").showModal();
  });
}

$("confirm-cancel").addEventListener("click", () => {
  pendingOperation = null;
  $("confirm").close();
});

$("confirm-ok").addEventListener("click", async () => {
  const op = pendingOperation;
  const name = current;
  pendingOperation = null;
  $("confirm").close();
  if (!op || !name) return;
  const reason = $("reason").value.trim();
  const result = $("action-result");
  result.className = "";
  result.textContent = `${OPERATIONS[op].verb}…`;
  try {
    // The candidate this view showed, at the step it showed: the server refuses if another
    // has replaced it, or it has moved on, since.
    const body = reason ? { reason } : {};
    const candidate = detail && detail.state && detail.state.candidate;
    if (candidate) {
      body.revision = candidate.revision;
      body.step = candidate.step;
    }
    const answer = await api("POST", `/v1/artifacts/${encodeURIComponent(name)}/${op}`, body);
    result.className = "ok";
    result.textContent = `Done: ${shortened(answer.event)}`;
    result.title = answer.event;
    $("reason").value = "";
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      failed(error);
      return;
    }
    result.className = "error";
    result.textContent = `Refused: ${describe(error)}`;
  }
  await loadArtifact(name);
});

// ---------------------------------------------------------------------------------------
// Routing: #/ lists the artifacts, #/artifacts/NAME shows one.

function route() {
  if (!token) {
    signOut("");
    return;
  }
  const match = location.hash.match(/^#\/artifacts\/([^/]+)$/);
  if (match) {
    let name;
    try {
      name = decodeURIComponent(match[1]);
    } catch (error) {
      location.hash = "#/";
      return;
    }
    // The server's artifact name grammar: anything else (".", "..", a slash) would make
    // the browser resolve the API URL to another endpoint.
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name)) {
      location.hash = "#/";
      return;
    }
    loadArtifact(name);
  } else {
    current = null;
    loadList();
  }
}

window.addEventListener("hashchange", route);
route();
