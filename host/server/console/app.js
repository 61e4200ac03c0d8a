// wasmdm console: a hand-written single-page front end over the server's JSON
// API (the same API `wasmdm ctl` uses). No framework, no build step: the
// server embeds this file and device.js (the device page). Pages are hash
// routes (#/devices, #/devices/EP, #/files, #/groups, #/wizard, #/campaigns,
// #/campaigns/ID); live data comes from the server-sent events of
// /api/events, which the server batches.
//
// Every text from the server is put into the page as text (never as HTML).
"use strict";

const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

// ------------------------------------------------------------------ helpers

/** Builds an element: h("a", {href: "#"}, "text", child...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An API error with the server's message. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the JSON API; changes carry the session's CSRF token. */
async function api(method, path, body, raw) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = CSRF;
  let payload;
  if (raw !== undefined) payload = raw;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "connection to the server lost (" + e.message + ")");
  }
  if (r.status === 401) {
    location.href = "/login";
    throw new ApiError(401, "signed out");
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = (json && json.error) || text || r.statusText;
    throw new ApiError(r.status, msg + " (HTTP " + r.status + ")");
  }
  return json;
}

const enc = encodeURIComponent;

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(ms).toLocaleString();
}
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
const size = (n) => (n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B");

/** Update State names, SwMgmt §6 resource 7. */
const UPDATE_STATE = { 0: "INITIAL", 1: "DOWNLOAD STARTED", 2: "DOWNLOADED", 3: "DELIVERED", 4: "INSTALLED" };
/** Update Result names, SwMgmt §6 resource 9 (59 from the OMA registry). */
const UPDATE_RESULT = {
  0: "Initial", 1: "Downloading", 2: "Software successfully installed",
  3: "Successfully Downloaded and package integrity verified", 50: "Not enough storage",
  51: "Out of memory", 52: "Connection lost", 53: "Package integrity check failure",
  54: "Unsupported package type", 56: "Invalid URI", 57: "Device defined update error",
  58: "Software installation failure", 59: "Uninstallation failure during forUpdate",
};
const stateName = (v) => (v === null || v === undefined ? "—" : v + " " + (UPDATE_STATE[v] || "unknown"));
const resultName = (v, name) => (v === null || v === undefined ? "—" : v + " " + (name || UPDATE_RESULT[v] || "Reserved"));

function showValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object") return v.hex !== undefined ? "0x" + v.hex : JSON.stringify(v);
  return String(v);
}

