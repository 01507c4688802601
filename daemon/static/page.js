// The status page: asks the control API for JSON (/v1/page, /v1/page/plans/ID) and draws it.
// No framework, no build step. Every value from the server is put in the page as text
// (textContent), never as HTML. The control token lives in this tab's sessionStorage only and
// is sent in an Authorization header; it never goes into a URL.
"use strict";

const TOKEN_KEY = "vpsie-rebalancer-control-token";
const PHASES = ["create", "drain", "delete"];
const OK = new Set(["completed", "done", "passed", "pass", "ok"]);
const BAD = new Set(["failed", "rolled_back", "rolling_back", "rollback", "fail"]);
const WAIT = new Set(["awaiting_approval", "paused", "cancelled", "rejected", "warn", "warning",
  "proposed", "needs_review"]);

let timer = null;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(state) {
  const s = String(state || "?");
  const kind = OK.has(s) ? "ok" : BAD.has(s) ? "bad" : WAIT.has(s) ? "wait" : "run";
  return h("span", { class: `badge ${kind}`, "data-state": s }, s.replaceAll("_", " "));
}

function money(v) {
  if (v === null || v === undefined || v === "") return "–";
  const n = Number(v);
  return Number.isFinite(n) ? `$${n.toFixed(2)}` : String(v);
}

function time(iso) {
  if (!iso) return "–";
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/.exec(iso);
  return m ? `${m[1]} ${m[2]}` : iso;
}

function table(headers, rows, cls) {
  return h("table", { class: cls },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) =>
      c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))))));
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function notice(text, isError) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = isError ? "error" : "";
  el.hidden = !text;
}

