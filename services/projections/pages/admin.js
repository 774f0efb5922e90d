// The admin console: plain JavaScript, no build step, and no power of its own. Every read and every action is
// a call to a service's admin API with the admin's token (the services decide; a user's token gets 403s), and
// every action carries an Idempotency-Key kept until the service has answered, so a retried click is one action.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const url = (service, path) => `${location.protocol}//${location.hostname}:${config.ports[service]}${path}`;
const TOKEN = "creditstream-admin-token"; // not the user pages' key: an admin's session is kept apart
let token = sessionStorage.getItem(TOKEN);
let current = null; // the user shown in the panel

async function call(service, path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(service, path), {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (options.text) return response.text();
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    throw Object.assign(new Error(detail), { status: response.status });
  }
  return body;
}

// One key per distinct command (what it is and to whom), kept across retries until an answer settles it: a
// network error keeps it, so clicking again is the same command; a 2xx or a 4xx forgets it.
const keys = new Map();
async function command(what, service, path, body) {
  if (!keys.has(what)) keys.set(what, crypto.randomUUID());
  try {
    const answer = await call(service, path, { method: "POST", body, headers: { "Idempotency-Key": keys.get(what) } });
    keys.delete(what);
    return answer;
  } catch (error) {
    if (error.status && error.status < 500) keys.delete(what);
    throw error;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  children.forEach((child) => node.append(child instanceof Node ? child : document.createTextNode(String(child ?? ""))));
  return node;
}
const row = (...cells) => el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const money = (cents, currency) => `${(cents / 100).toFixed(2)} ${currency || ""}`.trim();
const say = (id, message) => { $(id).textContent = message; };
function failed(id) {
  return (error) => {
    if (error.status === 403) return refuse(error);
    say(id, `Refused: ${error.message}`);
  };
}

// -- sign-in, and the refusal a non-admin sees ------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  say("sign-in-error", "");
  try {
    const form = new FormData(event.target);
    if (config.auth_mode === "dev") {
      const clerkId = form.get("clerk_id");
      const asked = { clerk_id: clerkId, email: `${clerkId}@example.com`, role: form.get("admin") ? "admin" : "user" };
      token = (await call("identity", "/dev/token", { method: "POST", body: asked })).token;
    } else {
      token = String(form.get("token")).trim();
    }
    sessionStorage.setItem(TOKEN, token);
    await start();
  } catch (error) {
    token = null;
    say("sign-in-error", `Sign-in failed: ${error.message}`);
  }
}

function refuse(error) {
  $("console").hidden = true;
  $("refused").hidden = false;
  say("refused-why", `This console is for admins only: the admin APIs refuse this account (${error.status}: ${error.message}).`);
}

function signOut() {
  sessionStorage.removeItem(TOKEN);
  location.reload();
}

// -- users ----------------------------------------------------------------------------------------------------

async function search(event) {
  if (event) event.preventDefault();
  const q = $("search-q").value.trim();
  const page = await call("identity", `/api/admin/users?limit=50${q ? `&q=${encodeURIComponent(q)}` : ""}`);
  $("found").replaceChildren(...page.users.map((user) => {
    const open = el("button", { type: "button", "aria-label": `Open ${user.email || user.id}` }, "Open");
    open.addEventListener("click", () => openUser(user.id).catch(failed("console-error")));
    const name = [user.first_name, user.last_name].filter(Boolean).join(" ");
    return row(user.email || "(erased)", name, status(user), when(user.created_at), el("td", {}, open));
  }));
  if (page.users.length === 0) $("found").replaceChildren(row("No user matches."));
}

const status = (user) => (user.erased_at ? "erased" : user.is_active ? "active" : "deactivated");

