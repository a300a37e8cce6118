// Gantry's web UI: login, the runs list and a run's page (stage graph and logs), kept live with
// Server-Sent Events. Plain JavaScript, no build step; the server embeds this file.
"use strict";

(() => {
  const main = document.getElementById("main");
  const nav = document.getElementById("nav");
  let csrf = null;
  let cleanup = []; // undone when the page changes: event sources, timers, observers

  // ---- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) node.append(c);
    return node;
  }

  // replaceChildren that leaves out absent children (null, undefined, false).
  function put(node, ...children) {
    node.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
  }

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    const response = await fetch(path, {
      method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (response.status === 401 && !path.startsWith("/auth/")) {
      csrf = null;
      go("/login?next=" + encodeURIComponent(location.pathname + location.hash));
      throw new ApiError(401, "please log in");
    }
    if (!response.ok) throw new ApiError(response.status, (data && data.error) || response.statusText);
    return data;
  }

  function shortSha(sha) { return sha ? sha.slice(0, 8) : "—"; }

  function since(iso) {
    if (!iso) return "—";
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  function duration(start, end) {
    if (!start) return "";
    const ms = (end ? new Date(end) : new Date()).getTime() - new Date(start).getTime();
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }

  const FINISHED = new Set(["success", "failure", "cancelled", "error", "skipped"]);
  const ICONS = { success: "✓", failure: "✗", error: "!", cancelled: "■", skipped: "⤼", running: "●", queued: "○", pending: "○", complete: "✓", failed: "✗", rolled_back: "↶" };

  function badge(status) {
    return el("span", { class: `badge s-${status}` }, el("span", { class: "icon", "aria-hidden": "true" }, ICONS[status] || "?"), status);
  }

  function trigger(run) {
    if (run.event === "manual") return run.rerun_of ? `re-run of #${run.rerun_of}` : "manual";
    return run.event;
  }

  function refName(run) {
    if (run.tag) return el("span", { class: "ref", title: "tag" }, "🏷 " + run.tag);
    return el("span", { class: "ref", title: "branch" }, run.branch || "—");
  }

  function flash(message, kind) {
    const box = document.getElementById("flash");
    put(box, el("div", { class: `flash ${kind || "error"}`, role: kind === "ok" ? "status" : "alert" }, message));
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => put(box), 6000);
  }

  // Live durations: every element with data-start (and data-end once finished) ticks.
  function tick() {
    for (const node of document.querySelectorAll("[data-start]")) {
      node.textContent = duration(node.dataset.start, node.dataset.end || null);
    }
  }

  // ---- routing -------------------------------------------------------------------------------

  function go(path, replace) {
    if (replace) history.replaceState(null, "", path);
    else history.pushState(null, "", path);
    route();
  }

  document.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-nav]");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", () => route());

  async function route() {
    for (const undo of cleanup) undo();
    cleanup = [];
    const path = location.pathname;
    if (path !== "/login" && !csrf) {
      try {
        csrf = (await api("GET", "/auth/session")).csrf_token;
      } catch (e) {
        return go("/login?next=" + encodeURIComponent(path + location.hash), true);
      }
    }
    renderNav(path);
    const run = path.match(/^\/runs\/(\d+)$/);
    if (path === "/login") return loginPage();
    if (path === "/" || path === "/runs") return runsPage();
    if (run) return runPage(Number(run[1]));
    if (path === "/deployments") return deploymentsPage();
    put(main, el("h1", {}, "Not found"), el("p", {}, el("a", { href: "/", "data-nav": "" }, "Back to the runs")));
  }

  function renderNav(path) {
    if (path === "/login") { put(nav); return; }
    const link = (href, text, active) => el("a", { href, "data-nav": "", "aria-current": active ? "page" : null }, text);
    put(nav,
      link("/", "Runs", path === "/" || path.startsWith("/runs")),
      link("/deployments", "Deployments", path === "/deployments"),
      el("button", { type: "button", class: "btn link", onclick: logout }, "Log out"));
  }

  async function logout() {
    try { await api("POST", "/auth/logout"); } catch (e) { /* the cookie is cleared anyway */ }
    csrf = null;
    go("/login");
  }

  // ---- login ---------------------------------------------------------------------------------

  function loginPage() {
    document.title = "Log in · Gantry";
    const input = el("input", { id: "token", type: "password", name: "token", autocomplete: "current-password", required: true, autofocus: true });
    const error = el("p", { class: "form-error", role: "alert" });
    const form = el("form", { class: "login card", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const answer = await api("POST", "/auth/login", { token: input.value });
        csrf = answer.csrf_token;
        const next = new URLSearchParams(location.search).get("next");
        go(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
      } catch (err) {
        error.textContent = err.status === 401 ? "That token is not valid." : `Login failed: ${err.message}`;
        input.select();
      }
    } },
      el("h1", {}, "Log in to Gantry"),
      el("label", { for: "token" }, "Admin token"),
      input,
      el("p", { class: "hint" }, "From GANTRY_ADMIN_TOKEN, or the admin-token file in the server's data directory."),
      error,
      el("button", { type: "submit", class: "btn primary" }, "Log in"));
    put(main, form);
    input.focus();
  }

  // ---- runs list -----------------------------------------------------------------------------

  async function runsPage() {
    document.title = "Runs · Gantry";
    const params = new URLSearchParams(location.search);
    const state = { runs: [], project: params.get("project") || "", status: params.get("status") || "" };
    const projectFilter = el("select", { id: "filter-project", "aria-label": "Project" }, el("option", { value: "" }, "All projects"));
    const statusFilter = el("select", { id: "filter-status", "aria-label": "Status" }, el("option", { value: "" }, "Any status"),
      ...["queued", "running", "success", "failure", "cancelled", "error"].map((s) => el("option", { value: s }, s)));
    const newProject = el("select", { id: "new-project", "aria-label": "Project to run", required: true });
    const newBranch = el("input", { id: "new-branch", type: "text", value: "main", "aria-label": "Branch", required: true, placeholder: "branch" });
    const tbody = el("tbody");
    const empty = el("p", { class: "empty", hidden: true }, "No runs yet. Push to a configured repository, or start one here.");

    const onFilter = () => {
      state.project = projectFilter.value;
      state.status = statusFilter.value;
      const q = new URLSearchParams();
      if (state.project) q.set("project", state.project);
      if (state.status) q.set("status", state.status);
      history.replaceState(null, "", "/" + (q.toString() ? "?" + q : ""));
      load();
    };
    projectFilter.addEventListener("change", onFilter);
    statusFilter.addEventListener("change", onFilter);

    put(main,
      el("div", { class: "page-head" }, el("h1", {}, "Runs"),
        el("form", { class: "new-run", onsubmit: async (e) => {
          e.preventDefault();
          try {
            const run = await api("POST", "/api/v1/runs", { project: newProject.value, branch: newBranch.value.trim() });
            go(`/runs/${run.id}`);
          } catch (err) { flash(`Could not start the run: ${err.message}`); }
        } }, newProject, newBranch, el("button", { type: "submit", class: "btn primary" }, "Run pipeline"))),
      el("div", { class: "filters" }, projectFilter, statusFilter),
      el("table", { class: "runs" },
        el("thead", {}, el("tr", {}, ...["Status", "Run", "Branch / tag", "Commit", "Trigger", "Started", "Duration"].map((h) => el("th", { scope: "col" }, h)))),
        tbody),
      empty);

    const matches = (run) => (!state.project || run.project === state.project) && (!state.status || run.status === state.status);

    function row(run) {
      const link = el("a", { href: `/runs/${run.id}`, "data-nav": "" }, `${run.project} #${run.number}`);
      return el("tr", { "data-run": run.id, class: `s-${run.status}` },
        el("td", { "data-label": "Status" }, badge(run.status)),
        el("td", { "data-label": "Run" }, link),
        el("td", { "data-label": "Branch" }, refName(run)),
        el("td", { "data-label": "Commit", class: "commit" }, el("code", {}, shortSha(run.commit_sha)), " ",
          el("span", { class: "message", title: run.commit_message || "" }, run.commit_message || "")),
        el("td", { "data-label": "Trigger" }, trigger(run)),
        el("td", { "data-label": "Started", title: run.started_at || run.created_at }, since(run.started_at || run.created_at)),
        el("td", { "data-label": "Duration", "data-start": run.started_at || null, "data-end": run.finished_at || null }, duration(run.started_at, run.finished_at)));
    }

    function draw() {
      put(tbody, ...state.runs.filter(matches).map(row));
      empty.hidden = tbody.children.length > 0;
    }

    async function load() {
      const q = new URLSearchParams({ limit: "100" });
      if (state.project) q.set("project", state.project);
      if (state.status) q.set("status", state.status);
      try {
        state.runs = (await api("GET", "/api/v1/runs?" + q)).runs;
        draw();
      } catch (err) { if (err.status !== 401) flash(`Could not load the runs: ${err.message}`); }
    }

    try {
      const projects = (await api("GET", "/api/v1/projects")).projects;
      for (const p of projects) {
        projectFilter.append(el("option", { value: p.name }, p.name));
        newProject.append(el("option", { value: p.name }, p.name));
      }
    } catch (err) { return; }
    projectFilter.value = state.project;
    statusFilter.value = state.status;
    await load();

    const events = new EventSource("/api/v1/events");
    events.addEventListener("runs", () => load());
    events.addEventListener("run", (e) => {
      const run = JSON.parse(e.data).run;
      const at = state.runs.findIndex((r) => r.id === run.id);
      if (at >= 0) state.runs[at] = run;
      else if (matches(run)) { state.runs.push(run); state.runs.sort((a, b) => b.id - a.id); }
      draw();
    });
    const timer = setInterval(tick, 1000);
    cleanup.push(() => events.close(), () => clearInterval(timer));
  }

  // ---- a run ---------------------------------------------------------------------------------

  // Columns by depth in the stage graph: parallel branches share a column.
  function layoutStages(stages) {
    const depth = new Map();
    const byName = new Map(stages.map((s) => [s.name, s]));
    const visit = (s, seen) => {
      if (depth.has(s.name)) return depth.get(s.name);
      if (seen.has(s.name)) return 0;
      seen.add(s.name);
      const d = (s.needs || []).reduce((m, n) => (byName.has(n) ? Math.max(m, visit(byName.get(n), seen) + 1) : m), 0);
      depth.set(s.name, d);
      return d;
    };
    stages.forEach((s) => visit(s, new Set()));
    const columns = [];
    stages.forEach((s) => { (columns[depth.get(s.name)] ||= []).push(s); });
    return columns.filter(Boolean);
  }

  function parsePermalink(hash) {
    const m = /^#stage-(.+)-L(\d+)$/.exec(hash) || /^#stage-(.+)$/.exec(hash);
    return m ? { stage: m[1], line: m[2] ? Number(m[2]) : null } : null;
  }

  function runPage(id) {
    document.title = `Run ${id} · Gantry`;
    const state = { run: null, totals: {}, selected: null, view: null, ended: false };
    const header = el("div", { class: "run-head" });
    const graph = el("div", { class: "graph" });
    const stageInfo = el("div", { class: "stage-info" });
    const logBox = el("div", { class: "log-box" });
    // What the run produced: stage outputs (an image and its digest) and rollouts.
    const outputs = el("section", { class: "outputs", hidden: true, "aria-label": "Images and deployments" });
    put(main, header, outputs, el("section", { class: "graph-wrap", "aria-label": "Stage graph" }, graph), stageInfo, logBox);

    function drawHeader() {
      const run = state.run;
      const finished = FINISHED.has(run.status);
      document.title = `${run.project} #${run.number} · ${run.status} · Gantry`;
      put(header,
        el("div", { class: "title-row" },
          el("h1", {}, `${run.project} `, el("span", { class: "num" }, `#${run.number}`)),
          badge(run.status),
          el("div", { class: "actions" },
            finished ? null : el("button", { type: "button", class: "btn danger", "data-action": "cancel", onclick: cancel }, "Cancel"),
            el("button", { type: "button", class: "btn", "data-action": "rerun", onclick: rerun }, "Re-run"))),
        run.reason ? el("p", { class: `reason s-${run.status}`, role: "status" }, run.reason) : null,
        el("dl", { class: "meta" },
          el("dt", {}, "Ref"), el("dd", {}, refName(run)),
          el("dt", {}, "Commit"), el("dd", {}, el("code", {}, shortSha(run.commit_sha)), " ", run.commit_message || ""),
          el("dt", {}, "Trigger"), el("dd", {}, trigger(run)),
          el("dt", {}, "Started"), el("dd", { title: run.started_at || "" }, since(run.started_at || run.created_at)),
          el("dt", {}, "Duration"), el("dd", { "data-start": run.started_at || null, "data-end": run.finished_at || null }, duration(run.started_at, run.finished_at))));
    }

    function drawOutputs() {
      const items = [];
      for (const s of state.run.stages) {
        const out = s.outputs || {};
        if (out.image || out.digest) {
          items.push(el("div", { class: "output" }, el("span", { class: "label" }, `${s.name} pushed`), " ",
            el("code", {}, out.image || ""), out.digest ? el("code", { class: "digest", title: out.digest }, out.digest) : null));
        }
        if (s.deploy) {
          const d = s.deploy;
          const revisions = d.revision_after ? ` revision ${d.revision_before || "—"} → ${d.revision_after}` : "";
          items.push(el("div", { class: `output s-${d.result === "complete" ? "success" : "failure"}` },
            el("span", { class: "label" }, `${s.name} deployed`), " ",
            el("code", {}, `${d.cluster}/${d.namespace}/${d.deployment}`), ` ${revisions} `, badge(d.result)));
        }
      }
      outputs.hidden = items.length === 0;
      put(outputs, ...items);
    }

    function stageMeta(s) {
      const parts = [];
      if (s.started_at) parts.push(el("span", { "data-start": s.started_at, "data-end": s.finished_at || null }, duration(s.started_at, s.finished_at)));
      if (s.attempt > 1) parts.push(el("span", { class: "attempt" }, `attempt ${s.attempt}`));
      if (s.exit_code !== null && s.exit_code !== undefined && s.status !== "success") parts.push(el("span", {}, `exit ${s.exit_code}`));
      return parts;
    }

    function drawGraph() {
      const stages = state.run.stages;
      if (stages.length === 0) {
        put(graph, el("p", { class: "empty" }, state.run.status === "queued" ? "Waiting for a free runner…" : FINISHED.has(state.run.status) ? "No stages ran." : "Checking out and reading the pipeline…"));
        return;
      }
      const columns = layoutStages(stages);
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("class", "edges");
      svg.setAttribute("aria-hidden", "true");
      put(graph, svg, ...columns.map((col) => el("div", { class: "column" }, ...col.map((s) =>
        el("button", {
          type: "button", class: `stage s-${s.status}${s.name === state.selected ? " selected" : ""}`,
          "data-stage": s.name, "aria-pressed": String(s.name === state.selected),
          "aria-label": `Stage ${s.name}: ${s.status}${s.reason ? ", " + s.reason : ""}`,
          onclick: () => select(s.name, null),
        },
        el("span", { class: "stage-top" }, el("span", { class: "icon", "aria-hidden": "true" }, ICONS[s.status] || "?"), el("span", { class: "name" }, s.name)),
        el("span", { class: "stage-meta" }, s.status, ...stageMeta(s).flatMap((p) => [" · ", p])),
        s.reason ? el("span", { class: "stage-reason" }, s.reason) : null)))));
      requestAnimationFrame(() => drawEdges(svg));
    }

    function drawEdges(svg) {
      const box = graph.getBoundingClientRect();
      svg.setAttribute("width", graph.scrollWidth);
      svg.setAttribute("height", graph.scrollHeight);
      const paths = [];
      for (const s of state.run.stages) {
        const to = graph.querySelector(`[data-stage="${CSS.escape(s.name)}"]`);
        for (const need of s.needs || []) {
          const from = graph.querySelector(`[data-stage="${CSS.escape(need)}"]`);
          if (!from || !to) continue;
          const a = from.getBoundingClientRect();
          const b = to.getBoundingClientRect();
          const x1 = a.right - box.left + graph.scrollLeft, y1 = a.top + a.height / 2 - box.top;
          const x2 = b.left - box.left + graph.scrollLeft, y2 = b.top + b.height / 2 - box.top;
          const mid = (x1 + x2) / 2;
          const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
          path.setAttribute("d", `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`);
          paths.push(path);
        }
      }
      put(svg, ...paths);
    }

    function drawStageInfo() {
      const s = state.run.stages.find((x) => x.name === state.selected);
      if (!s) { put(stageInfo); return; }
      put(stageInfo,
        el("h2", {}, el("span", { class: `icon s-${s.status}`, "aria-hidden": "true" }, ICONS[s.status] || "?"), " ", s.name),
        badge(s.status),
        ...stageMeta(s).flatMap((p) => [" ", p]),
        s.needs && s.needs.length ? el("span", { class: "needs" }, " · after ", s.needs.join(", ")) : null,
        s.reason ? el("p", { class: `reason s-${s.status}`, role: "status" }, s.reason) : null);
    }

    function select(name, line) {
      const changed = state.selected !== name;
      state.selected = name;
      if (changed) {
        if (state.view) state.view.destroy();
        const stage = state.run.stages.find((x) => x.name === name);
        const base = `/api/v1/runs/${id}/stages/${encodeURIComponent(name)}`;
        const view = new GantryLogView.LogView({
          fetchRange: (from, to) => api("GET", `${base}/lines?from=${from}&to=${to}`),
          search: (q) => api("GET", `${base}/search?q=${encodeURIComponent(q)}`),
          rawUrl: `${base}/raw`,
          anchor: (seq) => `stage-${name}-L${seq}`,
        });
        state.view = view;
        put(logBox, view.root);
        view.layout();
        view.setTotal(state.totals[name] || 0);
        // A live (or coming) stage is followed; a failed one opens at its end, where the error is.
        if (line) view.jumpTo(line, true);
        else if (stage && ["pending", "running", "failure"].includes(stage.status)) view.jumpToEnd();
        else view.schedule();
        drawGraph();
        drawStageInfo();
      } else if (line) {
        state.view.jumpTo(line, true);
      }
      if (!line && changed && location.hash && parsePermalink(location.hash)) history.replaceState(null, "", location.pathname);
    }

    function pickStage() {
      const stages = state.run.stages;
      const link = parsePermalink(location.hash);
      if (link && stages.some((s) => s.name === link.stage)) return select(link.stage, link.line);
      const pick = stages.find((s) => s.status === "running") || stages.find((s) => s.status === "failure") ||
        [...stages].reverse().find((s) => s.started_at) || stages[0];
      if (pick) select(pick.name, null);
    }

    async function cancel(e) {
      e.target.disabled = true;
      e.target.textContent = "Cancelling…";
      try {
        state.run = Object.assign(state.run, await api("POST", `/api/v1/runs/${id}/cancel`));
        drawHeader();
      } catch (err) {
        flash(`Could not cancel: ${err.message}`);
        e.target.disabled = false;
        e.target.textContent = "Cancel";
      }
    }

    async function rerun() {
      try {
        const run = await api("POST", `/api/v1/runs/${id}/rerun`);
        go(`/runs/${run.id}`);
      } catch (err) { flash(`Could not re-run: ${err.message}`); }
    }

    // Tail mode: the server sends the last lines of each batch; the log view fetches any it
    // skipped when they scroll into view.
    const events = new EventSource(`/api/v1/runs/${id}/events?tail=1`);
    events.addEventListener("run", (e) => {
      const data = JSON.parse(e.data);
      state.run = data.run;
      for (const [name, seq] of Object.entries(data.lines || {})) state.totals[name] = Math.max(state.totals[name] || 0, seq);
      drawHeader();
      drawOutputs();
      if (!state.selected || !state.run.stages.some((s) => s.name === state.selected)) { state.selected = null; pickStage(); }
      if (state.view && state.selected) state.view.setTotal(state.totals[state.selected] || 0);
      drawGraph();
      drawStageInfo();
    });
    events.addEventListener("stage", (e) => {
      const stage = JSON.parse(e.data).stage;
      const at = state.run.stages.findIndex((s) => s.name === stage.name);
      if (at >= 0) state.run.stages[at] = stage;
      if (!state.selected) pickStage();
      drawOutputs();
      drawGraph();
      drawStageInfo();
    });
    events.addEventListener("lines", (e) => {
      const data = JSON.parse(e.data);
      const last = data.lines[data.lines.length - 1];
      if (!last) return;
      state.totals[data.stage] = Math.max(state.totals[data.stage] || 0, last.seq);
      if (data.stage === state.selected && state.view) state.view.append(data.lines);
    });
    events.addEventListener("end", () => { state.ended = true; events.close(); });
    events.onerror = () => {
      if (events.readyState === EventSource.CLOSED && !state.ended) flash("Lost the connection to the server; reload the page to try again.");
    };
    const onHash = () => {
      const link = parsePermalink(location.hash);
      if (link && state.run && state.run.stages.some((s) => s.name === link.stage)) select(link.stage, link.line);
    };
    const onKey = (e) => {
      if (e.key === "/" && state.view && !/^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName)) {
        e.preventDefault();
        state.view.searchBox.focus();
      }
    };
    window.addEventListener("hashchange", onHash);
    document.addEventListener("keydown", onKey);
    const timer = setInterval(tick, 1000);
    cleanup.push(() => events.close(), () => clearInterval(timer),
      () => window.removeEventListener("hashchange", onHash), () => document.removeEventListener("keydown", onKey),
      () => state.view && state.view.destroy());
  }

  // ---- deployments (with the deploy stage) ----------------------------------------------------

  function deploymentsPage() {
    document.title = "Deployments · Gantry";
    const body = el("tbody");
    const note = el("p", { class: "empty" }, "Loading…");
    put(main, el("h1", {}, "Deployments"), note,
      el("table", { class: "runs deployments" },
        el("thead", {}, el("tr", {}, ...["When", "Kind", "Cluster", "Deployment", "Image", "Revision", "Result", "Cause", ""].map((h) => el("th", { scope: "col" }, h)))),
        body));

    // Only the newest entry of each Deployment offers the rollback: `kubectl rollout undo`
    // goes back from what runs now, whichever row the button would sit on.
    async function rollBack(d, button) {
      const target = `${d.namespace}/${d.deployment}`;
      if (!confirm(`Roll ${target} on ${d.cluster} back to its previous revision?`)) return;
      button.disabled = true;
      button.textContent = "Rolling back…";
      try {
        const path = `/api/v1/deployments/${encodeURIComponent(d.cluster)}/${encodeURIComponent(d.namespace)}/${encodeURIComponent(d.deployment)}/rollback`;
        const done = await api("POST", path, {});
        const ok = done.result === "complete";
        flash(ok ? `Rolled ${target} back to revision ${done.revision_after} (now revision ${done.current_revision}).`
          : `Rollback of ${target} ended ${done.result}${done.cause ? `: ${done.cause}` : ""}.`, ok ? "ok" : "error");
        await load();
      } catch (e) {
        flash(`Rollback of ${target} failed: ${e.message}`);
        button.disabled = false;
        button.textContent = "Roll back";
      }
    }

    async function load() {
      const answer = await api("GET", "/api/v1/deployments?limit=100");
      const rows = answer.deployments || [];
      note.textContent = rows.length ? "" : "No rollouts yet: they appear here once a pipeline's deploy stage runs.";
      const seen = new Set();
      put(body, ...rows.map((d) => {
        const target = `${d.namespace}/${d.deployment}`;
        const key = `${d.cluster}\u0000${target}`;
        const newest = !seen.has(key);
        seen.add(key);
        let action = "";
        if (newest) {
          const button = el("button", { type: "button", class: "btn danger rollback", "aria-label": `Roll back ${target} on ${d.cluster}` }, "Roll back");
          button.addEventListener("click", () => rollBack(d, button));
          action = button;
        }
        const cell = (label, ...content) => el("td", { "data-label": label }, ...content);
        return el("tr", { "data-id": String(d.id) },
          cell("When", since(d.finished_at)),
          cell("Kind", d.kind, ...(d.run_id ? [" · ", el("a", { href: `/runs/${d.run_id}`, "data-nav": "", title: `stage ${d.stage}` }, "run")] : [])),
          cell("Cluster", d.cluster),
          cell("Deployment", target),
          cell("Image", el("code", { title: `${d.image_before || "?"} → ${d.image_after || "?"}` }, d.image_after || "—")),
          cell("Revision", `${d.revision_before ?? "?"} → ${d.revision_after ?? "?"}`),
          cell("Result", badge(d.result)),
          cell("Cause", d.cause || ""),
          cell("", action));
      }));
    }
    load().catch((e) => { note.textContent = `Cannot load deployments: ${e.message}`; });
  }

  route();
})();