async function getJSON(path) {
  // The token too when there is one: off loopback, the daemon answers reads only with it.
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const resp = await fetch(path, { headers, cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

async function act(planId, action) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const resp = await fetch(`/v1/plans/${encodeURIComponent(planId)}/${action}`, {
    method: "POST", headers, cache: "no-store",
    body: JSON.stringify({ by: "status page", reason: `${action} from the status page` }),
  });
  let body = {};
  try { body = await resp.json(); } catch (e) { body = {}; }
  if (resp.ok) {
    notice(`plan ${planId}: ${action} accepted; state is now ${body.state}`, false);
  } else {
    const hint = resp.status === 401 || resp.status === 403
      ? " (enter the control token at the top of the page)" : "";
    notice(`plan ${planId}: ${action} refused: ${body.error || `HTTP ${resp.status}`}${hint}`,
      true);
  }
  refresh();
}

function phases(plan) {
  const now = plan.phase;
  const idx = PHASES.indexOf(now);
  const finished = plan.state === "completed";
  return h("div", { class: "phases", "aria-label": "phases" }, PHASES.map((p, i) =>
    h("span", { class: p === now ? "now" : (finished || (idx >= 0 && i < idx)) ? "past" : "" },
      p)));
}

function figures(plan) {
  const f = plan.fleet;
  const pct = plan.replacements_total
    ? Math.round((100 * plan.replacements_done) / plan.replacements_total) : 0;
  return [
    h("div", { class: "progress", role: "progressbar", "aria-valuenow": pct,
      "aria-valuemin": 0, "aria-valuemax": 100 }, h("div", { style: null })),
    h("div", { class: "figures" },
      h("div", { class: "figure" }, "replacements", h("b", { id: `done-${plan.plan_id}` },
        `${plan.replacements_done} / ${plan.replacements_total} done`)),
      h("div", { class: "figure" }, "fleet per month",
        h("b", {}, `${money(f.monthly_cost_before)} → ${money(f.monthly_cost_after)}`)),
      h("div", { class: "figure" }, "saving projected",
        h("b", {}, `${money(plan.monthly_saving_projected)}/mo`)),
      h("div", { class: "figure" }, "saving realised",
        h("b", {}, plan.monthly_saving_realised === null ? "not yet"
          : `${money(plan.monthly_saving_realised)}/mo`))),
  ];
}

function fleet(plan) {
  const rows = (list) => list.map((x) => `${x.count} × ${x.size} (${money(x.monthly_price)})`)
    .join(", ") || "none";
  return table(["", "nodes"], [
    ["before", rows(plan.fleet.before)],
    ["after", rows(plan.fleet.after)],
  ]);
}

function replacements(plan) {
  return table(
    ["old node", "size", "price", "", "new node", "size", "price", "state", "since"],
    plan.replacements.map((r) => [
      h("td", { class: "mono" }, r.adds_only ? "none: added" : r.old_node), r.old_size || "–",
      h("td", { class: "num" }, r.adds_only ? "–" : money(r.old_monthly_price)), "→",
      h("td", { class: "mono" }, r.new_node || (r.new_size ? "(not yet)" : "none: removed")),
      r.new_size || "–", h("td", { class: "num" }, money(r.new_monthly_price)),
      h("td", { "data-replacement": r.replacement_id }, badge(r.state),
        r.problem ? h("div", { class: "muted problem" }, r.problem) : null),
      h("td", { class: "time" }, time(r.since)),
    ]), "replacements");
}

function checkTable(list) {
  return table(["check", "result", "why"],
    list.map((c) => [c.name.replaceAll("_", " "), badge(c.status), c.message]));
}

function checks(plan) {
  const out = [h("h3", {}, `Safety checks when proposed: ${plan.recommended_action}`),
    checkTable(plan.checks)];
  const r = plan.last_recheck;
  if (r) {
    out.push(h("h3", {}, `Latest re-check (${r.step || "plan"}, ${time(r.at)}): ${r.action}` +
      (r.reasons.length ? ` (${r.reasons.join("; ")})` : "")), checkTable(r.checks));
  }
  return out;
}

function exclusions(plan) {
  if (!plan.exclusions.length) return h("p", { class: "muted" }, "No node was left out.");
  return table(["node", "reason", "why"],
    plan.exclusions.map((x) => [h("td", { class: "mono" }, x.node), x.reason, x.message]));
}

function timeline(plan) {
  const rows = plan.timeline.slice().reverse().map((t) => [
    h("td", { class: "num" }, t.seq), h("td", { class: "time" }, time(t.at)),
    h("td", { class: "mono" }, t.node || "plan"),
    t.event, t.from_state === t.to_state ? t.to_state : `${t.from_state || "–"} → ${t.to_state}`,
    t.detail,
  ]);
  const shown = plan.timeline.length < plan.timeline_total
    ? ` (newest ${plan.timeline.length} of ${plan.timeline_total}; the audit has them all)` : "";
  return h("details", { open: true },
    h("summary", {}, `Timeline from the event log, newest first${shown}`),
    h("div", { class: "timeline" },
      table(["seq", "time", "node", "event", "state", "detail"], rows)));
}

function actions(plan, mutations) {
  if (plan.state !== "awaiting_approval") return null;
  if (!mutations) {
    return h("p", { class: "muted" }, "Awaiting approval (read-only view: approve it from the " +
      "running daemon's page or with `vpsie-rebalancer approve`).");
  }
  return h("div", { class: "actions" },
    h("span", {}, "This plan awaits approval:"),
    h("button", { class: "approve", id: `approve-${plan.plan_id}`,
      onclick: () => act(plan.plan_id, "approve") }, "Approve"),
    h("button", { class: "reject", id: `reject-${plan.plan_id}`,
      onclick: () => act(plan.plan_id, "reject") }, "Reject"));
}

function daemonLine(d) {
  if (!d) return null;
  const parts = [];
  if (d.last_analysis_at) parts.push(`last analysis ${time(d.last_analysis_at)}`);
  if (d.last_decision) parts.push(`decision: ${d.last_decision}`);
  return [
    d.waiting ? h("p", { class: "waiting", "data-waiting": d.waiting.reason },
      `Waits for ${d.waiting.message}`) : null,
    h("p", { class: "muted daemon-line" }, parts.flatMap((p, i) => i ? [" · ", p] : [p])),
  ];
}

function renderPlan(plan, mutations) {
  const el = h("div", { class: "plan", "data-plan": plan.plan_id, "data-state": plan.state },
    h("div", { class: "plan-head" },
      h("span", {}, "plan ", h("code", {}, plan.plan_id)), badge(plan.state),
      h("span", { class: "muted" }, `${plan.strategy}, ${plan.batches} batches, ` +
        `proposed ${time(plan.proposed_at)}` +
        (plan.finished_at ? `, ended ${time(plan.finished_at)}` : ""))),
    h("p", {}, `${plan.recommended_action}: ${plan.opportunity}`,
      plan.action_reasons.length ? ` (${plan.action_reasons.join("; ")})` : ""),
    actions(plan, mutations),
    phases(plan), figures(plan),
    h("h3", {}, "Fleet before and after"), fleet(plan),
    h("h3", {}, "Replacements"), replacements(plan),
    checks(plan),
    h("h3", {}, "Nodes left out"), exclusions(plan),
    timeline(plan));
  const pct = plan.replacements_total
    ? (100 * plan.replacements_done) / plan.replacements_total : 0;
  el.querySelector(".progress > div").style.width = `${pct}%`;
  return el;
}

function renderRecent(group) {
  if (!group.recent.length) return null;
  return h("details", {},
    h("summary", {}, `Earlier plans (${group.recent.length})`),
    table(["plan", "state", "proposed", "replacements", "saving"], group.recent.map((p) => [
      h("td", { class: "mono" }, p.plan_id), badge(p.state), time(p.proposed_at),
      `${p.replacements_done}/${p.replacements_total}`,
      `${money(p.monthly_saving_realised ?? p.monthly_saving_projected)}/mo` +
        (p.monthly_saving_realised === null ? " planned" : ""),
    ])));
}

function repairLine(r) {
  if (!r || (!r.unhealthy.length && !r.blocked)) return null;
  return h("div", { class: "repair" },
    r.blocked ? h("p", { class: "waiting", "data-repair": "blocked" },
      `Repair blocked: ${r.blocked}`) : null,
    r.unhealthy.length ? table(["unhealthy node", "signal", "since", "what happens"],
      r.unhealthy.map((u) => [
        h("td", { class: "mono" }, u.node), `${u.signal}: ${u.detail}`, time(u.since), u.outlook,
      ]), "unhealthy") : null);
}

async function renderGroup(group, mutations) {
  const children = [h("h2", {}, `node group ${group.name}`), daemonLine(group.daemon),
    repairLine(group.repair)];
  if (group.current) {
    const plan = await getJSON(`/v1/page/plans/${encodeURIComponent(group.current.plan_id)}`);
    children.push(renderPlan(plan, mutations));
  } else {
    children.push(h("p", { class: "muted" }, "No plan in the log for this group yet."));
  }
  children.push(renderRecent(group));
  return h("section", { class: "group", "data-group": group.name }, children);
}

function renderSource(view) {
  const el = document.getElementById("source");
  if (view.source === "log") {
    el.textContent = `recorded log ${view.log} (read-only)`;
  } else {
    const d = view.daemon || {};
    el.textContent = `daemon ${d.role || "?"}, ${d.ready ? "ready" : `not ready (${d.reason})`}` +
      `; log ${view.log}`;
  }
  document.getElementById("token-form").hidden = !view.mutations;
}

function running(view) {
  return view.groups.some((g) => g.current && !g.current.terminal);
}

async function refresh() {
  clearTimeout(timer);
  let next = 15000;
  try {
    const view = await getJSON("/v1/page");
    renderSource(view);
    const sections = [];
    for (const g of view.groups) sections.push(await renderGroup(g, view.mutations));
    if (!sections.length) sections.push(h("p", { class: "muted" }, "No node group yet."));
    for (const p of view.problems) sections.push(h("p", { class: "error" }, `problem: ${p}`));
    document.getElementById("groups").replaceChildren(...sections);
    document.getElementById("updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    if (running(view)) next = 2000;
  } catch (e) {
    notice(`cannot read the status: ${e.message}`, true);
    next = 5000;
  }
  timer = setTimeout(refresh, next);
}

function setupToken() {
  const input = document.getElementById("token");
  const forget = document.getElementById("token-forget");
  const state = document.getElementById("token-state");
  const show = () => {
    const has = Boolean(token());
    forget.hidden = !has;
    state.textContent = has ? "token set for this tab" : "";
  };
  document.getElementById("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    input.value = "";
    show();
  });
  forget.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); show(); });
  show();
}

setupToken();
refresh();
