// The dashboard and credits pages: plain JavaScript, no build step. Reads from projections; signs in with
// identity; buys through payments; listens to the live credit stream with a single-use ticket.
"use strict";

const config = JSON.parse(document.getElementById("config").textContent);
const page = document.body.dataset.page;
const $ = (id) => document.getElementById(id);
const url = (service, path) => `${location.protocol}//${location.hostname}:${config.ports[service]}${path}`;
let token = sessionStorage.getItem("creditstream-token");
// What the token says of the organization it is active in (Clerk's v1 org_* claims or the v2 `o`), or null.
function activeOrg() {
  if (!token) return null;
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const claims = JSON.parse(atob(part + "=".repeat((4 - part.length % 4) % 4)));
  if (claims.o && claims.o.id) return { id: claims.o.id, admin: String(claims.o.rol).replace("org:", "") === "admin" };
  return claims.org_id ? { id: claims.org_id, admin: claims.org_role === "org:admin" } : null;
}
const org = activeOrg();
let stream = null;
let lastEventId = null;

async function call(service, path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url(service, path), {
    method: options.method || "GET", headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(body.detail || response.statusText), { status: response.status });
  return body;
}

const key = () => crypto.randomUUID();
const text = (value) => document.createTextNode(String(value));
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  children.forEach((child) => node.append(typeof child === "string" ? text(child) : child));
  return node;
}
const when = (iso) => new Date(iso).toLocaleString();

// -- sign-in ---------------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  try {
    if (config.auth_mode === "dev") {
      const form = new FormData(event.target);
      const who = { clerk_id: form.get("clerk_id"), email: form.get("email"), first_name: form.get("first_name") || null };
      token = (await call("identity", "/dev/token", { method: "POST", body: who })).token;
      sessionStorage.setItem("creditstream-dev", JSON.stringify(who));
    } else {
      token = new FormData(event.target).get("token").trim();
    }
    await call("identity", "/api/user/sync", { method: "POST" });
    sessionStorage.setItem("creditstream-token", token);
    await start();
  } catch (error) {
    token = null;
    $("sign-in-error").textContent = `Sign-in failed: ${error.message}`;
  }
}

function signOut() {
  sessionStorage.removeItem("creditstream-token");
  sessionStorage.removeItem("creditstream-dev");
  token = null;
  if (stream) stream.close();
  location.reload();
}

// -- live balance ----------------------------------------------------------------------------------------

function showBalance(figures) {
  $("balance").textContent = figures.balance;
  if ($("credits-balance")) $("credits-balance").textContent = figures.balance;
  if ($("credits-reserved")) $("credits-reserved").textContent = figures.reserved;
}

async function listen() {
  // A ticket per connection: the EventSource cannot send our Authorization header, and a ticket opens one
  // stream only. A reconnect resumes after the last event seen (?after=), as Last-Event-ID would.
  const tickets = org ? "/api/org/credits/stream-ticket" : "/api/user/credits/stream-ticket";
  const { ticket } = await call("projections", tickets, { method: "POST" });
  const after = lastEventId === null ? "" : `&after=${lastEventId}`;
  stream = new EventSource(url("projections", `/api/user/credits/stream?ticket=${ticket}${after}`));
  stream.addEventListener("balance", (event) => {
    lastEventId = event.lastEventId;
    showBalance(JSON.parse(event.data));
    refresh();
  });
  stream.addEventListener("notification", (event) => {
    lastEventId = event.lastEventId;
    refresh();
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) setTimeout(() => listen().catch(() => {}), 1000);
    else { stream.close(); setTimeout(() => listen().catch(() => {}), 1000); }
  };
}

let refreshing = null;
function refresh() {
  clearTimeout(refreshing);
  refreshing = setTimeout(() => (page === "dashboard" ? loadBoard() : loadCredits(true)), 150);
}

// -- organizations: the switcher, and the organization's dashboard --------------------------------------------

async function loadOrganizations() {
  const orgs = await call("identity", "/api/user/organizations");
  const options = [el("option", { value: "" }, "Personal"), ...orgs.map((o) => el("option", { value: o.id }, o.name))];
  $("org-switcher").replaceChildren(...options);
  $("org-switcher").value = org ? org.id : "";
  $("org-switch").hidden = orgs.length === 0 && !org;
  // Only Clerk makes a real session token active in an organization; in dev mode identity signs one for it.
  $("org-switcher").disabled = config.auth_mode !== "dev";
  $("org-switcher").onchange = () => switchTo(orgs.find((o) => o.id === $("org-switcher").value) || null);
}

async function switchTo(chosen) {
  const who = JSON.parse(sessionStorage.getItem("creditstream-dev") || "null");
  if (!who) return;
  const body = chosen ? { ...who, org_id: chosen.id, org_role: chosen.role, org_slug: chosen.slug } : who;
  token = (await call("identity", "/dev/token", { method: "POST", body })).token;
  await call("identity", "/api/user/sync", { method: "POST" });
  sessionStorage.setItem("creditstream-token", token);
  location.reload();
}

const loadBoard = () => (org ? loadOrgDashboard() : loadDashboard());