/** A status line next to an action: busy, ok or the API's error. */
function statusSpan(id) {
  return h("span", { class: "action-status", id, role: "status", "aria-live": "polite" });
}
function setStatus(el, kind, text) {
  if (!el) return;
  el.className = "action-status " + kind;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.textContent = text;
}
/** Runs `fn` for a button, showing progress and errors in `status`. */
async function act(button, status, fn) {
  if (button) button.disabled = true;
  setStatus(status, "busy", "working…");
  try {
    const out = await fn();
    setStatus(status, "ok", typeof out === "string" ? out : "done");
    return out;
  } catch (e) {
    setStatus(status, "error", e.message);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function field(label, input, hint) {
  const id = input.id || "f-" + Math.random().toString(36).slice(2);
  input.id = id;
  const err = h("span", { class: "field-error", id: id + "-error", role: "alert" });
  input.setAttribute("aria-describedby", id + "-error");
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { class: "hint" }, hint) : null, err);
}
function fieldError(input, text) {
  const err = document.getElementById(input.id + "-error");
  if (err) err.textContent = text || "";
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

// --------------------------------------------------------------- live data

const live = { devices: new Map(), campaigns: new Map(), ready: false, onChange: null };
/** Counters the benchmark (tests/bench/console_bench.py) reads: events received, table renders. */
window.consoleStats = { events: { devices: 0, campaigns: 0 }, changed: 0, renders: 0, renderMsMax: 0, renderMsTotal: 0, firstRender: null };
let source = null;

function connect() {
  source = new EventSource("/api/events");
  const status = document.getElementById("live");
  source.addEventListener("open", () => { status.textContent = "live"; status.className = "live on"; });
  source.addEventListener("error", () => {
    status.textContent = "connection lost, retrying…";
    status.className = "live off";
  });
  source.addEventListener("devices", (e) => {
    const m = JSON.parse(e.data);
    consoleStats.events.devices += 1;
    consoleStats.changed += m.changed.length;
    if (m.full) live.devices.clear();
    for (const d of m.changed) live.devices.set(d.endpoint, d);
    for (const ep of m.removed) live.devices.delete(ep);
    live.ready = true;
    notify("devices");
  });
  source.addEventListener("campaigns", (e) => {
    const m = JSON.parse(e.data);
    consoleStats.events.campaigns += 1;
    if (m.full) live.campaigns.clear();
    for (const c of m.changed) live.campaigns.set(c.id, c);
    notify("campaigns", m.changed.map((c) => c.id));
  });
}

let pending = null;
/** Coalesces live updates into one page refresh per animation frame. */
function notify(kind, ids) {
  pending = pending || { kinds: new Set(), ids: new Set() };
  pending.kinds.add(kind);
  for (const i of ids || []) pending.ids.add(i);
  requestAnimationFrame(() => {
    if (!pending) return;
    const p = pending;
    pending = null;
    if (live.onChange) live.onChange(p.kinds, p.ids);
  });
}

// ------------------------------------------------------------------ router

const main = () => document.getElementById("main");

function route() {
  const hash = location.hash.replace(/^#\/?/, "") || "devices";
  const [path, query] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  live.onChange = null;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === parts[0]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const m = main();
  m.replaceChildren();
  const page = {
    devices: () => (parts[1] ? devicePage(parts[1], parts[2] || "overview") : devicesPage()),
    files: filesPage,
    groups: groupsPage,
    wizard: () => wizardPage(params),
    campaigns: () => (parts[1] ? campaignPage(parts[1]) : campaignsPage()),
  }[parts[0]];
  (page || devicesPage)();
}

// ----------------------------------------------------------------- devices

const deviceView = { sort: "endpoint", dir: 1, filter: "", selected: new Set(), page: 0 };
/** Rows per page of the devices table: a page of a thousand rows costs the
 * browser a layout of hundreds of ms on every live update. */
const DEVICE_PAGE = 100;

function softwareText(d) {
  const rows = (d.software && d.software.rows) || [];
  return rows
    .filter((r) => r.name)
    .map((r) => r.name + " " + (r.version || "?") + (r.active ? " (active)" : r.active === false ? " (inactive)" : ""))
    .join(", ");
}

function devicesPage() {
  const m = main();
  const search = h("input", { type: "search", id: "device-search", placeholder: "endpoint, label, group, package", value: deviceView.filter });
  const count = h("p", { class: "count", id: "device-count", "aria-live": "polite" });
  const tbody = h("tbody", { id: "device-rows" });
  const cols = [["endpoint", "Endpoint"], ["status", "Status"], ["security", "Security"], ["labels", "Labels"], ["groups", "Groups"], ["software", "Software"]];
  const headRow = h("tr", {}, h("th", { scope: "col" }, h("input", { type: "checkbox", id: "select-all", "aria-label": "Select all devices matching the search", onchange: (e) => {
    for (const ep of shown()) e.target.checked ? deviceView.selected.add(ep) : deviceView.selected.delete(ep);
    renderRows();
  } })));
  for (const [key, label] of cols) {
    const th = h("th", { scope: "col", "aria-sort": deviceView.sort === key ? (deviceView.dir > 0 ? "ascending" : "descending") : "none" },
      h("button", { class: "sort", type: "button", onclick: () => {
        deviceView.dir = deviceView.sort === key ? -deviceView.dir : 1;
        deviceView.sort = key;
        for (const t of headRow.querySelectorAll("th[aria-sort]")) t.setAttribute("aria-sort", "none");
        th.setAttribute("aria-sort", deviceView.dir > 0 ? "ascending" : "descending");
        renderRows();
      } }, label));
    headRow.append(th);
  }
  const labelInput = h("input", { id: "bulk-label", placeholder: "label" });
  const groupInput = h("input", { id: "bulk-group", placeholder: "group name" });
  const bulkStatus = statusSpan("bulk-status");
  const bulk = h("form", { class: "bulk", "aria-label": "Selected devices", onsubmit: (e) => e.preventDefault() },
    h("span", { id: "selected-count" }),
    field("Add label", labelInput),
    h("button", { type: "button", id: "bulk-label-btn", onclick: (e) => act(e.target, bulkStatus, () => addLabel(labelInput)) }, "Label selected"),
    field("Add to group", groupInput),
    h("button", { type: "button", id: "bulk-group-btn", onclick: (e) => act(e.target, bulkStatus, () => addToGroup(groupInput)) }, "Add selected to group"),
    h("button", { type: "button", id: "bulk-read-btn", onclick: (e) => act(e.target, bulkStatus, readSoftware) }, "Read software of selected"),
    bulkStatus);
  const pager = h("nav", { class: "pager", id: "device-pager", "aria-label": "Device pages" });
  m.append(h("h1", {}, "Devices"), field("Search devices", search), count, bulk,
    h("div", { class: "table-wrap" }, h("table", { id: "devices-table" }, h("thead", {}, headRow), tbody)), pager);

  function key(d) {
    switch (deviceView.sort) {
      case "status": return (d.online ? "0" : "1") + String(1e15 - (d.last_seen || 0)).padStart(16, "0");
      case "labels": return d.labels.join(",");
      case "groups": return d.groups.join(",");
      case "software": return softwareText(d);
      case "security": return d.security;
      default: return d.endpoint;
    }
  }
  function matches(d, f) {
    if (!f) return true;
    return [d.endpoint, d.security, ...d.labels, ...d.groups, softwareText(d)].some((s) => s.toLowerCase().includes(f));
  }
  function shown() {
    const f = deviceView.filter.toLowerCase();
    return [...live.devices.values()].filter((d) => matches(d, f)).map((d) => d.endpoint);
  }
  function renderRows() {
    const t0 = performance.now();
    const f = deviceView.filter.toLowerCase();
    const list = [...live.devices.values()].filter((d) => matches(d, f));
    const keyed = list.map((d) => [key(d), d]);
    keyed.sort((a, b) => (a[0] < b[0] ? -deviceView.dir : a[0] > b[0] ? deviceView.dir : 0));
    const pages = Math.max(1, Math.ceil(keyed.length / DEVICE_PAGE));
    deviceView.page = Math.min(deviceView.page, pages - 1);
    const first = deviceView.page * DEVICE_PAGE;
    const frag = document.createDocumentFragment();
    for (const [, d] of keyed.slice(first, first + DEVICE_PAGE)) {
      const ep = d.endpoint;
      frag.append(h("tr", { "data-endpoint": ep, class: d.online ? "online" : "offline" },
        h("td", { class: "select" }, h("input", { type: "checkbox", "aria-label": "Select " + ep, checked: deviceView.selected.has(ep), onchange: (e) => {
          e.target.checked ? deviceView.selected.add(ep) : deviceView.selected.delete(ep);
          updateSelected();
        } })),
        h("td", { class: "ep" }, h("a", { href: "#/devices/" + enc(ep) }, ep)),
        h("td", { "data-label": "Status" }, h("span", { class: "badge " + (d.online ? "ok" : "muted") }, d.online ? "online" : "offline"), " ", h("small", {}, "seen " + ago(d.last_seen))),
        h("td", { "data-label": "Security" }, d.security),
        h("td", { "data-label": "Labels" }, d.labels.join(", ")),
        h("td", { "data-label": "Groups" }, d.groups.join(", ")),
        h("td", { "data-label": "Software" }, softwareText(d) || (d.software ? "none" : "not read yet"))));
    }
    tbody.replaceChildren(frag);
    const go = (p) => () => { deviceView.page = p; renderRows(); };
    pager.replaceChildren(
      h("button", { type: "button", id: "device-prev", disabled: deviceView.page === 0, onclick: go(deviceView.page - 1) }, "Previous"),
      ` rows ${keyed.length ? first + 1 : 0}–${Math.min(keyed.length, first + DEVICE_PAGE)} of ${keyed.length} (page ${deviceView.page + 1} of ${pages}) `,
      h("button", { type: "button", id: "device-next", disabled: deviceView.page >= pages - 1, onclick: go(deviceView.page + 1) }, "Next"));
    const online = list.filter((d) => d.online).length;
    count.textContent = live.ready ? `${list.length} of ${live.devices.size} devices shown, ${online} online` : "loading…";
    updateSelected();
    const ms = performance.now() - t0;
    consoleStats.renders += 1;
    consoleStats.renderMsMax = Math.max(consoleStats.renderMsMax, ms);
    consoleStats.renderMsTotal += ms;
    if (live.ready && consoleStats.firstRender === null) {
      // Time since navigation start when the table first holds the devices.
      consoleStats.firstRender = { at: performance.now(), rows: list.length };
      performance.mark("devices-first-render");
      const fr = consoleStats.firstRender;
      requestAnimationFrame(() => { fr.nextFrame = performance.now(); });
    }
  }
  function updateSelected() {
    document.getElementById("selected-count").textContent = deviceView.selected.size + " selected";
    const all = shown();
    const box = document.getElementById("select-all");
    if (box) box.checked = all.length > 0 && all.every((ep) => deviceView.selected.has(ep));
  }
  search.addEventListener("input", () => { deviceView.filter = search.value; deviceView.page = 0; renderRows(); });
  renderRows();
  live.onChange = (kinds) => { if (kinds.has("devices")) renderRows(); };
}

/** Reads /9 of the selected devices (four at a time); the table fills in live. */
async function readSoftware() {
  const eps = [...deviceView.selected];
  if (!eps.length) throw new Error("select devices first");
  const failed = [];
  const next = async () => {
    for (let ep = eps.shift(); ep !== undefined; ep = eps.shift()) {
      try { await api("GET", "/api/console/devices/" + enc(ep) + "/software"); } catch (e) { failed.push(ep + ": " + e.message); }
    }
  };
  const n = deviceView.selected.size;
  await Promise.all([next(), next(), next(), next()]);
  if (failed.length) throw new Error(`${failed.length} of ${n} failed: ${failed.slice(0, 3).join("; ")}`);
  return `read the software of ${n} device(s)`;
}

async function addLabel(input) {
  const label = input.value.trim();
  if (!label) { fieldError(input, "type a label"); throw new Error("no label"); }
  if (!deviceView.selected.size) throw new Error("select devices first");
  fieldError(input, "");
  for (const ep of deviceView.selected) {
    const d = live.devices.get(ep);
    const labels = [...new Set([...(d ? d.labels : []), label])];
    await api("PUT", "/api/devices/" + enc(ep) + "/labels", labels);
  }
  return `labelled ${deviceView.selected.size} device(s) "${label}"`;
}

async function addToGroup(input) {
  const name = input.value.trim();
  if (!name) { fieldError(input, "type a group name"); throw new Error("no group"); }
  if (!deviceView.selected.size) throw new Error("select devices first");
  fieldError(input, "");
  let g = { endpoints: [], labels: [] };
  try { g = await api("GET", "/api/groups/" + enc(name)); } catch (e) { if (e.status !== 404) throw e; }
  const endpoints = [...new Set([...(g.endpoints || []), ...deviceView.selected])];
  try {
    await api("PUT", "/api/groups/" + enc(name), { endpoints, labels: g.labels || [] });
  } catch (e) { fieldError(input, e.message); throw e; }
  return `group ${name}: ${endpoints.length} explicit member(s)`;
}

// ------------------------------------------------------------------- files

async function loadFiles() {
  return api("GET", "/api/console/files");
}

function fileOption(f) {
  const mf = f.manifest || {};
  return h("option", { value: f.sha256 }, `${f.name} — ${mf.name || "?"} ${mf.version || ""} (${f.sha256.slice(0, 12)})`);
}

/** The upload form of the guide: file, name, description, retention. */
function uploadForm(onSaved) {
  const file = h("input", { type: "file", id: "upload-file", accept: ".wdm,application/gzip,application/octet-stream" });
  const name = h("input", { id: "upload-name", maxlength: 255 });
  const desc = h("input", { id: "upload-description" });
  const st = statusSpan("upload-status");
  file.addEventListener("change", () => { if (file.files[0] && !name.value) name.value = file.files[0].name; });
  const keep = [["forever", "Keep forever", ""], ["1d", "1 day", 86400], ["7d", "7 days", 604800], ["30d", "30 days", 2592000], ["90d", "90 days", 7776000]];
  const radios = h("fieldset", { class: "retention" }, h("legend", {}, "Keep the file"),
    keep.map(([k, label, secs], i) => h("label", {}, h("input", { type: "radio", name: "retention", value: secs, id: "retain-" + k, checked: i === 0 }), " " + label)));
  const form = h("form", { class: "upload", id: "upload-form", novalidate: true, onsubmit: (e) => {
    e.preventDefault();
    act(e.submitter, st, async () => {
      const f = file.files[0];
      if (!f) { fieldError(file, "choose a file"); throw new Error("no file chosen"); }
      fieldError(file, "");
      const n = name.value.trim() || f.name;
      const secs = form.querySelector("input[name=retention]:checked").value;
      // The API refuses a file that is not a package before storing it.
      let q = "?require=package&name=" + enc(n);
      if (desc.value.trim()) q += "&description=" + enc(desc.value.trim());
      if (secs) q += "&retain_secs=" + secs;
      let r;
      try {
        r = await api("POST", "/api/files" + q, undefined, f);
      } catch (err) { fieldError(file, err.message); throw err; }
      file.value = ""; name.value = ""; desc.value = "";
      if (onSaved) await onSaved(r);
      return "saved " + n + " (" + r.sha256.slice(0, 12) + ")";
    });
  } }, field("Package file (.wdm)", file), field("Name", name, "leave empty to use the file's name"),
    field("Description (optional)", desc), radios, h("button", { type: "submit", id: "upload-save" }, "Save"), st);
  return form;
}

async function filesPage() {
  const m = main();
  const st = statusSpan("files-status");
  const tbody = h("tbody", { id: "file-rows" });
  m.append(h("h1", {}, "Software files"), st,
    h("div", { class: "table-wrap" }, h("table", { id: "files-table" },
      h("thead", {}, h("tr", {}, ["Name", "Package", "Size", "sha256", "Signature", "Components", "In use by", "Uploaded", "Kept until", ""].map((c) => h("th", { scope: "col" }, c)))), tbody)),
    h("h2", {}, "Upload a file"), uploadForm(() => load()));
  async function load() {
    const files = await act(null, st, loadFiles);
    if (!files) return;
    setStatus(st, "ok", files.length + " file(s)");
    tbody.replaceChildren(...files.map((f) => {
      const mf = f.manifest || {};
      const rs = statusSpan();
      return h("tr", { "data-sha": f.sha256 },
        h("td", {}, f.name, f.description ? h("div", { class: "hint" }, f.description) : null),
        h("td", {}, mf.error ? h("span", { class: "error" }, "not a package: " + mf.error) : `${mf.name} ${mf.version}`),
        h("td", {}, size(f.size)), h("td", { class: "mono", title: f.sha256 }, f.sha256.slice(0, 16) + "…"),
        h("td", {}, mf.signature ? mf.signature.status + (mf.signature.key ? " (" + mf.signature.key.slice(0, 16) + ")" : "") : "—",
          mf.clean === false ? h("div", { class: "error" }, "digest mismatch inside") : null),
        h("td", {}, (mf.components || []).map((c) => h("div", {}, `${c.id} ${c.version} (${c.world})`))),
        h("td", {}, f.used_by.length ? f.used_by.map((c) => h("div", {}, h("a", { href: "#/campaigns/" + c.id }, c.id), " " + c.status)) : "not used"),
        h("td", {}, when(f.uploaded_at)), h("td", {}, f.retain_until ? when(f.retain_until) : "forever"),
        h("td", {}, h("button", { type: "button", class: "delete", "aria-label": "Delete " + f.name, onclick: (e) => act(e.target, rs, async () => {
          if (!confirm("Delete " + f.name + "?")) throw new Error("not deleted");
          await api("DELETE", "/api/files/" + f.sha256);
          load();
          return "deleted";
        }) }, "Delete"), rs));
    }));
    if (!files.length) tbody.append(h("tr", {}, h("td", { colspan: 10 }, "No files yet.")));
  }
  load();
}

// ------------------------------------------------------------------ groups

async function groupsPage() {
  const m = main();
  const st = statusSpan("groups-status");
  const list = h("div", { id: "group-list" });
  const name = h("input", { id: "group-name", "aria-required": "true" });
  const labels = h("input", { id: "group-labels", placeholder: "blue, lab" });
  const eps = h("input", { id: "group-endpoints", placeholder: "dev-1, dev-2" });
  const fst = statusSpan("group-save-status");
  const split = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
  m.append(h("h1", {}, "Groups"),
    h("form", { id: "group-form", novalidate: true, onsubmit: (e) => {
      e.preventDefault();
      act(e.submitter, fst, async () => {
        if (!name.value.trim()) { fieldError(name, "type a group name"); throw new Error("no name"); }
        try {
          await api("PUT", "/api/groups/" + enc(name.value.trim()), { labels: split(labels.value), endpoints: split(eps.value) });
        } catch (err) { fieldError(name, err.message); throw err; }
        fieldError(name, "");
        load();
        return "saved group " + name.value.trim();
      });
    } }, h("h2", {}, "Create or replace a group"), field("Name", name), field("Member labels (comma-separated)", labels),
      field("Member endpoints (comma-separated)", eps), h("button", { type: "submit", id: "group-save" }, "Save group"), fst),
    h("h2", {}, "Groups"), st, list);
  async function load() {
    const groups = await act(null, st, () => api("GET", "/api/groups"));
    if (!groups) return;
    setStatus(st, "ok", groups.length + " group(s)");
    const full = await Promise.all(groups.map((g) => api("GET", "/api/groups/" + enc(g.name)).catch(() => g)));
    list.replaceChildren(...full.map((g) => {
      const rs = statusSpan();
      return h("section", { class: "card group", "data-group": g.name },
        h("h3", {}, g.name),
        h("p", {}, "By label: " + (g.labels.join(", ") || "—") + " · explicit: " + (g.endpoints.join(", ") || "—")),
        h("p", {}, "Members (" + (g.members || []).length + "): ", (g.members || []).map((ep, i) => [i ? ", " : "", h("a", { href: "#/devices/" + enc(ep) }, ep)])),
        h("p", { class: "actions" },
          h("a", { class: "button", href: "#/wizard?group=" + enc(g.name) + "&op=install" }, "Install software"), " ",
          h("a", { class: "button", href: "#/wizard?group=" + enc(g.name) + "&op=upgrade" }, "Upgrade"), " ",
          h("button", { type: "button", onclick: () => { name.value = g.name; labels.value = g.labels.join(", "); eps.value = g.endpoints.join(", "); name.focus(); } }, "Edit"), " ",
          h("button", { type: "button", class: "delete", onclick: (e) => act(e.target, rs, async () => {
            if (!confirm("Delete group " + g.name + "?")) throw new Error("not deleted");
            await api("DELETE", "/api/groups/" + enc(g.name));
            load();
            return "deleted";
          }) }, "Delete"), rs));
    }));
    if (!full.length) list.append(h("p", {}, "No groups yet."));
  }
  load();
}

// ------------------------------------------------------------------ wizard

/** The upgrade wizard of the group-upgrade guide, step by step. */
async function wizardPage(params) {
  const m = main();
  const op = params.get("op") === "install" ? "install" : "upgrade";
  const w = { op, group: params.get("group") || "", package: "", version: "", file: "" };
  const title = h("h1", {}, op === "install" ? "Install software on a group" : "Upgrade software on a group");
  const stepBox = h("section", { id: "wizard-step" });
  m.append(title, h("p", {}, h("a", { href: "#/wizard?op=" + (op === "install" ? "upgrade" : "install") + (w.group ? "&group=" + enc(w.group) : "") }, op === "install" ? "Upgrade instead" : "Install instead")), stepBox);
  let groups = [];
  try { groups = await api("GET", "/api/groups"); } catch (e) { stepBox.append(h("p", { class: "error", role: "alert" }, e.message)); return; }

  function step1() {
    const group = h("select", { id: "wizard-group", "aria-required": "true" }, h("option", { value: "" }, "— choose a group —"), groups.map((g) => h("option", { value: g.name, selected: g.name === w.group }, g.name)));
    const pkg = h("input", { id: "wizard-package", "aria-required": "true", value: w.package, autocomplete: "off" });
    const ver = h("input", { id: "wizard-version", value: w.version, autocomplete: "off" });
    stepBox.replaceChildren(h("h2", {}, "Step 1 of 2: group and package"),
      h("form", { id: "wizard-step1", novalidate: true, onsubmit: (e) => {
        e.preventDefault();
        let bad = false;
        if (!group.value) { fieldError(group, "choose a group"); bad = true; } else fieldError(group, "");
        if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(pkg.value.trim())) { fieldError(pkg, "a package name: lower-case letters, digits, '.', '-', '_'"); bad = true; } else fieldError(pkg, "");
        if (bad) return;
        w.group = group.value; w.package = pkg.value.trim(); w.version = ver.value.trim();
        step2();
      } }, field("Group", group), field("Package name", pkg),
        op === "upgrade" ? field("Package version (optional)", ver, "Otherwise all packages that have the same name will be upgraded.") : null,
        h("button", { type: "submit", id: "wizard-next" }, "Next")));
    (w.group ? pkg : group).focus();
  }

  async function step2() {
    let files = [];
    const fileSel = h("select", { id: "wizard-file", "aria-required": "true" });
    const refreshFiles = async (pick) => {
      files = await loadFiles();
      const fit = files.filter((f) => !f.manifest || !f.manifest.name || f.manifest.name === w.package);
      fileSel.replaceChildren(h("option", { value: "" }, "— choose a file —"), ...fit.map(fileOption));
      if (pick) fileSel.value = pick;
      else if (fit.length === 1) fileSel.value = fit[0].sha256;
    };
    const uploadBox = h("div", { id: "wizard-upload", hidden: true }, uploadForm(async (r) => { await refreshFiles(r.sha256); uploadBox.hidden = true; preview(); }));
    const timeout = h("input", { id: "wizard-timeout", type: "number", min: 1, value: 300, "aria-required": "true" });
    const delivery = h("select", { id: "wizard-delivery" }, h("option", { value: "pull" }, "Pull (the device downloads from the Package URI)"), h("option", { value: "push" }, "Push (the server writes the package, Block1)"));
    const protocol = h("select", { id: "wizard-protocol" }, h("option", { value: "coap" }, "CoAP"), h("option", { value: "http" }, "HTTP"));
    const baseUri = h("input", { id: "wizard-base-uri", placeholder: "the server's own address", autocomplete: "off" });
    const useQuota = h("input", { type: "checkbox", id: "wizard-use-quota" });
    const quota = h("input", { id: "wizard-quota", type: "number", min: 1, value: 10, disabled: true });
    useQuota.addEventListener("change", () => { quota.disabled = !useQuota.checked; preview(); });
    const schedule = h("select", { id: "wizard-schedule" },
      h("option", { value: "now" }, "always (now; offline devices when they register)"),
      h("option", { value: "at" }, "at a time"),
      h("option", { value: "next_registration" }, "when each device next registers"));
    const at = h("input", { id: "wizard-at", type: "datetime-local" });
    const atField = field("Start at", at);
    atField.hidden = true;
    schedule.addEventListener("change", () => { atField.hidden = schedule.value !== "at"; preview(); });
    const activate = h("input", { type: "checkbox", id: "wizard-activate", checked: true });
    const previewBox = h("p", { id: "wizard-preview", class: "preview", "aria-live": "polite" });
    const st = statusSpan("wizard-status");
    delivery.addEventListener("change", () => { protocol.disabled = baseUri.disabled = delivery.value === "push"; });
    fileSel.addEventListener("change", preview);

    async function preview() {
      try {
        const g = await api("GET", "/api/groups/" + enc(w.group));
        const members = g.members || [];
        const online = members.filter((ep) => (live.devices.get(ep) || {}).online).length;
        const known = members.filter((ep) => ((live.devices.get(ep) || {}).software || { rows: [] }).rows.some((r) => r.name === w.package && (!w.version || r.version === w.version))).length;
        const verb = op === "install" ? "install" : "upgrade";
        let text = `This will ${verb} ${w.package}${w.version ? " " + w.version : ""} on ${members.length} device(s) of group ${w.group} (${online} online now)`;
        if (op === "upgrade") text += `; ${known} of them are known to have ${w.package}${w.version ? " " + w.version : ""} (devices without it are skipped)`;
        if (useQuota.checked) text += `; at most ${quota.value} at once`;
        previewBox.textContent = text + ".";
        previewBox.dataset.count = members.length;
      } catch (e) { previewBox.textContent = "Preview unavailable: " + e.message; }
    }

    stepBox.replaceChildren(h("h2", {}, "Step 2 of 2: file and delivery"),
      h("p", {}, `Group ${w.group} · package ${w.package}${w.version ? " " + w.version : ""} `, h("button", { type: "button", class: "link", onclick: step1 }, "Back")),
      h("form", { id: "wizard-step2", novalidate: true, onsubmit: (e) => { e.preventDefault(); act(e.submitter, st, start); } },
        field("Software file", fileSel),
        h("p", {}, h("button", { type: "button", id: "wizard-upload-toggle", onclick: () => { uploadBox.hidden = !uploadBox.hidden; } }, "Upload file")),
        uploadBox,
        field("Upgrade timeout in seconds", timeout),
        field("Image delivery method", delivery),
        field("Image delivery protocol", protocol),
        field("Base URI", baseUri, "empty: the server's own CoAP or HTTP address"),
        h("div", { class: "field check" }, useQuota, h("label", { for: "wizard-use-quota" }, "Use quota")), field("Quota (devices at once)", quota),
        field("Select schedule", schedule), atField,
        op === "install" ? h("div", { class: "field check" }, activate, h("label", { for: "wizard-activate" }, "Activate after installing")) : null,
        previewBox,
        h("button", { type: "submit", id: "wizard-start", class: "primary" }, op === "install" ? "Install" : "Upgrade"), st));
    try { await refreshFiles(); } catch (e) { fieldError(fileSel, e.message); }
    preview();
    fileSel.focus();

    async function start() {
      let bad = false;
      if (!fileSel.value) { fieldError(fileSel, "choose a file, or upload one"); bad = true; } else fieldError(fileSel, "");
      const t = parseInt(timeout.value, 10);
      if (!(t > 0)) { fieldError(timeout, "a positive number of seconds"); bad = true; } else fieldError(timeout, "");
      let sched = { kind: schedule.value };
      if (schedule.value === "at") {
        const ms = at.value ? new Date(at.value).getTime() : NaN;
        if (!(ms > 0)) { fieldError(at, "pick a date and time"); bad = true; } else { fieldError(at, ""); sched = { kind: "at", unix_ms: ms }; }
      }
      if (useQuota.checked && !(parseInt(quota.value, 10) > 0)) { fieldError(quota, "a positive number"); bad = true; }
      if (bad) throw new Error("fix the fields marked above");
      const body = { group: w.group, op, package: w.package, file: fileSel.value, timeout_secs: t, delivery: delivery.value, protocol: protocol.value, schedule: sched };
      if (w.version && op === "upgrade") body.version = w.version;
      if (baseUri.value.trim()) body.base_uri = baseUri.value.trim();
      if (useQuota.checked) body.quota = parseInt(quota.value, 10);
      if (op === "install") body.activate = activate.checked;
      let c;
      try {
        c = await api("POST", "/api/campaigns", body);
      } catch (e) {
        const msg = e.message;
        if (/base/i.test(msg)) fieldError(baseUri, msg);
        else if (/file/i.test(msg)) fieldError(fileSel, msg);
        else if (/group/i.test(msg)) previewBox.textContent = msg;
        throw e;
      }
      location.hash = "#/campaigns/" + c.id;
      return "started " + c.id;
    }
  }
  if (w.group && params.get("package")) { w.package = params.get("package"); step2(); } else step1();
}

// --------------------------------------------------------------- campaigns

const COUNT_KEYS = [["pending", "Pending"], ["running", "Running"], ["done", "Done"], ["failed", "Failed"], ["timed_out", "Timed out"], ["cancelled", "Cancelled"], ["skipped", "Skipped"]];

function progress(c) {
  const n = c.counts;
  const finished = n.done + n.failed + n.timed_out + n.cancelled + n.skipped;
  return h("progress", { max: Math.max(1, c.total), value: finished, "aria-label": `${finished} of ${c.total} devices finished` });
}

function campaignsPage() {
  const m = main();
  const tbody = h("tbody", { id: "campaign-rows" });
  m.append(h("h1", {}, "Campaigns"), h("p", {}, h("a", { class: "button", href: "#/wizard" }, "New upgrade")),
    h("div", { class: "table-wrap" }, h("table", { id: "campaigns-table" },
      h("thead", {}, h("tr", {}, ["Campaign", "Operation", "Package", "Target", "Status", "Progress", "Created"].map((c) => h("th", { scope: "col" }, c)))), tbody)));
  const render = () => {
    const list = [...live.campaigns.values()].sort((a, b) => b.created_at - a.created_at);
    tbody.replaceChildren(...list.map((c) => h("tr", { "data-id": c.id },
      h("td", {}, h("a", { href: "#/campaigns/" + c.id }, c.id)), h("td", {}, c.spec.op),
      h("td", {}, c.spec.package + (c.spec.version ? " " + c.spec.version : "")),
      h("td", {}, c.group ? "group " + c.group : c.total + " device(s)"),
      h("td", {}, h("span", { class: "badge " + c.status }, c.status)),
      h("td", {}, progress(c), " ", COUNT_KEYS.filter(([k]) => c.counts[k]).map(([k, l]) => `${l} ${c.counts[k]}`).join(" · ")),
      h("td", {}, when(c.created_at)))));
    if (!list.length) tbody.append(h("tr", {}, h("td", { colspan: 7 }, "No campaigns yet.")));
  };
  render();
  live.onChange = (kinds) => { if (kinds.has("campaigns")) render(); };
}

const PAGE = 200;

function campaignPage(id) {
  const m = main();
  const head = h("div", { id: "campaign-head" });
  const cards = h("div", { class: "cards", id: "campaign-counts" });
  const bar = h("div", { id: "campaign-progress" });
  const st = statusSpan("campaign-action-status");
  const cancelBtn = h("button", { type: "button", id: "campaign-cancel", class: "danger", onclick: (e) => act(e.target, st, async () => {
    await api("POST", `/api/campaigns/${id}/cancel`);
    load();
    return "cancelled";
  }) }, "Cancel campaign");
  const retryBtn = h("button", { type: "button", id: "campaign-retry", onclick: (e) => act(e.target, st, async () => {
    await api("POST", `/api/campaigns/${id}/retry`);
    load();
    return "retrying the failed devices";
  }) }, "Retry failed devices");
  const filter = h("select", { id: "job-filter" }, h("option", { value: "" }, "all"), COUNT_KEYS.map(([k, l]) => h("option", { value: k }, l)));
  const tbody = h("tbody", { id: "job-rows" });
  const more = h("p", { id: "job-more" });
  let offset = 0;
  m.append(h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")), h("h1", {}, "Campaign " + id), head, bar, cards,
    h("p", { class: "actions" }, cancelBtn, " ", retryBtn, " ", st),
    h("h2", {}, "Devices"), field("Show devices", filter),
    h("div", { class: "table-wrap" }, h("table", { id: "jobs-table" },
      h("thead", {}, h("tr", {}, ["Device", "Status", "Version (old → new)", "State reached", "Update Result", "Details", "Started", "Finished"].map((c) => h("th", { scope: "col" }, c)))), tbody)), more);
  filter.addEventListener("change", () => { offset = 0; load(); });

  function renderHead(c) {
    const s = c.spec || {};
    head.replaceChildren(h("p", {}, h("span", { class: "badge " + c.status, id: "campaign-status" }, c.status), ` ${s.op} ${s.package}${s.version ? " " + s.version : ""} on ${c.group ? "group " + c.group : (c.total || (c.jobs || []).length) + " device(s)"} · ${s.delivery || ""} ${s.delivery === "pull" ? s.protocol : ""} · timeout ${s.timeout_secs} s${s.quota ? " · quota " + s.quota : ""} · schedule ${s.schedule ? s.schedule.kind : "now"} · created ${when(c.created_at)}`));
    let view = live.campaigns.get(id);
    if (!view && c.summary) {
      // Not in the live stream yet: the report's summary (running counted as pending).
      const sm = c.summary;
      view = { total: (c.jobs || []).length, counts: { pending: sm.pending, running: 0, done: sm.done, failed: sm.failed, timed_out: sm.timed_out, cancelled: sm.cancelled, skipped: sm.skipped } };
      view.total = Object.values(view.counts).reduce((a, b) => a + b, 0);
    }
    view = view || c;
    if (view.counts) {
      bar.replaceChildren(progress(view));
      cards.replaceChildren(...COUNT_KEYS.map(([k, l]) => h("div", { class: "card count-" + k, "data-count": k }, h("span", { class: "n" }, view.counts[k]), h("span", {}, l))));
      retryBtn.disabled = !(view.counts.failed + view.counts.timed_out);
    }
    cancelBtn.disabled = c.status !== "running" && c.status !== "preparing";
  }

  let loading = false;
  let again = false;
  async function load() {
    if (loading) { again = true; return; }
    loading = true;
    try {
      const q = `?limit=${PAGE}&offset=${offset}` + (filter.value ? "&status=" + filter.value : "");
      const c = await api("GET", `/api/campaigns/${id}` + q);
      renderHead(c);
      tbody.replaceChildren(...(c.jobs || []).map((j) => h("tr", { "data-endpoint": j.endpoint, class: "job-" + j.status },
        h("td", {}, h("a", { href: "#/devices/" + enc(j.endpoint) }, j.endpoint)),
        h("td", {}, h("span", { class: "badge " + j.status }, j.status.replace("_", " "))),
        h("td", {}, (j.targets || []).map((t) => `${t.old_version || "—"} → ${t.new_version || "—"}`).join(", ") || "—"),
        h("td", {}, stateName(j.update_state)),
        h("td", { class: "result" }, resultName(j.update_result, j.update_result_name)),
        h("td", {}, j.details || ""), h("td", {}, when(j.started_at)), h("td", {}, when(j.finished_at)))));
      const selected = c.jobs_total !== undefined ? c.jobs_total : (c.jobs || []).length;
      more.replaceChildren(h("span", {}, `showing ${Math.min(selected, offset + 1)}–${Math.min(selected, offset + PAGE)} of ${selected} `,
        offset > 0 ? h("button", { type: "button", onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, "Previous") : null,
        offset + PAGE < selected ? h("button", { type: "button", onclick: () => { offset += PAGE; load(); } }, "Next") : null));
    } catch (e) {
      setStatus(st, "error", e.message);
    } finally {
      loading = false;
      if (again) { again = false; setTimeout(load, 250); }
    }
  }
  load();
  let last = 0;
  let timer = null;
  live.onChange = (kinds, ids) => {
    if (!kinds.has("campaigns") || !ids.has(id)) return;
    const view = live.campaigns.get(id);
    if (view) renderHead(Object.assign({}, view));
    // The job table is re-read at most once a second.
    const wait = Math.max(0, 1000 - (Date.now() - last));
    if (timer) return;
    timer = setTimeout(() => { timer = null; last = Date.now(); load(); }, wait);
  };
}

// -------------------------------------------------------------------- boot

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("logout-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" });
    location.href = "/login";
  });
  window.addEventListener("hashchange", () => { route(); main().focus(); });
  connect();
  route();
});
