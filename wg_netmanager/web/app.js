// wg_netmanager web UI: the peer table, the log and the mesh map, live over
// Server-Sent Events (/api/v1/events). No build step, no external resources.
"use strict";

const state = { status: null, mesh: null, selected: null, source: null };
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#d9822b", "#8e44ad", "#16a085", "#c0392b", "#2c3e50", "#b7950b"];
const MAX_LOG = 500;
const RELAYED_ALL_UP_TO = 30; // more nodes: relayed pairs only of the selected node

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

// --- formatting (as status_text.py) ---------------------------------------------------

function fmtMs(s) {
  if (s === null || s === undefined) return "-";
  const ms = s * 1000;
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 100) return ms.toFixed(1) + " ms";
  return ms.toFixed(0) + " ms";
}
function fmtAge(s) {
  if (s === null || s === undefined) return "-";
  s = Math.max(0, Math.floor(s));
  const p = (n) => String(n).padStart(2, "0");
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + "m " + p(s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + p(Math.floor((s % 3600) / 60)) + "m";
  return Math.floor(s / 86400) + "d " + p(Math.floor((s % 86400) / 3600)) + "h";
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  let v = n;
  for (const unit of ["B", "KiB", "MiB", "GiB"]) {
    if (v < 1024 || unit === "GiB") return unit === "B" ? v.toFixed(0) + " B" : v.toFixed(1) + " " + unit;
    v /= 1024;
  }
}
function pathKind(p) {
  if (p.path === "via") return "via";
  if (p.path === "direct") return ["lan", "nat", "static"].includes(p.kind) ? p.kind : "direct";
  return "unreachable";
}
function pathLabel(p) {
  const k = pathKind(p);
  if (k === "via") return "via " + (p.gateway_name || p.gateway || "?");
  if (k === "lan" || k === "nat") return "direct " + k.toUpperCase();
  if (k === "static") return "direct static";
  return k;
}
const ipKey = (ip) => ip.split(".").reduce((a, o) => a * 256 + Number(o), 0);

// --- the header and the peer table --------------------------------------------------

function renderStatus(doc) {
  state.status = doc;
  $("title").textContent = `${doc.name} ${doc.wg_ip} on ${doc.interface}` + (doc.is_static ? " (static)" : "");
  document.title = `${doc.name} – wg_netmanager`;
  const peers = [...doc.peers].sort((a, b) => ipKey(a.wg_ip) - ipKey(b.wg_ip));
  const direct = peers.filter((p) => p.path === "direct").length;
  $("summary").textContent =
    `up ${fmtAge(doc.uptime)} · ${peers.length} nodes · ${direct} direct · ` +
    `${peers.length - direct} via gateway · statics ${doc.statics_connected}/${doc.statics_total}` +
    (doc.visible_endpoint ? ` · visible as ${doc.visible_endpoint}` : "");
  $("peer-count").textContent = `(${peers.length})`;
  const body = $("peers").tBodies[0];
  const rows = peers.map((p) => {
    const kind = pathKind(p);
    const tr = el("tr", { "data-wg-ip": p.wg_ip, "data-path-kind": kind, title: p.reason || "" });
    const direct = p.path === "direct";
    const cells = [p.name, p.wg_ip, pathLabel(p), p.endpoint || "-", fmtMs(p.rtt), fmtAge(p.handshake_age),
      direct ? fmtBytes(p.rx_bytes) : "-", direct ? fmtBytes(p.tx_bytes) : "-", fmtAge(p.session_age)];
    cells.forEach((text, i) => {
      const td = el("td", { class: (i >= 4 ? "r" : "") + (i === 2 ? " path " + kind : "") }, text);
      tr.appendChild(td);
    });
    const action = el("td");
    if (!doc.is_static && !p.is_static && kind === "via") {
      const button = el("button", { class: "reprobe", title: "try the direct path again now" }, "retry direct");
      button.addEventListener("click", () => write(`/api/v1/peers/${p.wg_ip}/reprobe`, {}));
      action.appendChild(button);
    }
    tr.appendChild(action);
    tr.addEventListener("click", () => select(p.wg_ip));
    return tr;
  });
  body.replaceChildren(...rows);
  $("conflicts").textContent = (doc.conflicts || []).join("\n");
  renderClients(doc, peers);
}

// --- plain WireGuard clients (a static's) ------------------------------------------------

function renderClients(doc, peers) {
  $("clients-section").hidden = !doc.is_static;
  const clients = peers.filter((p) => p.client && p.path === "direct");
  $("client-count").textContent = `(${clients.length})`;
  const rows = clients.map((c) => {
    const tr = el("tr", { "data-name": c.name, "data-wg-ip": c.wg_ip });
    for (const [i, text] of [c.name, c.wg_ip, c.endpoint || "-", fmtAge(c.handshake_age),
      fmtBytes(c.rx_bytes), fmtBytes(c.tx_bytes)].entries()) {
      tr.appendChild(el("td", { class: i >= 3 ? "r" : "" }, text));
    }
    const button = el("button", { class: "remove", title: "remove this client (needs the token)" }, "remove");
    button.addEventListener("click", () => removeClient(c.name));
    const action = el("td");
    action.appendChild(button);
    tr.appendChild(action);
    return tr;
  });
  $("clients").tBodies[0].replaceChildren(...rows);
}

async function addClient(event) {
  event.preventDefault();
  $("client-error").textContent = "";
  const body = { name: $("client-name").value.trim() };
  const ip = $("client-ip").value.trim();
  if (ip) body.wg_ip = ip;
  const answer = await send("POST", "/api/v1/clients", body);
  const doc = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    $("client-error").textContent = doc.error || `error ${answer.status}`;
    return;
  }
  $("client-name").value = "";
  $("client-ip").value = "";
  // Shown once: the private key is in this page only until "Done".
  $("client-config").textContent = doc.config;
  $("client-qr").src = "data:image/svg+xml;base64," + btoa(doc.qr_svg);
  $("client-new").hidden = false;
}