async function loadOrgDashboard() {
  const board = await call("projections", "/api/org/dashboard");
  showBalance(board.account);
  $("org-title").textContent = `${board.org.name} · ${board.org.role === "org:admin" ? "admin" : "member"}`;
  $("org-balance").textContent = board.account.balance;
  $("org-available").textContent = `${board.account.available} available, ${board.account.reserved} held`;
  $("org-used").textContent = `${board.totals.used_this_month} used in ${board.month}`;
  $("org-set-limit").hidden = !org.admin;
  $("org-members").replaceChildren(...board.members.map((m) => {
    const limit = m.monthly_limit === null ? "no limit" : String(m.monthly_limit);
    const cells = [el("td", {}, m.name || m.email || m.user_id), el("td", {}, m.role || "left"),
      el("td", {}, String(m.used)), el("td", {}, limit)];
    if (org.admin && m.clerk_id) {
      const input = el("input", { type: "number", min: "0", "aria-label": `Monthly limit of ${m.name || m.email}`,
        value: m.monthly_limit === null ? "" : String(m.monthly_limit) });
      const set = el("button", { type: "button" }, "Set limit");
      set.addEventListener("click", () => setLimit(m.clerk_id, input.value));
      cells.push(el("td", {}, input, set));
    }
    return el("tr", {}, ...cells);
  }));
  $("org-lots").replaceChildren(...(board.lots.length ? board.lots.map((lot) => el("li", {},
    `${lot.remaining} of ${lot.amount}`, lot.description ? ` · ${lot.description}` : "")) : [el("li", {}, "No credit.")]));
}

async function setLimit(clerkId, value) {
  $("org-status").textContent = "";
  try {
    await call("ledger", `/api/org/members/${encodeURIComponent(clerkId)}/limit`, { method: "PUT",
      body: { monthly_credits: value === "" ? null : Number(value) }, headers: { "Idempotency-Key": key() } });
    $("org-status").textContent = "Limit saved.";
    await loadOrgDashboard();
  } catch (error) {
    $("org-status").textContent = `Not saved: ${error.message}`;
  }
}

// -- dashboard ---------------------------------------------------------------------------------------------

async function loadDashboard() {
  const board = await call("projections", "/api/user/dashboard");
  showBalance(board.account);
  const user = board.user;
  $("profile").replaceChildren(el("p", {}, `${user.first_name || ""} ${user.last_name || ""}`.trim() || user.email,
    ` · ${user.email}`));
  $("stat-balance").textContent = board.account.balance;
  $("stat-available").textContent = `${board.account.available} available, ${board.account.reserved} held`;
  $("stat-images").textContent = board.counts.images;
  $("stat-videos").textContent = board.counts.videos;
  $("stat-transactions").textContent = board.counts.transactions;
  $("stat-totals").textContent = `${board.totals.credits_bought} / ${board.totals.credits_spent}`;
  const spending = board.spending;
  $("stat-spending").textContent = spending.monthly_cap === null ? spending.used_this_month
    : `${spending.used_this_month} / ${spending.monthly_cap}`;
  $("stat-cap").textContent = spending.monthly_cap === null ? "used, no monthly cap" : "used of the monthly cap";
  $("activity").replaceChildren(...(board.recent_activity.length ? board.recent_activity.map((a) =>
    el("li", a.notification ? { class: "notification" } : {}, a.notification ? "⚠ " : "", a.message,
      el("small", {}, ` · ${when(a.occurred_at)}`))) : [el("li", {}, "Nothing yet.")]));
  $("lots").replaceChildren(...(board.lots.length ? board.lots.map((lot) => el("li", {},
    `${lot.remaining} of ${lot.amount}`, lot.description ? ` · ${lot.description}` : "",
    lot.expires_at ? ` · expires ${when(lot.expires_at)}` : " · never expires")) : [el("li", {}, "No credit.")]));
  $("expiring").replaceChildren(...(board.expiring_soon.length ? board.expiring_soon.map((x) =>
    el("li", {}, `${x.remaining} credits on ${when(x.expires_at)}`)) : [el("li", {}, "Nothing expires soon.")]));
  const sub = board.subscription;
  $("subscription").textContent = sub ? `${sub.plan_id || "plan"}: ${sub.status}` +
    (sub.current_period_end ? `, period ends ${when(sub.current_period_end)}` : "") : "None.";
  $("usage-chart").replaceChildren(chart(board.usage));
}

function chart(usage) {
  // Credits used per day over the last 30 days, one bar a day (every operation together).
  const days = [];
  for (let i = 29; i >= 0; i--) days.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  const perDay = Object.fromEntries(days.map((d) => [d, 0]));
  usage.forEach((u) => { if (u.day in perDay) perDay[u.day] += u.credits; });
  const top = Math.max(1, ...Object.values(perDay));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 600 140");
  svg.setAttribute("role", "img");
  const total = Object.values(perDay).reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `Credits used per day over 30 days: ${total} in all`);
  days.forEach((day, i) => {
    const height = (perDay[day] / top) * 110;
    const bar = document.createElementNS(svg.namespaceURI, "rect");
    Object.entries({ x: i * 20 + 2, y: 120 - height, width: 16, height, fill: "#0b5394" })
      .forEach(([k, v]) => bar.setAttribute(k, v));
    const title = document.createElementNS(svg.namespaceURI, "title");
    title.textContent = `${day}: ${perDay[day]} credits`;
    bar.append(title);
    svg.append(bar);
    if (i % 5 === 0) {
      const label = document.createElementNS(svg.namespaceURI, "text");
      label.setAttribute("x", i * 20); label.setAttribute("y", 135); label.textContent = day.slice(5);
      svg.append(label);
    }
  });
  return svg;
}

