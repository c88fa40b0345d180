// Conveyor's operations dashboard: plain JavaScript against the operations API (the routes and JSON shapes of
// shared/operations/models.py). No framework and no build step; uPlot (vendored) draws the charts.
//
// What it guarantees: it shows only the buttons of the actions the API says this caller may take (/me.actions for
// queue actions and triggering, each run's `actions` for retry and cancel), so a read-only token sees none; the API
// checks every action again anyway. Text from the API is always put in the page as text, never as HTML.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const TOKEN_KEY = "conveyor.token";
  const PAGE_SIZE = 50;
  const STATUSES = [
    "waiting", "pending", "queued", "running", "retrying", "succeeded", "failed", "dead", "cancelled", "skipped",
    "abandoned",
  ];

  const state = {
    me: null,               // Me: {actor, scopes, actions}
    queues: null,           // QueuesView
    expanded: new Set(),    // queue names whose job rows are shown
    pages: [],              // RunsPage answers: [first page, older pages...]
    filters: {},            // the runs filters in force
    selected: null,         // the open run's id
    detail: null,           // its RunDetail
    charts: {},             // window -> uPlot
    bucketSeconds: {},      // window -> the width of its buckets
    timer: null,
    busy: false,            // a refresh is in flight
    again: false,           // another was asked for meanwhile (after an action): run it when this one ends
    needToken: false,
    jobsKey: "",            // the job names the selects were built from
  };

  // -- small helpers ----------------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // h("td", {class: "num", dataset: {testid: "x"}}, "text", otherNode): a DOM node; strings become text nodes.
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const may = (action) => !!(state.me && state.me.actions.includes(action));

  function fmtCount(value) {
    return value === null || value === undefined ? "–" : String(value);
  }

  function fmtSeconds(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    const two = (big, bigUnit, small, smallUnit) => (small ? `${big} ${bigUnit} ${small} ${smallUnit}` : `${big} ${bigUnit}`);
    if (seconds < 3600) return two(Math.floor(seconds / 60), "min", Math.round(seconds % 60), "s");
    if (seconds < 86400) return two(Math.floor(seconds / 3600), "h", Math.round((seconds % 3600) / 60), "min");
    return two(Math.floor(seconds / 86400), "d", Math.round((seconds % 86400) / 3600), "h");
  }

  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    const now = new Date();
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function fullTime(iso) {
    return iso ? new Date(iso).toISOString() : "";
  }

  function badge(status, testid) {
    return h("span", { class: `badge status-${status}`, dataset: { status, testid: testid || "status-badge" } }, status);
  }

  // Job ids are UUIDv7: the leading digits are the time (the same for runs created together), the tail is random.
  function shortId(id) {
    return id.length > 13 ? `…${id.slice(-12)}` : id;
  }

  const ERROR_STATUSES = new Set(["failed", "dead", "retrying", "abandoned"]);

  // -- the API ----------------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const code = (body && body.code) || (status ? `http_${status}` : "network_error");
      const message = (body && body.message) || (status ? `the API answered ${status}` : "the API could not be reached");
      super(message);
      this.status = status;
      this.code = code;
      this.body = body;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  // Relative URLs: the page and the API share a base (GET / serves the page), whatever prefix a proxy adds.
  async function api(method, path, { query, body, accept = [] } = {}) {
    const url = new URL(path.replace(/^\//, ""), document.baseURI);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
    }
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, { code: "network_error", message: `the API could not be reached (${err.message})` });
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = { message: text.slice(0, 300) }; }
    }
    if (response.ok || accept.includes(response.status)) return data;
    if (response.status === 401) askForToken();
    throw new ApiError(response.status, data);
  }

  // -- banners ----------------------------------------------------------------------------------------------------

  let bannerSource = null;

  function showError(err, source) {
    const banner = $("banner");
    const status = err.status ? ` (HTTP ${err.status})` : "";
    const details = err.body && err.body.required_scope ? ` — needs scope ${err.body.required_scope}` : "";
    banner.querySelector(".banner-text").textContent = `${err.code || "error"}: ${err.message}${details}${status}`;
    banner.dataset.code = err.code || "error";
    banner.hidden = false;
    bannerSource = source;
  }

  function clearError(source) {
    if (source && bannerSource !== source) return;
    $("banner").hidden = true;
    bannerSource = null;
  }

  function notify(text) {
    const notice = $("notice");
    notice.querySelector(".notice-text").textContent = text;
    notice.hidden = false;
  }

  // -- token --------------------------------------------------------------------------------------------------------

  function takeTokenFromFragment() {
    const match = location.hash.match(/(?:^#|&)token=([^&]+)/);
    if (!match) return;
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    // Out of the address bar (and history) at once: it is a credential.
    history.replaceState(null, "", location.pathname + location.search);
  }

  function askForToken() {
    state.needToken = true;
    $("token-prompt").hidden = false;
    $("main").hidden = true;
    $("token-input").focus();
  }

  // A new token is a new caller, with other scopes and so other buttons: start the page afresh.
  function useToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  }

  // -- header: who, health ------------------------------------------------------------------------------------------

  function renderMe() {
    const me = state.me;
    const node = $("me");
    node.replaceChildren();
    if (!me) return;
    node.append(
      h("span", { class: "actor", dataset: { testid: "actor" } }, me.actor),
      ...me.scopes.map((s) => h("span", { class: "scope", dataset: { testid: "scope" } }, s)),
    );
    if (!me.scopes.length) node.append(h("span", { class: "scope none" }, "no scopes"));
  }

  async function loadHealth() {
    const node = $("health");
    try {
      const health = await api("GET", "/health", { accept: [503] });
      node.dataset.healthy = String(health.healthy);
      node.querySelector(".label").textContent = health.healthy ? "Healthy" : `Unhealthy: ${health.reasons.join("; ")}`;
      node.title = health.checks.map((c) => `${c.ok ? "✓" : "✗"} ${c.name}: ${c.detail}`).join("\n");
    } catch (err) {
      node.dataset.healthy = "unknown";
      node.querySelector(".label").textContent = `Health: ${err.code}`;
      node.title = err.message;
      if (err.status !== 403) throw err;
    }
  }

  // -- queues -------------------------------------------------------------------------------------------------------

  function allJobs() {
    if (!state.queues) return [];
    return state.queues.queues.flatMap((q) => q.jobs.map((j) => j.name)).sort();
  }

  function renderQueues() {
    const view = state.queues;
    const body = $("queues-body");
    body.replaceChildren();
    if (!view) return;
    const lag = view.relay_lag_seconds;
    $("relay-lag").textContent = `Relay lag: ${lag === null || lag === undefined ? "none waiting" : fmtSeconds(lag)}`;
    if (!view.queues.length) {
      body.append(h("tr", {}, h("td", { colspan: 12, class: "empty" }, "No queues in the registry.")));
    }
    for (const q of view.queues) {
      const open = state.expanded.has(q.name);
      const sum = (field) => q.jobs.reduce((n, j) => n + (j[field] || 0), 0);
      const outboxDead = sum("outbox_dead");
      const row = h("tr", { class: "queue-row", dataset: { testid: "queue-row", queue: q.name, paused: String(q.paused) } },
        h("td", { class: "toggle-col" },
          h("button", { type: "button", class: "link toggle", "aria-expanded": String(open), title: "Jobs of this queue",
            dataset: { testid: "queue-expand" }, onclick: () => { toggle(state.expanded, q.name); renderQueues(); } },
          open ? "▾" : "▸")),
        h("td", {},
          h("span", { class: "qname", title: q.resource_name }, q.name),
          q.paused ? h("span", { class: "badge paused", dataset: { testid: "paused-badge" } }, "paused") : null,
          q.sqs_error ? h("span", { class: "badge warn", title: q.sqs_error }, "SQS unavailable") : null),
        h("td", { class: "num" }, fmtCount(q.visible)),
        h("td", { class: "num" }, fmtCount(q.in_flight)),
        h("td", { class: "num" }, fmtCount(q.delayed)),
        h("td", { class: `num ${q.dlq_depth ? "bad" : ""}`, dataset: { testid: "dlq-depth" } }, fmtCount(q.dlq_depth)),
        h("td", { class: "num" }, fmtSeconds(q.oldest_age_seconds)),
        h("td", { class: "num" }, String(sum("outbox_pending")),
          outboxDead ? h("span", { class: "bad", title: "rows the relay gave up on" }, ` +${outboxDead} dead`) : null),
        h("td", { class: "num" }, String(sum("running"))),
        h("td", { class: "num" }, String(sum("succeeded_1h"))),
        h("td", { class: `num ${sum("failed_1h") ? "bad" : ""}` }, String(sum("failed_1h"))),
        h("td", { class: "actions-col" }, queueButtons(q)),
      );
      body.append(row);
      if (!open) continue;
      for (const j of q.jobs) {
        body.append(h("tr", { class: "job-row", dataset: { testid: "job-row", job: j.name } },
          h("td", {}),
          h("td", { class: "job-name" }, j.name,
            j.schedule ? h("span", { class: "muted small" }, ` ${j.schedule}${j.timezone ? ` (${j.timezone})` : ""}`) : null),
          h("td", { colspan: 5, class: "muted small" },
            `24h: ${j.succeeded_24h} ok, ${j.failed_24h} failed`),
          h("td", { class: "num" }, String(j.outbox_pending),
            j.outbox_dead ? h("span", { class: "bad" }, ` +${j.outbox_dead} dead`) : null),
          h("td", { class: "num" }, String(j.running)),
          h("td", { class: "num" }, String(j.succeeded_1h)),
          h("td", { class: `num ${j.failed_1h ? "bad" : ""}` }, String(j.failed_1h)),
          h("td", { class: "actions-col" },
            may("redrive") ? h("button", { type: "button", class: "small", dataset: { testid: "job-redrive-button" },
              title: `Move only ${j.name}'s messages from ${q.name}'s DLQ back to the queue`,
              onclick: (e) => redrive(q.name, j.name, e.currentTarget) }, "Redrive job") : null),
        ));
      }
      if (!q.jobs.length) {
        body.append(h("tr", { class: "job-row" }, h("td", {}), h("td", { colspan: 11, class: "muted" }, "No jobs.")));
      }
    }
  }

  function queueButtons(q) {
    const buttons = [];
    if (q.paused && may("resume")) {
      buttons.push(h("button", { type: "button", class: "small", dataset: { testid: "resume-button" },
        onclick: (e) => switchQueue(q.name, "resume", e.currentTarget) }, "Resume"));
    } else if (!q.paused && may("pause")) {
      buttons.push(h("button", { type: "button", class: "small", dataset: { testid: "pause-button" },
        onclick: (e) => switchQueue(q.name, "pause", e.currentTarget) }, "Pause"));
    }
    if (may("redrive")) {
      buttons.push(h("button", { type: "button", class: "small", dataset: { testid: "redrive-button" },
        title: "Move every message in the DLQ back to the queue",
        onclick: (e) => redrive(q.name, null, e.currentTarget) }, "Redrive"));
    }
    return buttons;
  }

  function toggle(set, value) {
    if (set.has(value)) set.delete(value);
    else set.add(value);
  }

  async function act(button, work) {
    if (button) button.disabled = true;
    try {
      await work();
      clearError("action");
    } catch (err) {
      showError(err, "action");
    } finally {
      if (button) button.disabled = false;
    }
    await refresh();
  }

  function switchQueue(queue, verb, button) {
    return act(button, async () => {
      const r = await api("POST", `/queues/${encodeURIComponent(queue)}/${verb}`);
      const extra = [];
      if (r.event_source_mappings) extra.push(`${r.event_source_mappings} event source mapping(s)`);
      if (r.schedules && r.schedules.length) extra.push(`schedules: ${r.schedules.join(", ")}`);
      notify(`${queue} ${r.paused ? "paused" : "resumed"}${r.changed ? "" : " (it already was)"}` +
        `${extra.length ? ` — ${extra.join("; ")}` : ""}`);
    });
  }

  function redrive(queue, job, button) {
    return act(button, async () => {
      const r = await api("POST", `/queues/${encodeURIComponent(queue)}/redrive`, { query: { job } });
      const parts = [`moved ${r.moved}`, `failed ${r.failed}`];
      if (r.skipped) parts.push(`skipped ${r.skipped} of other jobs`);
      let text = `Redrive of ${queue}${job ? ` (${job})` : ""}: ${parts.join(", ")} [${r.mode}]`;
      if (r.task_handle) text += ` — move task started`;
      if (!r.complete) text += " — stopped at its deadline: run it again for the rest";
      if (r.errors && r.errors.length) text += ` — ${r.errors.join("; ")}`;
      notify(text);
      $("notice").dataset.moved = String(r.moved);
      $("notice").dataset.failed = String(r.failed);
    });
  }

  // -- charts -------------------------------------------------------------------------------------------------------

  async function loadThroughput(window) {
    const t = await api("GET", "/stats/throughput", { query: { window } });
    const xs = [], ok = [], bad = [];
    for (const b of t.buckets) {
      xs.push(Date.parse(b.start) / 1000);
      ok.push(b.succeeded);
      bad.push(b.failed);
    }
    const total = (a) => a.reduce((n, v) => n + v, 0);
    $(`chart-${window}-note`).textContent =
      `${total(ok)} succeeded, ${total(bad)} failed · ${fmtSeconds(t.bucket_seconds)} buckets`;
    state.bucketSeconds[window] = t.bucket_seconds;
    drawChart(window, [xs, ok, bad]);
  }

  function chartSize(container) {
    return { width: Math.max(container.clientWidth, 200), height: 130 };
  }

  // uPlot's bar path builder: each series' bar beside the bucket's start (align -1 left of it, 1 right of it).
  function bars(align) {
    return uPlot.paths.bars({ size: [0.45, 24], align });
  }

  function drawChart(window, data) {
    const container = $(`chart-${window}`);
    const existing = state.charts[window];
    if (existing) {
      existing.setData(data);
      return;
    }
    if (typeof uPlot === "undefined") {
      container.textContent = "The chart library did not load.";
      return;
    }
    const opts = {
      ...chartSize(container),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: {
        // A bucket's margin each side, so the first and last buckets' bars are drawn whole.
        x: { time: true, range: (u, min, max) => [min - (state.bucketSeconds[window] || 0), max + (state.bucketSeconds[window] || 0)] },
        y: { range: (u, min, max) => [0, Math.max(Math.ceil(max * 1.15), 1)] },
      },
      axes: [
        { stroke: "#555", grid: { stroke: "#eee" } },
        { stroke: "#555", grid: { stroke: "#eee" }, size: 40, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000] },
      ],
      series: [
        { value: (u, v) => (v === null ? "–" : fmtTime(new Date(v * 1000).toISOString())) },
        // Counts per bucket as bars, side by side: a line between sparse counts would draw peaks that never were.
        { label: "Succeeded", stroke: "#2e7d32", fill: "rgba(46,125,50,0.75)", paths: bars(-1) },
        { label: "Failed", stroke: "#c62828", fill: "rgba(198,40,40,0.8)", paths: bars(1) },
      ],
    };
    state.charts[window] = new uPlot(opts, data, container);
  }

  function resizeCharts() {
    for (const [window, chart] of Object.entries(state.charts)) chart.setSize(chartSize($(`chart-${window}`)));
  }

  // -- trigger ------------------------------------------------------------------------------------------------------

  function renderJobSelects() {
    const jobs = allJobs();
    const key = jobs.join("\n");
    if (key === state.jobsKey) return;   // unchanged: keep the user's selection (and focus) as it is
    state.jobsKey = key;
    for (const [id, first] of [["filter-job", "All jobs"], ["trigger-job", null]]) {
      const select = $(id);
      if (!select) continue;   // the trigger form is gone for a caller who may not trigger
      const current = select.value || (id === "filter-job" ? state.filters.job : "") || "";
      select.replaceChildren(...(first ? [h("option", { value: "" }, first)] : []),
        ...jobs.map((j) => h("option", { value: j }, j)));
      if (jobs.includes(current)) select.value = current;
    }
  }

  async function trigger(event) {
    event.preventDefault();
    const job = $("trigger-job").value;
    const text = $("trigger-payload").value.trim();
    let payload;
    if (text) {
      try {
        payload = JSON.parse(text);
      } catch (err) {
        showError({ code: "invalid_json", message: `the payload is not JSON: ${err.message}` }, "action");
        return;
      }
      if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
        showError({ code: "invalid_json", message: "the payload must be a JSON object" }, "action");
        return;
      }
    }
    await act(event.submitter, async () => {
      const r = await api("POST", `/jobs/${encodeURIComponent(job)}/trigger`, { body: payload });
      notify(r.message || `${job} triggered: ${r.job_id}`);
      openRun(r.job_id);
    });
  }

  // -- runs ---------------------------------------------------------------------------------------------------------

  function readFilters() {
    const since = $("filter-since").value;
    return {
      job: $("filter-job").value || undefined,
      status: $("filter-status").value || undefined,
      q: $("filter-q").value.trim() || undefined,
      since: since ? new Date(since).toISOString() : undefined,
    };
  }

  async function loadRuns() {
    const first = await api("GET", "/runs", { query: { ...state.filters, limit: PAGE_SIZE } });
    state.pages = [first, ...state.pages.slice(1)];
  }

  async function loadOlder() {
    const last = state.pages[state.pages.length - 1];
    if (!last || !last.next_cursor) return;
    try {
      const page = await api("GET", "/runs", { query: { ...state.filters, cursor: last.next_cursor, limit: PAGE_SIZE } });
      state.pages.push(page);
      renderRuns();
    } catch (err) {
      showError(err, "action");
    }
  }

  function renderRuns() {
    const body = $("runs-body");
    const seen = new Set();
    const rows = [];
    for (const page of state.pages) {
      for (const run of page.runs) {
        if (seen.has(run.id)) continue;
        seen.add(run.id);
        rows.push(run);
      }
    }
    body.replaceChildren(...rows.map(runRow));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No runs match.")));
    const last = state.pages[state.pages.length - 1];
    $("runs-older").hidden = !(last && last.next_cursor);
    $("runs-count").textContent = `${rows.length} run${rows.length === 1 ? "" : "s"} shown, newest first`;
  }

  function runRow(run) {
    // A run that failed shows its error; any other (one retried and then succeeded) its reason, not an old error.
    const error = run.last_error ? `${run.last_error_type ? `${run.last_error_type}: ` : ""}${run.last_error}` : null;
    const problem = ERROR_STATUSES.has(run.status) ? error || run.reason : run.reason || "";
    return h("tr", {
      class: `run-row${run.id === state.selected ? " selected" : ""}`,
      dataset: { testid: "run-row", id: run.id, status: run.status, job: run.job },
      tabindex: 0,
      onclick: () => openRun(run.id),
      onkeydown: (e) => { if (e.key === "Enter") openRun(run.id); },
    },
      h("td", {}, badge(run.status)),
      h("td", {}, run.job),
      h("td", { class: "mono", title: run.id }, shortId(run.id)),
      h("td", {}, run.queue),
      h("td", { class: "num" }, String(run.attempt)),
      h("td", { title: fullTime(run.created_at) }, fmtTime(run.created_at)),
      h("td", { class: "num" }, fmtSeconds(run.duration_seconds)),
      h("td", { class: ERROR_STATUSES.has(run.status) ? "problem bad" : "problem", title: problem || "" }, problem || ""),
    );
  }

  // -- run detail ---------------------------------------------------------------------------------------------------

  async function openRun(id) {
    state.selected = id;
    for (const row of document.querySelectorAll("#runs-body .run-row")) {
      row.classList.toggle("selected", row.dataset.id === id);
    }
    $("detail").hidden = false;
    try {
      await loadDetail();
      clearError("detail");
    } catch (err) {
      showError(err, "detail");
    }
  }

  function closeRun() {
    state.selected = null;
    state.detail = null;
    $("detail").hidden = true;
    for (const row of document.querySelectorAll("#runs-body .run-row.selected")) row.classList.remove("selected");
  }

  async function loadDetail() {
    if (!state.selected) return;
    const id = state.selected;
    const detail = await api("GET", `/runs/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;   // another run was opened meanwhile
    state.detail = detail;
    renderDetail();
  }

  // The user is typing in the detail panel (the cancel reason): leave it alone until they are done.
  function typingInDetail() {
    const active = document.activeElement;
    if (active && $("detail").contains(active) && active.matches("input, textarea")) return true;
    const reason = $("cancel-reason");
    return !!(reason && reason.value);
  }

  // One label and value of the detail's grid (two pairs a line); a wide one takes the whole line.
  function field(label, value, attrs, wide) {
    if (value === null || value === undefined || value === "") return null;
    const dd = h("dd", attrs || {}, value);
    if (wide) dd.classList.add("wide");
    return [h("dt", { class: wide ? "wide" : null }, label), dd];
  }

  function json(value) {
    return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
  }

  function renderDetail() {
    const d = state.detail;
    if (!d) return;
    $("detail-title").replaceChildren(d.job, " ", badge(d.status, "run-status"));
    $("detail").dataset.id = d.id;
    $("detail").dataset.status = d.status;

    const buttons = [];
    // The run's own `actions` (what this caller may do to it now), and the caller's scopes as well: belt and braces.
    if (d.actions.includes("retry") && may("retry")) {
      buttons.push(h("button", { type: "button", dataset: { testid: "retry-button" },
        onclick: (e) => runAction(d.id, "retry", e.currentTarget) }, "Retry"));
    }
    if (d.actions.includes("cancel") && may("cancel")) {
      buttons.push(
        h("input", { type: "text", id: "cancel-reason", dataset: { testid: "cancel-reason" }, placeholder: "Reason (optional)" }),
        h("button", { type: "button", class: "danger", dataset: { testid: "cancel-button" },
          onclick: (e) => runAction(d.id, "cancel", e.currentTarget) }, "Cancel"));
    }

    const progress = d.progress !== null && d.progress !== undefined
      ? `${d.progress}%${d.progress_message ? ` — ${d.progress_message}` : ""}` : d.progress_message;
    const time = (iso) => (iso ? h("span", { title: fullTime(iso) }, fmtTime(iso)) : null);
    const parent = d.parent_id
      ? h("a", { href: "#", class: "mono", onclick: (e) => { e.preventDefault(); openRun(d.parent_id); } }, d.parent_id) : null;

    const fields = [
      field("Id", d.id, { class: "mono", dataset: { testid: "run-id" } }, true),
      field("Queue", d.queue),
      field("Attempt", String(d.attempt)),
      field("Reason", d.reason, { dataset: { testid: "run-reason" } }, true),
      field("Last error", d.last_error ? `${d.last_error_type ? `${d.last_error_type}: ` : ""}${d.last_error}` : null,
        { class: ERROR_STATUSES.has(d.status) ? "bad" : "" }, true),
      field("Progress", progress, {}, true),
      field("Scheduled for", time(d.scheduled_for)),
      field("Created", time(d.created_at)),
      field("Run at", time(d.run_at)),
      field("Published", time(d.published_at)),
      field("First started", time(d.first_started_at)),
      field("Started", time(d.started_at)),
      field("Finished", time(d.finished_at)),
      field("Took", d.duration_seconds === null || d.duration_seconds === undefined ? null : fmtSeconds(d.duration_seconds)),
      field("Parent", parent, {}, true),
      field("Children", d.children_total
        ? `${d.children_total}${d.children_pending !== null && d.children_pending !== undefined ? ` (${d.children_pending} pending)` : ""}`
        : null),
      field("Message id", d.message_id, { class: "mono" }, true),
      field("Dedup key", d.dedup_key, { class: "mono" }, true),
    ].filter(Boolean).flat();

    const sections = [
      buttons.length ? h("div", { class: "detail-actions" }, buttons) : null,
      h("dl", { class: "fields" }, fields),
      h("h3", {}, "Payload"), json(d.payload),
      d.result !== null && d.result !== undefined ? [h("h3", {}, "Result"), json(d.result)] : null,
      h("h3", {}, `Failed attempts (${d.attempts.length})`),
      d.attempts.length
        ? h("table", { class: "grid small", dataset: { testid: "attempts" } },
          h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Outcome"), h("th", {}, "Started"), h("th", {}, "Error"))),
          h("tbody", {}, d.attempts.map((a) => h("tr", {},
            h("td", { class: "num" }, String(a.attempt)),
            h("td", {}, a.outcome),
            h("td", { title: fullTime(a.started_at) }, fmtTime(a.started_at)),
            h("td", { class: "problem wrap" }, a.error ? `${a.error_type ? `${a.error_type}: ` : ""}${a.error}` : "")))))
        : h("p", { class: "muted" }, "None."),
      d.children_total ? [
        h("h3", {}, `Children (${d.children.length} of ${d.children_total})`),
        h("table", { class: "grid small" },
          h("tbody", {}, d.children.map((c) => h("tr", { class: "clickable", onclick: () => openRun(c.id) },
            h("td", {}, badge(c.status)), h("td", {}, c.job), h("td", { class: "mono", title: c.id }, shortId(c.id)))))),
      ] : null,
      h("h3", {}, `Audit (${d.audit.length})`),
      d.audit.length
        ? h("table", { class: "grid small", dataset: { testid: "audit" } },
          h("tbody", {}, d.audit.map((a) => h("tr", {},
            h("td", { title: fullTime(a.at) }, fmtTime(a.at)),
            h("td", {}, a.actor),
            h("td", {}, a.action),
            h("td", { class: a.result === "ok" ? "" : "bad" }, a.result),
            h("td", { class: "problem wrap" }, a.detail ? JSON.stringify(a.detail) : "")))))
        : h("p", { class: "muted" }, "No actions taken on this run."),
    ];
    $("detail-body").replaceChildren(...sections.flat().filter(Boolean));
  }

  function runAction(id, verb, button) {
    return act(button, async () => {
      const reason = verb === "cancel" && $("cancel-reason") ? $("cancel-reason").value.trim() : "";
      const r = await api("POST", `/runs/${encodeURIComponent(id)}/${verb}`,
        { body: verb === "cancel" && reason ? { reason } : undefined });
      if ($("cancel-reason")) $("cancel-reason").value = "";
      notify(r.message || `${verb}: ${r.job_id} is now ${r.status}`);
    });
  }

  // -- refresh ------------------------------------------------------------------------------------------------------

  async function refresh() {
    if (state.needToken) return;
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    state.again = false;
    try {
      if (!state.me) {
        state.me = await api("GET", "/me");
        renderMe();
        // Without the trigger action the form is not hidden but gone: the page holds no control it cannot use.
        const card = $("trigger-card");
        if (card && may("trigger")) card.hidden = false;
        else if (card) card.remove();
      }
      const results = await Promise.allSettled([
        loadHealth(),
        api("GET", "/queues").then((v) => { state.queues = v; renderQueues(); renderJobSelects(); }),
        loadThroughput("1h"),
        loadThroughput("24h"),
        loadRuns().then(renderRuns),
        state.selected && !typingInDetail() ? loadDetail() : null,
      ]);
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      clearError("refresh");
      clearError("detail");
      $("refreshed").textContent = `updated ${fmtTime(new Date().toISOString())}`;
    } catch (err) {
      if (!state.needToken) showError(err instanceof ApiError ? err : new ApiError(0, { message: String(err) }), "refresh");
    } finally {
      state.busy = false;
    }
    if (state.again) await refresh();
  }

  function schedule() {
    clearInterval(state.timer);
    state.timer = $("auto-refresh").checked ? setInterval(refresh, REFRESH_MS) : null;
  }

  // -- wiring -------------------------------------------------------------------------------------------------------

  function init() {
    takeTokenFromFragment();
    $("filter-status").append(...STATUSES.map((s) => h("option", { value: s }, s)));
    $("filters").addEventListener("submit", (e) => {
      e.preventDefault();
      state.filters = readFilters();
      state.pages = [];
      refresh();
    });
    $("filter-clear").addEventListener("click", () => {
      $("filters").reset();
      state.filters = {};
      state.pages = [];
      refresh();
    });
    for (const id of ["filter-job", "filter-status"]) {
      $(id).addEventListener("change", () => $("filters").requestSubmit());
    }
    $("runs-older").addEventListener("click", loadOlder);
    $("detail-close").addEventListener("click", closeRun);
    $("trigger-form").addEventListener("submit", trigger);
    $("auto-refresh").addEventListener("change", schedule);
    $("banner").querySelector(".banner-close").addEventListener("click", () => clearError());
    $("notice").querySelector(".notice-close").addEventListener("click", () => { $("notice").hidden = true; });
    $("token-button").addEventListener("click", () => {
      $("token-input").value = "";
      $("token-prompt").hidden = !$("token-prompt").hidden;
    });
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      useToken($("token-input").value.trim());
    });
    $("token-forget").addEventListener("click", () => useToken(""));
    window.addEventListener("hashchange", () => {
      if (/token=/.test(location.hash)) {
        takeTokenFromFragment();
        location.reload();
      }
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(resizeCharts, 150);
    });
    refresh();
    schedule();
  }

  init();
})();