function clientDone() {
  $("client-config").textContent = "";
  $("client-qr").removeAttribute("src");
  $("client-new").hidden = true;
}

async function removeClient(name) {
  $("client-error").textContent = "";
  const answer = await send("DELETE", "/api/v1/clients/" + encodeURIComponent(name));
  if (!answer.ok) {
    const doc = await answer.json().catch(() => ({}));
    $("client-error").textContent = doc.error || `error ${answer.status}`;
  }
}

// --- the mesh map -----------------------------------------------------------------------

function relayedPairs(doc) {
  // As mesh_map.relayed_pairs: every pair of up nodes without a direct link goes
  // through a's gateway for b (its exception, else its gateway), else b's for a.
  const ups = doc.nodes.filter((n) => n.up).sort((a, b) => ipKey(a.wg_ip) - ipKey(b.wg_ip));
  const direct = new Set(doc.links.map((l) => l.a + "|" + l.b));
  const exc = new Map(ups.map((n) => [n.wg_ip, new Map(n.exceptions)]));
  const gw = (n, to) => (exc.get(n.wg_ip).has(to) ? exc.get(n.wg_ip).get(to) : n.gateway);
  const out = [];
  for (let i = 0; i < ups.length; i++) {
    for (let j = i + 1; j < ups.length; j++) {
      const a = ups[i], b = ups[j];
      if (direct.has(a.wg_ip + "|" + b.wg_ip) || direct.has(b.wg_ip + "|" + a.wg_ip)) continue;
      const via = gw(a, b.wg_ip) || gw(b, a.wg_ip);
      if (via && via !== a.wg_ip && via !== b.wg_ip) out.push({ a: a.wg_ip, b: b.wg_ip, via });
    }
  }
  return out;
}

function layout(nodes) {
  const statics = nodes.filter((n) => n.is_static);
  const others = nodes.filter((n) => !n.is_static);
  const pos = new Map();
  const ring = (list, r, offset) =>
    list.forEach((n, i) => {
      const a = offset + (2 * Math.PI * i) / Math.max(1, list.length) - Math.PI / 2;
      pos.set(n.wg_ip, [r * Math.cos(a), r * Math.sin(a)]);
    });
  ring(statics, statics.length > 1 ? 110 : 0, 0);
  ring(others, 270, others.length ? Math.PI / others.length : 0);
  return pos;
}

