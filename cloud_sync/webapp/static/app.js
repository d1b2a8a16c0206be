// homewatt homeowner app: plain JS against the cloud's JSON API; every asset is served by
// the cloud (no CDN, no build step). The JWT lives in sessionStorage for this tab only.
"use strict";

const API = "/api/v1";
const FINAL = new Set(["executed", "rejected", "failed", "expired", "unknown"]);
const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("hw_token"), home: null, timers: [] };

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const reply = await fetch(API + path, Object.assign({}, options, { headers }));
  if (reply.status === 401) { logout("Your session ended: log in again."); throw new ApiError(401, "unauthorised"); }
  const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : await reply.text();
  if (!reply.ok) throw new ApiError(reply.status, (body && body.detail) || reply.statusText);
  return body;
}

const kwh = (v) => (Math.abs(v ?? 0) < 1 ? `${Math.round((v ?? 0) * 1000)} Wh` : `${v.toFixed(2)} kWh`);
const watts = (v) => (Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(2)} kW` : `${Math.round(v)} W`);
const money = (v, currency) => `${(v ?? 0).toFixed(2)} ${currency || ""}`.trim();
const pct = (v) => (v == null ? "-" : `${Math.round(v)} %`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- log in ------------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new FormData(event.target);
  const reply = await fetch(`${API}/auth/token`, { method: "POST", body: new URLSearchParams(form) });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) { $("login-error").textContent = body.detail || "log-in failed"; return; }
  state.token = body.access_token;
  sessionStorage.setItem("hw_token", state.token);
  await start();
}

function logout(message = "") {
  state.token = null;
  sessionStorage.removeItem("hw_token");
  state.timers.forEach(clearInterval);
  state.timers = [];
  $("app").hidden = true; $("logout").hidden = true; $("home-select").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

async function start() {
  const homes = (await api("/homes")).items;
  if (!homes.length) { $("login-error").textContent = "No home is shared with you yet."; return; }
  $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  const select = $("home-select");
  select.replaceChildren(...homes.map((h) => el("option", { value: h.id, text: h.name })));
  select.hidden = homes.length < 2;
  select.onchange = () => openHome(homes.find((h) => h.id === select.value));
  await openHome(homes[0]);
}

async function openHome(home) {
  state.home = home;
  state.timers.forEach(clearInterval);
  $("home-name").textContent = `${home.name} (${home.timezone})`;
  await Promise.all([refreshFlow(), refreshToday(), refreshMonth(), loadDevices(), loadRecommendations()]);
  state.timers = [setInterval(refreshFlow, 5000), setInterval(refreshToday, 60000)];
}

const homePath = (rest) => `/homes/${encodeURIComponent(state.home.id)}${rest}`;

// -- live power flow ----------------------------------------------------------------------

async function refreshFlow() {
  const live = await api(homePath("/live"));
  const root = $("flow");
  root.replaceChildren();
  const node = (x, y, label, value, color) => {
    root.append(svg("circle", { cx: x, cy: y, r: 34, fill: "#fff", stroke: color, "stroke-width": 4 }));
    root.append(svg("text", { x, y: y - 4, "text-anchor": "middle", "font-size": 12 }, label));
    root.append(svg("text", { x, y: y + 12, "text-anchor": "middle", "font-size": 13, "font-weight": 600,
                              "data-testid": `flow-${label.toLowerCase()}` }, value));
  };
  const line = (x1, y1, x2, y2, w, color) => root.append(svg("line", {
    x1, y1, x2, y2, stroke: color, "stroke-width": Math.max(1, Math.min(10, Math.abs(w) / 400)),
    "stroke-dasharray": w ? "" : "4 4" }));
  const grid = live.grid_w ?? 0, pv = live.pv_w ?? 0, home = live.home_w ?? 0;
  line(70, 110, 210, 110, grid, grid >= 0 ? "var(--imp)" : "var(--exp)");
  line(210, 40, 210, 110, pv, "var(--pv)");
  const devices = Object.entries(live.devices_w || {});
  devices.forEach(([id, w], i) => line(244, 110, 370, 30 + i * 40, w, "var(--use)"));
  node(70, 110, "Grid", `${grid >= 0 ? "↓" : "↑"} ${watts(Math.abs(grid))}`, "var(--imp)");
  node(210, 40, "Solar", watts(pv), "var(--pv)");
  node(210, 150, "Home", watts(home), "var(--use)");
  line(210, 110, 210, 116, home, "var(--use)");
  devices.forEach(([id, w], i) => {
    root.append(svg("text", { x: 376, y: 34 + i * 40, "font-size": 12 }, `${id} ${watts(w)}`));
  });
  $("flow-time").textContent = live.ts_ms ? `as of ${new Date(live.ts_ms).toLocaleTimeString()}` : "no readings yet";
}

// -- energy and cost ----------------------------------------------------------------------

function barChart(root, items, slots, slotOf, labelOf) {
  // one group of bars per slot (hour of the day, day of the month), empty slots left blank
  root.replaceChildren();
  const w = Number(root.viewBox.baseVal.width), h = Number(root.viewBox.baseVal.height) - 20;
  const max = Math.max(0.001, ...items.map((i) => Math.max(i.consumption_kwh, i.pv_kwh)));
  const step = w / slots, bw = Math.max(1, step / 3 - 1);
  for (let n = 0; n < slots; n++) {
    if (slots <= 31 && (n % (slots > 24 ? 5 : 3) === 0)) {
      root.append(svg("text", { x: n * step + step / 2, y: h + 14, "text-anchor": "middle", "font-size": 10 }, labelOf(n)));
    }
  }
  for (const it of items) {
    const x = slotOf(it) * step;
    const bar = (dx, v, color, name) => root.append(svg("rect", {
      x: x + dx, y: h - (v / max) * h, width: bw, height: (v / max) * h, fill: color,
      "data-kwh": v.toFixed(4), class: name }));
    bar(1, it.consumption_kwh, "var(--use)", "use");
    bar(1 + bw, it.pv_kwh, "var(--pv)", "pv");
    bar(1 + 2 * bw, it.grid_import_kwh, "var(--imp)", "imp");
  }
}

async function refreshToday() {
  const [energy, costs] = await Promise.all([api(homePath("/energy?period=today&resolution=hour")),
                                             api(homePath("/costs?period=today"))]);
  const t = energy.totals;
  $("today-consumption").textContent = kwh(t.consumption_kwh);
  $("today-pv").textContent = kwh(t.pv_kwh);
  $("today-import").textContent = kwh(t.grid_import_kwh);
  $("today-export").textContent = kwh(t.grid_export_kwh);
  $("today-cost").textContent = costs.tariff ? money(costs.total.net_cost, costs.currency) : "no tariff set";
  barChart($("today-chart"), energy.items, 24, (it) => Number(it.start.slice(11, 13)), (n) => `${n}h`);
}

async function refreshMonth() {
  const [energy, costs, insights] = await Promise.all([
    api(homePath("/energy?period=month&resolution=day")), api(homePath("/costs?period=month")),
    api(homePath("/insights?period=month"))]);
  $("month-consumption").textContent = kwh(energy.totals.consumption_kwh);
  $("month-cost").textContent = costs.tariff ? money(costs.total.net_cost, costs.currency) : "no tariff set";
  $("month-autarky").textContent = pct(insights.self_sufficiency_pct);
  barChart($("month-chart"), energy.items, 31, (it) => Number(it.start.slice(8, 10)) - 1, (n) => `${n + 1}`);
}

// -- devices and commands -----------------------------------------------------------------

async function command(device, action, params, statusNode) {
  const key = crypto.randomUUID();  // one key per user action: a retry of it is the same command
  statusNode.className = "status"; statusNode.textContent = "sending";
  const body = JSON.stringify({ action, params, ttl_s: 60 });
  let created;
  for (let attempt = 0; ; attempt++) {
    try {
      created = await api(`/devices/${encodeURIComponent(device.id)}/commands`, {
        method: "POST", body, headers: { "Content-Type": "application/json", "Idempotency-Key": key } });
      break;
    } catch (err) {
      if (attempt >= 2 || (err.status && err.status < 500 && err.status !== 429)) {
        statusNode.className = "status failed"; statusNode.textContent = err.message; return;
      }
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
    }
  }
  let current = created;
  while (!FINAL.has(current.status)) {
    statusNode.textContent = current.status;
    await new Promise((r) => setTimeout(r, 500));
    current = await api(`/devices/${encodeURIComponent(device.id)}/commands/${current.command_id}`);
  }
  statusNode.className = `status ${current.status}`;
  statusNode.textContent = current.reason ? `${current.status}: ${current.reason}` : current.status;
}

async function loadDevices() {
  const devices = (await api(homePath("/devices"))).items;
  const list = $("devices");
  list.replaceChildren();
  for (const device of devices.filter((d) => d.kind === "actuator")) {
    const status = el("span", { class: "status", "data-testid": `status-${device.id}`, text: "idle" });
    const row = el("li", { "data-testid": `device-${device.id}` },
      el("span", { class: "name", text: device.name || device.local_id }));
    const caps = new Set(device.capabilities);
    if (caps.has("switch_on")) row.append(el("button", { type: "button", text: "On", "data-testid": `on-${device.id}`,
      onclick: () => command(device, "switch_on", {}, status) }));
    if (caps.has("switch_off")) row.append(el("button", { type: "button", text: "Off", "data-testid": `off-${device.id}`,
      onclick: () => command(device, "switch_off", {}, status) }));
    if (caps.has("set_setpoint")) {
      const input = el("input", { type: "number", step: "0.5", value: "45", "aria-label": "setpoint",
                                  "data-testid": `setpoint-${device.id}` });
      row.append(input, el("button", { type: "button", text: "Set", "data-testid": `set-${device.id}`,
        onclick: () => command(device, "set_setpoint", { value: Number(input.value) }, status) }));
    }
    row.append(status);
    list.append(row);
  }
  if (!list.children.length) list.append(el("li", { class: "muted", text: "No controllable devices." }));
}

// -- recommendations ----------------------------------------------------------------------

async function loadRecommendations() {
  const insights = await api(homePath("/insights?period=last_28_days"));
  const list = $("recommendations");
  list.replaceChildren();
  for (const rec of insights.recommendations) {
    const status = el("span", { class: "status", text: rec.accepted ? "scheduled" : "" });
    const accept = el("button", { type: "button", class: "primary", text: "Accept", "data-testid": `accept-${rec.id}`,
      onclick: async () => {
        try {
          const sched = await api(homePath(`/recommendations/${rec.id}/accept`), { method: "POST" });
          status.textContent = `scheduled ${sched.on_at}-${sched.off_at} daily`;
          accept.disabled = true;
        } catch (err) { status.textContent = err.message; }
      } });
    list.append(el("li", { "data-testid": `rec-${rec.id}` },
      el("strong", { text: `${rec.label}: save ${money(rec.saving_per_month, rec.currency)} a month` }),
      accept, status, el("span", { class: "why", text: rec.explanation })));
  }
  if (!list.children.length) list.append(el("li", { class: "muted", text: "Nothing to change right now." }));
}

$("login-form").addEventListener("submit", (e) => login(e).catch((err) => { $("login-error").textContent = err.message; }));
$("logout").addEventListener("click", () => logout());
if (state.token) start().catch(() => logout());