async function openUser(userId) {
  const [user, account, entries, transactions, jobs] = await Promise.all([
    call("identity", `/api/admin/users/${userId}`),
    call("ledger", `/api/accounts/${userId}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
    call("ledger", `/api/accounts/${userId}/entries?limit=50`).catch((e) => (e.status === 404 ? { entries: [] } : Promise.reject(e))),
    call("payments", `/api/admin/transactions?user_id=${userId}&limit=50`),
    call("projections", `/api/admin/users/${userId}/jobs?limit=50`),
  ]);
  current = user;
  $("user").hidden = false;
  say("user-title", user.email || `User ${user.id} (erased)`);
  const facts = { "User id": user.id, "Clerk id": user.clerk_id, Name: [user.first_name, user.last_name].filter(Boolean).join(" ") || "–",
    Role: user.role, "Signed up": when(user.created_at), "Erased": when(user.erased_at) };
  $("user-profile").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  say("user-status", status(user));
  say("user-balance", account ? account.balance : "–");
  say("user-available", account ? `${account.available} available, ${account.reserved} held` : "no account yet");
  $("user-lots").replaceChildren(...(account ? account.lots : []).map((lot) =>
    row(lot.id, lot.amount, lot.remaining, lot.held, lot.expires_at ? when(lot.expires_at) : "never")));
  $("user-history").replaceChildren(...entries.entries.map((e) =>
    row(when(e.created_at), e.type, e.amount > 0 ? `+${e.amount}` : e.amount, e.balance_after, e.description,
      (e.metadata && e.metadata.admin_id) || "")));
  $("user-transactions").replaceChildren(...transactions.transactions.map(transactionRow));
  $("user-jobs").replaceChildren(...jobs.jobs.map((j) => row(when(j.requested_at), j.operation, j.status, j.cost ?? "–")));
  $("reactivate").disabled = user.is_active || Boolean(user.erased_at);
  $("deactivate").disabled = !user.is_active;
  $("erase").disabled = Boolean(user.erased_at);
}

function transactionRow(tx) {
  const cell = el("td");
  if (tx.status === "COMPLETED" && tx.type !== "REFUND") {
    const form = el("form", { class: "inline", "aria-label": `Refund ${tx.id}` });
    const amount = el("input", { type: "number", min: "1", max: String(tx.amount), "aria-label": "Cents to refund (empty: all)" });
    const reason = el("input", { required: "", maxlength: "500", "aria-label": "Reason for the refund", placeholder: "reason" });
    form.append(amount, reason, el("button", { type: "submit" }, "Refund"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = { reason: reason.value, ...(amount.value ? { amount_cents: Number(amount.value) } : {}) };
      command(`refund:${tx.id}:${JSON.stringify(body)}`, "payments", `/api/admin/transactions/${tx.id}/refund`, body)
        .then((done) => { say("action-status", `Refunded ${money(done.refunded_cents, done.currency)}.`); return openUser(tx.user_id); })
        .catch(failed("action-status"));
    });
    cell.append(form);
  } else if (tx.refunded_cents) {
    cell.append(`${money(tx.refunded_cents, tx.currency)} back, ${tx.credits_clawed_back} credits taken`);
  }
  return row(when(tx.created_at), tx.type, tx.status, money(tx.amount, tx.currency), tx.credits, cell);
}

async function adjust(event) {
  event.preventDefault();
  const body = { amount: Number($("adjust-amount").value), reason: $("adjust-reason").value };
  const entry = await command(`adjust:${current.id}:${JSON.stringify(body)}`, "ledger",
    `/api/admin/accounts/${current.id}/adjustments`, body);
  say("action-status", `Adjusted by ${entry.amount}: the balance is ${entry.balance_after}.`);
  event.target.reset();
  await openUser(current.id);
}

async function setActive(active) {
  const path = `/api/admin/users/${current.id}/${active ? "reactivate" : "deactivate"}`;
  const reason = $("deactivate-reason").value.trim();
  const answer = await command(`${path}:${reason}`, "identity", path, active || !reason ? undefined : { reason });
  say("action-status", answer.changed ? `The user is ${status(answer.user)} now.` : `The user was ${status(answer.user)} already.`);
  await openUser(current.id);
}

async function erase() {
  if (!confirm(`Erase ${current.email || current.id}? Their profile is forgotten everywhere; their credits and payments stay under the pseudonymous id.`)) return;
  const path = `/api/admin/users/${current.id}/erase`;
  await command(path, "identity", path);
  say("action-status", "Erased.");
  await openUser(current.id);
}

// -- promo codes ------------------------------------------------------------------------------------------------

async function loadPromos() {
  const promos = await call("payments", "/api/admin/promo-codes");
  $("promos").replaceChildren(...promos.map((p) => {
    const cell = el("td");
    if (!p.disabled_at) {
      const off = el("button", { type: "button", "aria-label": `Disable ${p.code}` }, "Disable");
      off.addEventListener("click", () => command(`disable:${p.code}`, "payments", `/api/admin/promo-codes/${encodeURIComponent(p.code)}/disable`)
        .then(loadPromos).catch(failed("promo-status")));
      cell.append(off);
    }
    return row(p.code, p.credits, `${p.redeemed} of ${p.max_redemptions}`, p.valid_until ? when(p.valid_until) : "no end",
      p.disabled_at ? `disabled ${when(p.disabled_at)}` : "redeemable", cell);
  }));
}

async function createPromo(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { code: form.get("code"), credits: Number(form.get("credits")), max_redemptions: Number(form.get("max_redemptions")),
    new_users_only: form.get("new_users_only") === "on" };
  if (form.get("credits_expire_in_days")) body.credits_expire_in_days = Number(form.get("credits_expire_in_days"));
  const promo = await command(`promo:${JSON.stringify(body)}`, "payments", "/api/admin/promo-codes", body);
  say("promo-status", `Created ${promo.code}.`);
  event.target.reset();
  await loadPromos();
}

// -- finance ------------------------------------------------------------------------------------------------------

const FIGURES = ["deferred_opening", "sold", "recognised", "breakage", "refunded", "deferred_closing"];

function monthsBefore(month, n) {
  const [year, m] = month.split("-").map(Number);
  return Array.from({ length: n }, (_, i) => {
    const d = new Date(Date.UTC(year, m - 1 - (n - 1 - i), 1));
    return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
  });
}

async function loadFinance(event) {
  if (event) event.preventDefault();
  const month = $("finance-month").value;
  const [report, operations] = await Promise.all([
    call("projections", `/api/admin/finance/revenue?month=${month}`),
    call("projections", `/api/admin/finance/revenue/by-operation?month=${month}`),
  ]);
  $("finance").replaceChildren(...report.currencies.map((c) => row(c.currency, ...FIGURES.map((f) => money(c[f])))));
  if (report.currencies.length === 0) $("finance").replaceChildren(row("Nothing sold or owed in this month."));
  $("by-operation").replaceChildren(...operations.operations.map((o) => row(o.currency, o.operation, o.credits, money(o.recognised, o.currency))));
  say("rounding", report.rounding);
  const months = monthsBefore(month, 6);
  const reports = await Promise.all(months.map((m) => call("projections", `/api/admin/finance/revenue?month=${m}`)));
  $("finance-chart").replaceChildren(financeChart(months, reports));
}

// Per month of the first currency: three bars, what was sold, recognised, and owed at its end.
function financeChart(months, reports) {
  const currency = reports.flatMap((r) => r.currencies.map((c) => c.currency))[0];
  const figures = reports.map((r) => r.currencies.find((c) => c.currency === currency) || {});
  const shown = [["sold", "#0b5394"], ["recognised", "#2e7d32"], ["deferred_closing", "#8a1c00"]];
  const top = Math.max(1, ...figures.flatMap((f) => shown.map(([k]) => f[k] || 0)));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 600 160");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Sold, recognised and deferred revenue per month in ${currency || "no currency"}`);
  const put = (tag, attrs, text) => {
    const node = document.createElementNS(svg.namespaceURI, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  months.forEach((month, i) => {
    shown.forEach(([figure, colour], j) => {
      const value = figures[i][figure] || 0;
      const height = Math.round((value / top) * 120);
      const bar = put("rect", { x: i * 100 + 10 + j * 26, y: 130 - height, width: 24, height, fill: colour, "data-figure": figure });
      const title = document.createElementNS(svg.namespaceURI, "title");
      title.textContent = `${month} ${figure}: ${money(value, currency)}`;
      bar.append(title);
    });
    put("text", { x: i * 100 + 20, y: 150 }, month);
  });
  return svg;
}

// -- operations ------------------------------------------------------------------------------------------------

async function loadOps() {
  const services = Object.keys(config.ports);
  const status = await call("projections", "/api/projections/status");
  $("read-models").replaceChildren(...status.read_models.map((m) =>
    row(m.consumer, `${m.applied_position} of ${m.stream_position}`, m.lag_messages, m.lag_seconds, m.dead_letters)));
  const alarms = await Promise.all(services.map((s) => call(s, "/alarms").catch((e) => ({ service: s, alarms: [`unreachable: ${e.message}`] }))));
  const raised = alarms.flatMap((a) => a.alarms.map((text) => el("li", {}, `${a.service}: ${text}`)));
  $("alarms").replaceChildren(...(raised.length ? raised : [el("li", {}, "None: all is well.")]));
  const parked = await Promise.all(services.map((s) => call(s, "/dead-letters").catch(() => ({ service: s, letters: [] }))));
  const letters = parked.flatMap((p) => p.letters.map((letter) => deadLetterRow(p.service, letter)));
  $("dead-letters").replaceChildren(...(letters.length ? letters : [row("None parked.")]));
  const metrics = await Promise.all(services.map((s) => call(s, "/metrics", { text: true }).catch(() => "")));
  const lines = metrics.flatMap((text, i) => backlog(services[i], text));
  if (!lines.some((line) => line.startsWith("last audit"))) lines.push("last audit: none has run (`creditstream audit`)");
  $("backlog").replaceChildren(...lines.map((line) => el("li", {}, line)));
}

function deadLetterRow(service, letter) {
  const again = el("button", { type: "button", "aria-label": `Re-drive dead letter ${letter.seq}` }, "Re-drive");
  again.addEventListener("click", () => command(`redrive:${service}:${letter.seq}`, service, `/dead-letters/${letter.seq}/redrive`)
    .then((done) => { say("redrive-status", `Dead letter ${done.seq} applied by ${done.consumer}.`); return loadOps(); })
    .catch(failed("redrive-status")));
  return row(service, letter.seq, letter.consumer, `${letter.event_type || letter.subject} ${letter.event_id || ""}`, letter.reason, el("td", {}, again));
}

// Prometheus text: the relays' backlog (every service) and the last audit's verdict (the ledger's).
function backlog(service, text) {
  const found = [];
  for (const line of text.split("\n")) {
    let m = line.match(/^creditstream_relay_backlog_events\{[^}]*relay="([^"]+)"[^}]*\} (\S+)/);
    if (m) found.push(`${service} relay ${m[1]}: ${Number(m[2])} events not yet published`);
    m = line.match(/^creditstream_audit_discrepancies(?:\{[^}]*\})? (\S+)/);
    if (m) found.push(`last audit: ${Number(m[1])} discrepancies`);
    m = line.match(/^creditstream_audit_last_run_timestamp_seconds(?:\{[^}]*\})? (\S+)/);
    if (m) found.push(`last audit ran ${new Date(Number(m[1]) * 1000).toLocaleString()}`);
  }
  return found;
}

// -- start ----------------------------------------------------------------------------------------------------

async function start() {
  $("sign-in").hidden = true;
  try {
    await search();
  } catch (error) {
    if (error.status === 401 || error.status === 403) return refuse(error);
    throw error;
  }
  $("console").hidden = false;
  $("sign-out").hidden = false;
  $("finance-month").value = new Date().toISOString().slice(0, 7);
  await Promise.all([loadPromos(), loadFinance(), loadOps()]).catch(failed("console-error"));
}

$("dev-sign-in").addEventListener("submit", signIn);
$("clerk-sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("search").addEventListener("submit", (e) => search(e).catch(failed("console-error")));
$("adjust").addEventListener("submit", (e) => adjust(e).catch(failed("action-status")));
$("status-form").addEventListener("submit", (e) => { e.preventDefault(); setActive(false).catch(failed("action-status")); });
$("reactivate").addEventListener("click", () => setActive(true).catch(failed("action-status")));
$("erase").addEventListener("click", () => erase().catch(failed("action-status")));
$("promo-form").addEventListener("submit", (e) => createPromo(e).catch(failed("promo-status")));
$("finance-form").addEventListener("submit", (e) => loadFinance(e).catch(failed("console-error")));
$("ops-refresh").addEventListener("click", () => loadOps().catch(failed("console-error")));

if (token) {
  start().catch((error) => say("console-error", error.message));
} else {
  $("sign-in").hidden = false;
  $(config.auth_mode === "dev" ? "dev-sign-in" : "clerk-sign-in").hidden = false;
}