function renderMesh(doc) {
  state.mesh = doc;
  const svg = $("map");
  const nodes = [...doc.nodes].sort((a, b) => ipKey(a.wg_ip) - ipKey(b.wg_ip));
  const pos = layout(nodes);
  const staticColour = new Map(nodes.filter((n) => n.is_static).map((n, i) => [n.wg_ip, PALETTE[i % PALETTE.length]]));
  const byIp = new Map(nodes.map((n) => [n.wg_ip, n]));
  const parts = [];
  const showAll = nodes.length <= RELAYED_ALL_UP_TO;
  for (const r of relayedPairs(doc)) {
    if (!showAll && state.selected !== r.a && state.selected !== r.b) continue;
    const [ax, ay] = pos.get(r.a), [bx, by] = pos.get(r.b), v = pos.get(r.via) || [0, 0];
    const cx = 2 * v[0] - (ax + bx) / 2, cy = 2 * v[1] - (ay + by) / 2; // the curve passes by its static
    const path = el("path", {
      class: "relayed", d: `M${ax},${ay} Q${(cx + (ax + bx) / 2) / 2},${(cy + (ay + by) / 2) / 2} ${bx},${by}`,
      stroke: staticColour.get(r.via) || "#999", "data-a": r.a, "data-b": r.b, "data-via": r.via,
    }, null, SVGNS);
    path.appendChild(el("title", {}, `${byIp.get(r.a).name} – ${byIp.get(r.b).name} via ${(byIp.get(r.via) || {}).name || r.via}`, SVGNS));
    parts.push(path);
  }
  for (const l of doc.links) {
    const [ax, ay] = pos.get(l.a) || [0, 0], [bx, by] = pos.get(l.b) || [0, 0];
    const g = el("g", { class: "link " + l.kind, "data-a": l.a, "data-b": l.b, "data-kind": l.kind }, null, SVGNS);
    g.appendChild(el("line", { x1: ax, y1: ay, x2: bx, y2: by }, null, SVGNS));
    if (l.rtt !== null && l.rtt !== undefined) {
      g.appendChild(el("text", { x: (ax + bx) / 2, y: (ay + by) / 2 - 4, class: "rtt" }, fmtMs(l.rtt), SVGNS));
    }
    g.appendChild(el("title", {}, `${(byIp.get(l.a) || {}).name} – ${(byIp.get(l.b) || {}).name}: ${l.kind}, ${fmtMs(l.rtt)}`, SVGNS));
    parts.push(g);
  }
  for (const n of nodes) {
    const [x, y] = pos.get(n.wg_ip);
    const classes = ["node", n.is_static ? "static" : "dynamic", n.up ? "up" : "down"];
    if (n.wg_ip === doc.me) classes.push("me");
    if (n.wg_ip === state.selected) classes.push("selected");
    const g = el("g", { class: classes.join(" "), transform: `translate(${x},${y})`,
      "data-wg-ip": n.wg_ip, "data-up": String(n.up), "data-name": n.name }, null, SVGNS);
    g.appendChild(el(n.is_static ? "rect" : "circle",
      n.is_static ? { x: -18, y: -18, width: 36, height: 36, rx: 6 } : { r: 18 }, null, SVGNS));
    g.appendChild(el("text", { y: 38, class: "name" }, n.name, SVGNS));
    g.appendChild(el("text", { y: 53, class: "ip" }, n.wg_ip + (n.up ? "" : " (down)"), SVGNS));
    g.addEventListener("click", () => select(n.wg_ip));
    parts.push(g);
  }
  svg.replaceChildren(...parts);
  $("map-source").textContent = doc.source
    ? (doc.source === doc.me ? "(merged here)" : `(merged by ${(byIp.get(doc.source) || {}).name || doc.source})`)
    : "(this node's own view: no static's map yet)";
}

function select(ip) {
  state.selected = state.selected === ip ? null : ip;
  if (state.mesh) renderMesh(state.mesh);
}

// --- the log --------------------------------------------------------------------------

function appendLog(entry) {
  const list = $("log");
  const time = new Date(entry.time * 1000).toTimeString().slice(0, 8);
  list.appendChild(el("li", { class: "lvl-" + entry.level.toLowerCase() }, `${time} ${entry.level.padEnd(7)} ${entry.text}`));
  while (list.childElementCount > MAX_LOG) list.firstElementChild.remove();
  const section = $("log");
  section.scrollTop = section.scrollHeight;
}

// --- connection, login, writes ------------------------------------------------------------

let source = null;

function connect() {
  if (source) source.close();
  source = new EventSource("/api/v1/events");
  source.addEventListener("status", (e) => renderStatus(JSON.parse(e.data)));
  source.addEventListener("mesh", (e) => renderMesh(JSON.parse(e.data)));
  source.addEventListener("log", (e) => appendLog(JSON.parse(e.data)));
  source.onopen = () => $("live").className = "live on";
  source.onerror = async () => {
    $("live").className = "live off";
    const answer = await fetch("/api/v1/status", { credentials: "same-origin" }).catch(() => null);
    if (answer && (answer.status === 401 || answer.status === 403)) {
      source.close();
      showLogin();
    }
  };
}

function showLogin(message = "") {
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  const answer = await fetch("/api/v1/login", {
    method: "POST", credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  $("token").value = "";
  if (answer.ok) {
    $("login").hidden = true;
    connect();
  } else {
    showLogin("wrong token");
  }
}

async function send(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const answer = await fetch(path, init);
  if (answer.status === 401 || answer.status === 403) showLogin("this needs the token");
  return answer;
}

const write = (path, body) => send("POST", path, body);

async function start() {
  $("login-form").addEventListener("submit", login);
  $("client-form").addEventListener("submit", addClient);
  $("client-done").addEventListener("click", clientDone);
  $("reload").addEventListener("click", () => write("/api/v1/reload", {}));
  $("level").addEventListener("change", (e) => {
    if (e.target.value) write("/api/v1/log-level", { level: e.target.value });
    e.target.value = "";
  });
  const answer = await fetch("/api/v1/status", { credentials: "same-origin" }).catch(() => null);
  if (answer && (answer.status === 401 || answer.status === 403)) {
    showLogin();
    return;
  }
  connect();
}

start();
