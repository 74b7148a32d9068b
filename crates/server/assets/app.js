// The locksmith dashboard: plain JavaScript, no build step, no request to
// any other server. Data comes from the /v1 API with the token the user
// signed in with (session storage, Authorization header); live updates come
// from /v1/events, read with fetch so that the token stays in a header.
"use strict";

(() => {
  const PAGE = 200;            // rows drawn at once (the rest a page away)
  const HISTORY_PAGE = 50;
  const HISTORY_FETCH = 1000;  // events read for the history view
  const CHART_FETCH = 10000;   // events read for the charts
  const $ = (id) => document.getElementById(id);

  const st = {
    token: sessionStorage.getItem("locksmith.token") || "",
    info: null,
    view: "locks",
    paused: false,
    locks: [], loadedAt: 0, page: 0,
    waiters: [],
    unhealthy: [],
    history: [], historyPage: 0,
    lastEventId: null,
    refreshTimer: null,
    lastRefresh: 0,
    clockOffset: 0,
    stream: null,
  };

  // ---- the API -----------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.title)) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
    }
  }

  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (st.token) h.Authorization = "Bearer " + st.token;
    return h;
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: headers(), cache: "no-store" }, options || {});
    const resp = await fetch(path, opts);
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (resp.status === 401) { showSignin("The server refused the token: sign in again."); }
    if (!resp.ok) throw new ApiError(resp.status, body);
    return body;
  }

  /** The events of a /v1/history answer, newest first. */
  async function events(params) {
    const body = await api("/v1/history" + q(params));
    return body.events;
  }

  const q = (params) => {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== "" && v != null && v !== false) u.set(k, v);
    const s = u.toString();
    return s ? "?" + s : "";
  };
  const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");

  // ---- formatting ----------------------------------------------------------

  function dur(ms) {
    if (ms == null || !isFinite(ms)) return "—";
    if (ms < 0) ms = 0;
    const s = Math.floor(ms / 1000);
    if (s < 1) return Math.round(ms) + "ms";
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }
  const when = (ms) => new Date(ms).toLocaleString();
  const HEALTH = { healthy: "healthy", stale: "stale", dead: "dead holder", expired: "expired" };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }
  const td = (label, content, cls) => el("td", { "data-label": label, class: cls }, content == null ? "—" : content);
  const badge = (h) => el("span", { class: "badge " + h, text: HEALTH[h] || h });
  const isAdmin = () => st.info && st.info.role === "admin";

  // ---- sign-in and the server strip -----------------------------------------

  function showSignin(message) {
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  async function start() {
    let info;
    try {
      info = await api("/v1/info");
    } catch (e) {
      if (e.status === 401) return; // the sign-in form is shown
      $("conn").textContent = "server unreachable: " + e.message;
      setTimeout(start, 3000);
      return;
    }
    st.info = info;
    st.clockOffset = info.server_time - Date.now();
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = !info.tokens;
    $("s-version").textContent = info.version;
    $("s-store").textContent = info.store || "—";
    $("s-role").textContent = info.role + (info.token ? ` (${info.token})` : info.trusted ? " (no tokens: local trust)" : "");
    readFilters();
    showView(st.view);
    await refresh();
    connect();
    ready();
  }

  async function ready() {
    try {
      await api("/readyz");
      $("s-ready").textContent = "ready";
    } catch (e) {
      $("s-ready").textContent = "not ready: " + e.message;
    }
  }

  // ---- filters in the URL ---------------------------------------------------

  function readFilters() {
    const u = new URLSearchParams(location.search);
    $("f-prefix").value = u.get("prefix") || "";
    $("f-owner").value = u.get("owner") || "";
    $("f-state").value = u.get("state") || "";
    st.view = u.get("view") || "locks";
  }

  function writeFilters() {
    const u = new URLSearchParams();
    if ($("f-prefix").value) u.set("prefix", $("f-prefix").value);
    if ($("f-owner").value) u.set("owner", $("f-owner").value);
    if ($("f-state").value) u.set("state", $("f-state").value);
    if (st.view !== "locks") u.set("view", st.view);
    const s = u.toString();
    history.replaceState(null, "", s ? "?" + s : location.pathname);
  }

  const filters = () => ({ prefix: $("f-prefix").value, owner: $("f-owner").value });

  // ---- loading ----------------------------------------------------------------

  async function refresh() {
    const f = filters();
    const state = $("f-state").value;
    // Without a state filter the unhealthy locks are among those listed:
    // one list to read instead of two.
    const [locks, waiters, unhealthy] = await Promise.all([
      api("/v1/locks" + q({ prefix: f.prefix, owner: f.owner, state })),
      api("/v1/waiters" + q(f)),
      state ? api("/v1/locks" + q({ prefix: f.prefix, owner: f.owner, state: "unhealthy" })) : null,
    ]);
    st.locks = locks.locks;
    st.waiters = waiters.waiters || waiters;
    st.unhealthy = (unhealthy ? unhealthy.locks : st.locks).filter((l) => l.health !== "healthy");
    st.loadedAt = performance.now();
    $("n-locks").textContent = st.locks.length;
    $("n-waiting").textContent = st.waiters.length || "";
    $("n-unhealthy").textContent = st.unhealthy.length || "";
    drawLocks();
    if (st.view === "waiting") drawWaiting();
    if (st.view === "unhealthy") drawUnhealthy();
    if (st.view === "history") loadHistory();
    const open = $("details").dataset.key;
    if (open && !$("details").hidden) details(open, false);
  }

  // Events come in bursts: the first one reloads the lists at once, the
  // rest of a burst waits for the next turn (150 ms, or a second while
  // thousands of locks are held).
  function soon() {
    if (st.paused || st.refreshTimer) return;
    const every = st.locks.length > 2000 ? 1000 : 150;
    const wait = Math.max(20, st.lastRefresh + every - performance.now());
    st.refreshTimer = setTimeout(() => {
      st.refreshTimer = null;
      st.lastRefresh = performance.now();
      refresh().catch(() => {});
    }, wait);
  }

  // ---- live: the event stream ----------------------------------------------------

  function conn(state, text) {
    const c = $("conn");
    c.className = "conn " + state;
    c.textContent = text;
  }

  async function connect() {
    if (st.stream) st.stream.abort();
    const ctrl = new AbortController();
    st.stream = ctrl;
    const extra = st.lastEventId ? { "Last-Event-ID": st.lastEventId } : {};
    try {
      const resp = await fetch("/v1/events", { headers: headers(Object.assign({ Accept: "text/event-stream" }, extra)), signal: ctrl.signal, cache: "no-store" });
      if (resp.status === 401) { showSignin("The server refused the token: sign in again."); return; }
      if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
      conn(st.paused ? "paused" : "on", st.paused ? "paused" : "live");
      if (st.lastEventId) soon(); // events missed while away
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      let ev = { id: null, event: "message", data: "" };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (line === "") {
            if (ev.data) onEvent(ev);
            ev = { id: null, event: "message", data: "" };
          } else if (!line.startsWith(":")) {
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "id") ev.id = val;
            else if (field === "event") ev.event = val;
            else if (field === "data") ev.data += (ev.data ? "\n" : "") + val;
          }
        }
      }
      throw new Error("the stream ended");
    } catch (e) {
      if (ctrl.signal.aborted) return;
      conn("off", "reconnecting…");
      setTimeout(connect, 1000);
    }
  }

  function onEvent(ev) {
    if (ev.id) st.lastEventId = ev.id;
    if (ev.event === "reset") st.lastEventId = null;
    soon();
  }

  // ---- the locks table ----------------------------------------------------------------

  function elapsed() { return performance.now() - st.loadedAt; }

  function lockRow(l, cols) {
    const hostpid = (l.hostname || "?") + (l.pid ? ":" + l.pid : "");
    const keyButton = el("button", { type: "button", class: "link", text: l.key, title: "Details of " + l.key, onclick: () => details(l.key, true) });
    const cells = {
      key: td("Key", keyButton),
      mode: td("Mode", l.mode + (l.mode === "semaphore" && l.limit ? "/" + l.limit : "") + (l.scope === "tree" ? " tree" : "")),
      owner: td("Owner", l.owner),
      task: td("Task", l.task),
      host: td("Host:pid", hostpid),
      fence: td("Fence", String(l.fence), "num"),
      held: td("Held for", el("span", { class: "tick", "data-base": l.held_for, "data-dir": "up" }, dur(l.held_for)), "num"),
      lease: td("Lease left", l.expires_in == null ? "no lease" : el("span", { class: "tick", "data-base": l.expires_in, "data-dir": "down" }, dur(l.expires_in)), "num"),
      beat: td("Last heartbeat", el("span", { class: "tick", "data-base": l.since_seen, "data-dir": "up", "data-suffix": " ago" }, dur(l.since_seen) + " ago"), "num"),
      state: td("State", badge(l.health)),
      actions: td("", isAdmin() ? el("button", { type: "button", class: "force", "data-key": l.key, text: "Force release", onclick: () => force(l) }) : null),
    };
    return el("tr", { "data-key": l.key, "data-fence": l.fence }, ...cols.map((c) => cells[c]));
  }

  function drawLocks() {
    const body = $("locks-body");
    const pages = Math.max(1, Math.ceil(st.locks.length / PAGE));
    st.page = Math.min(st.page, pages - 1);
    const rows = st.locks.slice(st.page * PAGE, (st.page + 1) * PAGE);
    const cols = ["key", "mode", "owner", "task", "host", "fence", "held", "lease", "beat", "state", "actions"];
    const frag = document.createDocumentFragment();
    for (const l of rows) frag.append(lockRow(l, cols));
    body.replaceChildren(frag);
    $("locks-summary").textContent = st.locks.length
      ? `${st.locks.length} held lock${st.locks.length === 1 ? "" : "s"}` + (pages > 1 ? `, showing ${st.page * PAGE + 1}–${st.page * PAGE + rows.length}` : "")
      : "No lock is held" + (filters().prefix || filters().owner || $("f-state").value ? " that matches the filters." : ".");
    pager($("locks-pager"), st.page, pages, (p) => { st.page = p; drawLocks(); });
  }

  function pager(box, page, pages, go) {
    box.replaceChildren();
    if (pages <= 1) return;
    box.append(
      el("button", { type: "button", text: "Previous", disabled: page === 0, onclick: () => go(page - 1) }),
      el("span", { text: `page ${page + 1} of ${pages}` }),
      el("button", { type: "button", text: "Next", disabled: page >= pages - 1, onclick: () => go(page + 1) }),
    );
  }

  function tick() {
    const e = elapsed();
    for (const s of document.querySelectorAll(".tick")) {
      const base = Number(s.dataset.base);
      const v = s.dataset.dir === "down" ? base - e : base + e;
      s.textContent = (s.dataset.dir === "down" && v <= 0 ? "expired" : dur(v)) + (s.dataset.suffix || "");
    }
    if (st.info) $("s-time").textContent = new Date(Date.now() + st.clockOffset).toLocaleTimeString();
  }

  // ---- details of one key: metadata, queue, timeline ---------------------------------------

  async function details(key, focus) {
    const box = $("details");
    box.dataset.key = key;
    box.hidden = false;
    let status, timeline;
    try {
      [status, timeline] = await Promise.all([
        api("/v1/locks/" + keyPath(key)),
        events({ key, limit: 50 }),
      ]);
    } catch (e) {
      box.replaceChildren(el("p", { class: "error", text: e.message }));
      return;
    }
    const holders = status.holders.map((h) => el("li", {},
      el("strong", { text: h.owner }), ` fence ${h.fence}, ${h.mode}, task ${h.task || "—"}, ${h.hostname || "?"}:${h.pid || "?"} `,
      h.metadata ? el("pre", { text: JSON.stringify(h.metadata, null, 2) }) : el("span", { class: "summary", text: "(no metadata)" })));
    const queue = (status.waiters || []).map((w) => el("li", { text: `${w.position}. ${w.owner} (priority ${w.priority}, waiting ${dur(w.waited)})` }));
    const steps = timeline.map((ev) => el("li", { text: `${when(ev.at)} — ${ev.kind}${ev.reason ? " (" + ev.reason + ")" : ""} by ${ev.owner}${ev.fence ? ", fence " + ev.fence : ""}` }));
    box.replaceChildren(
      el("div", { class: "row" }, el("h3", { text: key }), el("button", { type: "button", text: "Close", onclick: () => { box.hidden = true; box.dataset.key = ""; } })),
      el("h4", { text: "Holders" }), holders.length ? el("ul", {}, ...holders) : el("p", { text: "Not held." }),
      el("h4", { text: "Queue" }), queue.length ? el("ol", { class: "plain" }, ...queue) : el("p", { text: "Nobody waits." }),
      el("h4", { text: "Timeline (newest first)" }), el("ul", { class: "timeline" }, ...steps),
    );
    if (focus) box.focus();
  }

  // ---- why is it stuck ------------------------------------------------------------------------

  async function drawWaiting() {
    const byKey = new Map();
    for (const w of st.waiters) {
      if (!byKey.has(w.key)) byKey.set(w.key, []);
      byKey.get(w.key).push(w);
    }
    const box = $("waiting-body");
    if (!byKey.size) {
      box.replaceChildren(el("p", { text: "Nobody is waiting." }));
    } else {
      const parts = [];
      for (const [key, ws] of byKey) {
        const holders = st.locks.filter((l) => l.key === key || key.startsWith(l.key + "/") || l.key.startsWith(key + "/"));
        const blockers = holders.length ? holders.map((h) => `${h.owner} (fence ${h.fence}, ${HEALTH[h.health] || h.health})`).join(", ") : "earlier waiters, or a holder outside the filters";
        parts.push(el("div", { class: "panel queue" },
          el("h4", { text: key }),
          el("p", { text: "Blocked by: " + blockers }),
          el("table", { class: "grid" },
            el("thead", {}, el("tr", {}, ...["Place", "Owner", "Priority", "Waiting", "Task", "Waits for"].map((h) => el("th", { text: h })))),
            el("tbody", {}, ...ws.map((w) => el("tr", {},
              td("Place", String(w.position)), td("Owner", w.owner), td("Priority", String(w.priority)),
              td("Waiting", el("span", { class: "tick", "data-base": w.waited, "data-dir": "up" }, dur(w.waited))),
              td("Task", w.task), td("Waits for", holders.map((h) => h.owner).join(", ") || "the waiters ahead")))))));
      }
      box.replaceChildren(...parts);
    }
    try {
      const refused = await events({ kind: "deadlock_refused", limit: 20 });
      $("deadlocks").replaceChildren(...(refused.length ? refused.map((ev) => el("li", {
        text: `${when(ev.at)} — ${ev.owner} on ${ev.key}: ${((ev.detail && ev.detail.cycle) || []).join(" → ")}`,
      })) : [el("li", { text: "None in the kept history." })]));
    } catch (_) { /* shown on the next refresh */ }
  }

  // ---- stale and dead --------------------------------------------------------------------------

  async function drawUnhealthy() {
    const cols = ["key", "owner", "host", "fence", "beat", "state", "actions"];
    $("unhealthy-body").replaceChildren(...(st.unhealthy.length ? st.unhealthy.map((l) => lockRow(l, cols))
      : [el("tr", {}, el("td", { colspan: 7, text: "Every held lock is healthy." }))]));
    try {
      const [reaped, expired] = await Promise.all([
        events({ kind: "reaped", limit: 25 }),
        events({ kind: "expired", limit: 25 }),
      ]);
      const rows = reaped.concat(expired).sort((a, b) => b.id - a.id).slice(0, 25);
      $("swept-body").replaceChildren(...(rows.length ? rows.map((ev) => el("tr", {},
        td("When", when(ev.at)), td("Event", ev.kind), td("Key", ev.key), td("Owner", ev.owner), td("Reason", ev.reason)))
        : [el("tr", {}, el("td", { colspan: 5, text: "Nothing swept in the kept history." }))]));
    } catch (_) { /* shown on the next refresh */ }
  }

  // ---- history ----------------------------------------------------------------------------------

  const KINDS = ["acquired", "renewed", "released", "expired", "reaped", "forced", "stolen", "waiting", "wait_timed_out", "wait_cancelled", "deadlock_refused"];
  const REASONS = ["completed", "failed", "exited", "lease_expired", "max_hold", "dead_process", "stale", "task_completed", "forced", "stolen"];

  async function loadHistory() {
    const key = $("h-key").value;
    try {
      st.history = await events({ key, prefix: key && $("h-prefix").checked ? "true" : "", owner: $("h-owner").value, kind: $("h-kind").value, limit: HISTORY_FETCH });
    } catch (e) {
      $("history-summary").textContent = e.message;
      return;
    }
    drawHistory();
  }

  function historyRows() {
    const reason = $("h-reason").value;
    const from = $("h-from").value ? new Date($("h-from").value).getTime() : null;
    const to = $("h-to").value ? new Date($("h-to").value).getTime() : null;
    return st.history.filter((e) => (!reason || e.reason === reason) && (from == null || e.at >= from) && (to == null || e.at <= to));
  }

  function drawHistory() {
    const rows = historyRows();
    const pages = Math.max(1, Math.ceil(rows.length / HISTORY_PAGE));
    st.historyPage = Math.min(st.historyPage, pages - 1);
    const shown = rows.slice(st.historyPage * HISTORY_PAGE, (st.historyPage + 1) * HISTORY_PAGE);
    $("history-body").replaceChildren(...shown.map((e) => el("tr", {},
      td("When", when(e.at)), td("Event", e.kind),
      td("Key", el("button", { type: "button", class: "link", text: e.key, onclick: () => { $("h-key").value = e.key; $("h-prefix").checked = false; loadHistory(); } })),
      td("Owner", e.owner), td("Task", e.task), td("Fence", e.fence == null ? null : String(e.fence), "num"),
      td("Reason", e.reason), td("Detail", e.detail ? JSON.stringify(e.detail) : null))));
    $("history-summary").textContent = `${rows.length} event${rows.length === 1 ? "" : "s"} (newest first; the newest ${HISTORY_FETCH} read)`;
    pager($("history-pager"), st.historyPage, pages, (p) => { st.historyPage = p; drawHistory(); });
  }

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  function csv(rows) {
    const cols = ["id", "at", "kind", "key", "owner", "task", "fence", "grant", "reason", "detail"];
    const cell = (v) => {
      const s = v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
    };
    return [cols.join(",")].concat(rows.map((r) => cols.map((c) => cell(c === "at" ? new Date(r.at).toISOString() : r[c])).join(","))).join("\n") + "\n";
  }

  // ---- charts -------------------------------------------------------------------------------------

  function bars(values, labels, unit) {
    const w = 320, h = 140, pad = 18;
    const max = Math.max(1, ...values);
    const bw = (w - pad) / Math.max(1, values.length);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h + 16}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", labels.map((l, i) => `${l}: ${values[i]}${unit || ""}`).join(", "));
    values.forEach((v, i) => {
      const r = document.createElementNS(ns, "rect");
      const bh = (v / max) * (h - 10);
      r.setAttribute("x", pad + i * bw + 1);
      r.setAttribute("y", h - bh);
      r.setAttribute("width", Math.max(1, bw - 2));
      r.setAttribute("height", bh);
      r.setAttribute("class", "bar");
      const t = document.createElementNS(ns, "title");
      t.textContent = `${labels[i]}: ${v}${unit || ""}`;
      r.append(t);
      svg.append(r);
    });
    const label = (x, y, text, anchor) => {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("class", "axis");
      if (anchor) t.setAttribute("text-anchor", anchor);
      t.textContent = text;
      svg.append(t);
    };
    label(0, 10, String(Math.round(max * 100) / 100));
    label(pad, h + 13, labels[0] || "");
    label(w, h + 13, labels[labels.length - 1] || "", "end");
    return svg;
  }

  function pct(xs, p) {
    if (!xs.length) return null;
    const s = xs.slice().sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.round((p / 100) * (s.length - 1)))];
  }

  async function drawCharts() {
    const windowS = Number($("c-window").value);
    let all;
    try { all = await events({ limit: CHART_FETCH }); } catch (e) { $("c-rate").textContent = e.message; return; }
    const now = Date.now() + st.clockOffset;
    const since = now - windowS * 1000;
    const inWindow = all.filter((e) => e.at >= since).reverse(); // oldest first
    // Acquisitions per second, in 60 buckets.
    const buckets = new Array(60).fill(0);
    const width = (windowS * 1000) / 60;
    for (const e of inWindow) if (e.kind === "acquired") buckets[Math.min(59, Math.floor((e.at - since) / width))] += 1;
    const rate = buckets.map((n) => Math.round((n / (width / 1000)) * 100) / 100);
    const acquired = inWindow.filter((e) => e.kind === "acquired").length;
    $("c-rate").replaceChildren(bars(rate, buckets.map((_, i) => new Date(since + i * width).toLocaleTimeString()), "/s"),
      el("p", { class: "summary", text: `${acquired} acquisitions, ${(acquired / windowS).toFixed(2)}/s on average` }));
    // Waits: from a waiting event to the acquisition of the same owner and key.
    const waitingSince = new Map();
    const waits = [];
    const acquiredAt = new Map();
    const holds = [];
    const contended = new Map();
    for (const e of inWindow) {
      const k = e.key + "\u0000" + e.owner;
      if (e.kind === "waiting") {
        waitingSince.set(k, e.at);
        contended.set(e.key, (contended.get(e.key) || 0) + 1);
      } else if (e.kind === "acquired") {
        if (waitingSince.has(k)) { waits.push(e.at - waitingSince.get(k)); waitingSince.delete(k); }
        if (e.fence != null) acquiredAt.set(e.key + "\u0000" + e.fence, e.at);
      } else if (["wait_timed_out", "wait_cancelled", "deadlock_refused"].includes(e.kind)) {
        waitingSince.delete(k);
      } else if (["released", "expired", "reaped", "forced", "stolen"].includes(e.kind) && e.fence != null) {
        const at = acquiredAt.get(e.key + "\u0000" + e.fence);
        if (at != null) holds.push(e.at - at);
      }
    }
    const p50 = pct(waits, 50), p99 = pct(waits, 99);
    $("c-wait").replaceChildren(
      el("dl", { class: "kv" },
        el("dt", { text: "waited" }), el("dd", { text: `${waits.length} of ${acquired} grants` }),
        el("dt", { text: "p50" }), el("dd", { text: dur(p50) }),
        el("dt", { text: "p99" }), el("dd", { text: dur(p99) }),
        el("dt", { text: "max" }), el("dd", { text: dur(waits.length ? Math.max(...waits) : null) })),
      waits.length ? bars(histogram(waits).counts, histogram(waits).labels) : el("p", { class: "summary", text: "No grant waited in this window." }));
    const hh = histogram(holds);
    $("c-hold").replaceChildren(holds.length ? bars(hh.counts, hh.labels) : el("p", { class: "summary", text: "No tenure ended in this window." }),
      el("p", { class: "summary", text: holds.length ? `${holds.length} tenures: p50 ${dur(pct(holds, 50))}, p99 ${dur(pct(holds, 99))}` : "" }));
    const top = [...contended.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10);
    $("c-keys").replaceChildren(top.length ? el("ol", {}, ...top.map(([k, n]) => el("li", { text: `${k} — ${n} wait${n === 1 ? "" : "s"}` })))
      : el("p", { class: "summary", text: "Nobody waited in this window." }));
  }

  function histogram(ms) {
    const edges = [10, 100, 1000, 10000, 60000, 600000, Infinity];
    const labels = ["<10ms", "<100ms", "<1s", "<10s", "<1m", "<10m", "≥10m"];
    const counts = edges.map(() => 0);
    for (const v of ms) counts[edges.findIndex((e) => v < e)] += 1;
    return { counts, labels };
  }

  // ---- force-release ----------------------------------------------------------------------------

  function force(lock) {
    const d = $("force");
    $("force-key").textContent = lock.key;
    $("force-error").textContent = "";
    $("force-reason").value = "";
    const kv = [["owner", lock.owner], ["task", lock.task || "—"], ["host:pid", `${lock.hostname || "?"}:${lock.pid || "?"}`],
      ["fence", String(lock.fence)], ["held for", dur(lock.held_for + elapsed())], ["state", HEALTH[lock.health] || lock.health]];
    $("force-holder").replaceChildren(...kv.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    d.dataset.key = lock.key;
    d.dataset.fence = lock.fence;
    d.showModal();
    $("force-reason").focus();
  }

  async function forceGo() {
    const d = $("force");
    const reason = $("force-reason").value.trim();
    if (!reason) { $("force-error").textContent = "Give a reason: it is recorded in the history."; $("force-reason").focus(); return; }
    try {
      await api("/v1/locks/" + keyPath(d.dataset.key) + "/force-release", {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ reason, fence: Number(d.dataset.fence) }),
      });
      d.close();
      soon();
    } catch (e) {
      $("force-error").textContent = e.message;
    }
  }

  // ---- views and wiring -----------------------------------------------------------------------------

  function showView(view) {
    st.view = view;
    for (const b of document.querySelectorAll(".tabs button")) b.setAttribute("aria-selected", String(b.dataset.view === view));
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "v-" + view;
    writeFilters();
    if (view === "waiting") drawWaiting();
    if (view === "unhealthy") drawUnhealthy();
    if (view === "history") loadHistory();
    if (view === "charts") drawCharts();
  }

  function wire() {
    for (const k of KINDS) $("h-kind").append(el("option", { value: k, text: k }));
    for (const r of REASONS) $("h-reason").append(el("option", { value: r, text: r }));
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showView(b.dataset.view));
    $("signin-go").addEventListener("click", () => {
      st.token = $("token").value.trim();
      sessionStorage.setItem("locksmith.token", st.token);
      $("token").value = "";
      start();
    });
    $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") $("signin-go").click(); });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem("locksmith.token");
      st.token = "";
      if (st.stream) st.stream.abort();
      showSignin("Signed out.");
    });
    $("pause").addEventListener("click", () => {
      st.paused = !st.paused;
      $("pause").setAttribute("aria-pressed", String(st.paused));
      $("pause").textContent = st.paused ? "Resume" : "Pause";
      conn(st.paused ? "paused" : "on", st.paused ? "paused" : "live");
      if (!st.paused) soon();
    });
    let typing = null;
    for (const id of ["f-prefix", "f-owner", "f-state"]) {
      $(id).addEventListener("input", () => {
        clearTimeout(typing);
        typing = setTimeout(() => { st.page = 0; writeFilters(); refresh().catch(() => {}); }, 250);
      });
    }
    for (const id of ["h-key", "h-owner", "h-kind"]) $(id).addEventListener("change", () => { st.historyPage = 0; loadHistory(); });
    $("h-prefix").addEventListener("change", loadHistory);
    for (const id of ["h-reason", "h-from", "h-to"]) $(id).addEventListener("change", () => { st.historyPage = 0; drawHistory(); });
    $("h-csv").addEventListener("click", () => download("locksmith-history.csv", "text/csv", csv(historyRows())));
    $("h-json").addEventListener("click", () => download("locksmith-history.json", "application/json", JSON.stringify(historyRows(), null, 2)));
    $("c-window").addEventListener("change", drawCharts);
    $("force-cancel").addEventListener("click", () => $("force").close());
    $("force-go").addEventListener("click", forceGo);
    $("force-reason").addEventListener("keydown", (e) => { if (e.key === "Enter") forceGo(); });
    setInterval(tick, 1000);
    setInterval(ready, 10000);
    setInterval(() => { if (st.view === "charts" && !st.paused) drawCharts(); }, 10000);
  }

  wire();
  start();
})();