// -- credits -----------------------------------------------------------------------------------------------

let cursor = null;
let buying = null;

async function loadCredits(fromTop = true) {
  if (fromTop) cursor = null;
  const query = cursor ? `?cursor=${encodeURIComponent(cursor)}` : "";
  const credits = await call("projections", `${org ? "/api/org/credits" : "/api/user/credits"}${query}`);
  showBalance(credits);
  const rows = credits.history.map((e) => el("tr", {}, el("td", {}, when(e.created_at)), el("td", {}, e.type),
    el("td", {}, e.amount > 0 ? `+${e.amount}` : String(e.amount)), el("td", {}, String(e.balance_after)),
    el("td", {}, e.description + (org && e.member_id ? ` · by member ${e.member_id.slice(0, 8)}` : ""))));
  if (fromTop) $("history").replaceChildren(...rows); else $("history").append(...rows);
  cursor = credits.next_cursor;
  $("more").hidden = !cursor;
}

async function loadPackages() {
  const packages = await call("payments", "/api/credit-packages");
  $("packages").replaceChildren(...packages.map((p) => {
    const buy = el("button", { type: "button", "aria-label": `Buy ${p.name}` }, "Buy");
    buy.addEventListener("click", () => checkout(p));
    return el("div", { class: "card" }, el("h3", {}, p.name, p.popular ? " · most popular" : ""),
      el("p", { class: "figure" }, `${p.credits}`), el("p", {}, `credits for $${(p.price_cents / 100).toFixed(2)}`), buy);
  }));
  $("recharge-package").replaceChildren(...packages.map((p) => el("option", { value: p.id }, p.name)));
}

async function checkout(pack) {
  $("pay-status").textContent = "";
  try {
    buying = await call("payments", "/api/checkout", { method: "POST", body: { package_id: pack.id },
      headers: { "Idempotency-Key": key() } });
    $("pay-what").textContent = `${pack.name}: $${(pack.price_cents / 100).toFixed(2)}`;
    if (config.dev_pay) {
      $("pay").hidden = false;
      $("card-number").focus();
    } else {
      $("pay-status").textContent = "Checkout made: pay with Stripe.js using its client secret.";
    }
  } catch (error) {
    $("pay-status").textContent = `Checkout failed: ${error.message}`;
  }
}

async function pay(event) {
  event.preventDefault();
  const card = new FormData(event.target).get("card").replace(/\s+/g, "");
  $("pay-status").textContent = "Paying…";
  try {
    const state = await call("payments", "/dev/pay", { method: "POST",
      body: { transaction_id: buying.transaction_id, card_number: card } });
    $("pay").hidden = true;
    $("pay-status").textContent = state.status === "succeeded"
      ? "Paid: your credits arrive in a moment." : `Payment ${state.status}.`;
  } catch (error) {
    $("pay-status").textContent = `Payment failed: ${error.message}`;
  }
}

async function saveRecharge(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await call("payments", "/api/billing/auto-recharge", { method: "PUT", body: {
      enabled: form.get("enabled") === "on", threshold: Number(form.get("threshold")),
      package_id: form.get("package_id"), monthly_cap_cents: Number(form.get("monthly_cap_cents")),
    } });
    $("recharge-status").textContent = "Saved.";
  } catch (error) {
    $("recharge-status").textContent = `Not saved: ${error.message}`;
  }
}

// -- start -------------------------------------------------------------------------------------------------

async function start() {
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $(page === "dashboard" && org ? "org-dashboard" : page).hidden = false;
  if ($("credits-owner")) $("credits-owner").textContent = org ? "The organization's balance" : "Balance";
  await loadOrganizations();
  // A first sign-in reaches projections a moment after sync: wait for the profile to appear.
  for (let tries = 0; ; tries++) {
    try {
      if (page === "dashboard") await loadBoard();
      else { await loadPackages(); await loadCredits(); }
      break;
    } catch (error) {
      if (error.status !== 404 || tries > 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  await listen();
}

$("dev-sign-in").addEventListener("submit", signIn);
$("clerk-sign-in").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", signOut);
$("pay").addEventListener("submit", pay);
$("pay-cancel").addEventListener("click", () => { $("pay").hidden = true; });
$("auto-recharge").addEventListener("submit", saveRecharge);
$("more").addEventListener("click", () => loadCredits(false));

if (token) {
  start().catch(() => signOut());
} else {
  $("sign-in").hidden = false;
  $(config.auth_mode === "dev" ? "dev-sign-in" : "clerk-sign-in").hidden = false;
}
