// wasmdm console: the device page (overview, software, objects, history).
// Loaded after app.js, whose helpers (h, api, act, live, ...) it uses.
"use strict";

/** Resource names and operations of the objects wasmdm devices expose (Core §E, SwMgmt §6). */
const MODEL = {
  0: ["LwM2M Security", { 0: ["LwM2M Server URI", ""], 1: ["Bootstrap-Server", ""], 2: ["Security Mode", ""], 10: ["Short Server ID", ""] }],
  1: ["LwM2M Server", { 0: ["Short Server ID", "R"], 1: ["Lifetime", "RW"], 2: ["Default Minimum Period", "RW"], 3: ["Default Maximum Period", "RW"], 4: ["Disable", "E"], 5: ["Disable Timeout", "RW"], 6: ["Notification Storing", "RW"], 7: ["Binding", "RW"], 8: ["Registration Update Trigger", "E"] }],
  3: ["Device", { 0: ["Manufacturer", "R"], 1: ["Model Number", "R"], 2: ["Serial Number", "R"], 3: ["Firmware Version", "R"], 4: ["Reboot", "E"], 6: ["Available Power Sources", "R"], 9: ["Battery Level", "R"], 10: ["Memory Free", "R"], 11: ["Error Code", "R"], 13: ["Current Time", "RW"], 14: ["UTC Offset", "RW"], 15: ["Timezone", "RW"], 16: ["Supported Binding and Modes", "R"], 17: ["Device Type", "R"], 18: ["Hardware Version", "R"], 19: ["Software Version", "R"], 21: ["Memory Total", "R"] }],
  9: ["Software Management", { 0: ["PkgName", "R"], 1: ["PkgVersion", "R"], 2: ["Package", "W"], 3: ["Package URI", "W"], 4: ["Install", "E"], 6: ["Uninstall", "E"], 7: ["Update State", "R"], 8: ["Update Supported Objects", "RW"], 9: ["Update Result", "R"], 10: ["Activate", "E"], 11: ["Deactivate", "E"], 12: ["Activation State", "R"], 16: ["Status Reason", "R"], 17: ["Software Component Link", "R"], 18: ["Software Component tree length", "R"] }],
  // IPSO Temperature (OMA registry), served by the temperature example app.
  3303: ["Temperature", { 5601: ["Min Measured Value", "R"], 5602: ["Max Measured Value", "R"], 5603: ["Min Range Value", "R"], 5604: ["Max Range Value", "R"], 5605: ["Reset Min and Max Measured Values", "E"], 5700: ["Sensor Value", "R"], 5701: ["Sensor Units", "R"], 5750: ["Application Type", "RW"] }],
  14: ["Software Component", { 0: ["Component Identity", "R"], 1: ["Component Pack", "R"], 2: ["Component Version", "R"], 3: ["Activate", "E"], 4: ["Deactivate", "E"], 5: ["Activation State", "R"] }],
};

/** "4.05 Method Not Allowed": the code and its name, as the API gives them. */
const codeName = (r) => r.code + " " + (r.code_name || "");

// ------------------------------------------------------------- device page

/** The content format to ask for: the device's default (TLV) for the
 * objects whose resource types the server knows (/1, /3, /9), else SenML
 * JSON (110), whose values carry their own types (an app's object, /14). */
function acceptFor(path) {
  return ["1", "3", "9"].includes(path.split("/")[1]) ? null : 110;
}

function dm(ep, op) {
  return api("POST", "/api/devices/" + enc(ep) + "/dm", op);
}
/** A DM operation whose error answer becomes an error that names the code. */
function dmChecked(ep, op) {
  return dm(ep, op).then((r) => {
    if (!r.success) throw new ApiError(0, "the device answered " + codeName(r));
    return r;
  });
}

function devicePage(ep, tab) {
  const m = main();
  const d = live.devices.get(ep);
  const tabs = [["overview", "Overview"], ["software", "Software"], ["objects", "Objects"], ["history", "History"]];
  const summary = h("p", { class: "summary", id: "device-summary" });
  const renderSummary = () => {
    const x = live.devices.get(ep);
    summary.replaceChildren(x
      ? h("span", {}, h("span", { class: "badge " + (x.online ? "ok" : "muted") }, x.online ? "online" : "offline"),
        ` last seen ${ago(x.last_seen)} · security ${x.security} · LwM2M ${x.lwm2m || "—"} · labels: ${x.labels.join(", ") || "none"} · groups: ${x.groups.join(", ") || "none"}`)
      : (live.ready ? "unknown device" : "loading…"));
  };
  renderSummary();
  m.append(h("p", {}, h("a", { href: "#/devices" }, "← Devices")), h("h1", {}, ep), summary,
    h("nav", { class: "tabs", "aria-label": "Device" }, tabs.map(([k, label]) =>
      h("a", { href: `#/devices/${enc(ep)}/${k}`, id: "tab-" + k, "aria-current": k === tab ? "page" : null }, label))));
  const body = h("section", { id: "tab-body", "aria-labelledby": "tab-" + tab });
  m.append(body);
  // A tab may follow live changes too (the software tab: its campaigns).
  const hooks = { onChange: null };
  const shape = (x) => JSON.stringify(x && x.objects);
  live.onChange = (kinds, ids) => {
    // The objects tab is drawn from the registration's object list: drawn
    // again when it changes (an app's object after an install) or first
    // arrives (the page opened before the live data: a reload, a bookmark).
    if (tab === "objects" && kinds.has("devices") && shape(live.devices.get(ep)) !== shape(d)) { route(); return; }
    if (kinds.has("devices")) renderSummary();
    if (hooks.onChange) hooks.onChange(kinds, ids);
  };
  ({ overview: overviewTab, software: softwareTab, objects: objectsTab, history: historyTab }[tab] || overviewTab)(ep, body, d, hooks);
}

async function overviewTab(ep, body) {
  const status = statusSpan("overview-status");
  const dl = h("dl", { class: "facts", id: "device-facts" });
  body.append(h("h2", {}, "Device (/3/0)"), status, dl);
  const r = await act(null, status, () => dmChecked(ep, { op: "read", path: "/3/0", accept: null }));
  if (!r) return;
  setStatus(status, "ok", "read " + new Date().toLocaleTimeString());
  const v = r.values;
  const facts = [["Manufacturer", 0], ["Model", 1], ["Serial number", 2], ["Firmware version", 3], ["Memory free (KiB)", 10], ["Memory total (KiB)", 21], ["Current time", 13], ["UTC offset", 14], ["Timezone", 15]];
  for (const [label, id] of facts) {
    let val = v["/3/0/" + id];
    if (id === 13 && typeof val === "number") val = new Date(val * 1000).toLocaleString() + " (" + val + ")";
    dl.append(h("dt", {}, label), h("dd", {}, showValue(val)));
  }
}

async function softwareTab(ep, body, _d, hooks) {
  const status = statusSpan("software-status");
  const tbody = h("tbody", { id: "software-rows" });
  const refresh = h("button", { type: "button", id: "software-refresh", onclick: () => load() }, "Read again");
  body.append(h("h2", {}, "Software (/9)"), refresh, status,
    h("div", { class: "table-wrap" }, h("table", { id: "software-table" },
      h("thead", {}, h("tr", {}, ["Instance", "Package", "Version", "Update State", "Update Result", "Activation", "Components", "Actions"].map((c) => h("th", { scope: "col" }, c)))), tbody)));
  let files = [];
  const installFile = h("select", { id: "install-file" });
  const installActivate = h("input", { type: "checkbox", id: "install-activate", checked: true });
  const installStatus = statusSpan("install-status");
  body.append(h("h2", {}, "Install from a file"),
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); act(e.submitter, installStatus, install); } },
      field("Software file", installFile),
      h("div", { class: "field check" }, installActivate, h("label", { for: "install-activate" }, "Activate after installing")),
      h("button", { type: "submit", id: "install-btn" }, "Install"), installStatus));

  // Each row's status line (what its last action said), kept when the table is drawn again.
  const notes = new Map();
  // Campaigns started here, followed to their end: then the table is read again.
  const watched = new Map();
  hooks.onChange = (kinds) => {
    if (!kinds.has("campaigns")) return;
    for (const [id, show] of watched) {
      const c = live.campaigns.get(id);
      if (!c || c.status === "running" || c.status === "preparing") continue;
      watched.delete(id);
      const n = c.counts;
      const bad = n.failed + n.timed_out + n.cancelled;
      show(bad ? "error" : "ok", `campaign ${id} ${c.status}: ${n.done} done, ${n.failed} failed, ${n.timed_out} timed out`);
      load();
    }
  };

  async function install() {
    const f = files.find((x) => x.sha256 === installFile.value);
    if (!f) { fieldError(installFile, "pick a file (upload one under Software files)"); throw new Error("no file"); }
    if (!f.manifest || !f.manifest.name) { fieldError(installFile, "this file has no readable manifest"); throw new Error("bad file"); }
    fieldError(installFile, "");
    const c = await api("POST", "/api/campaigns", { devices: [ep], op: "install", package: f.manifest.name, file: f.sha256, activate: installActivate.checked, timeout_secs: 120 });
    follow(c.id, (kind, text) => setStatus(installStatus, kind, text));
    return campaignLink(c.id, installStatus);
  }

  function follow(id, show) {
    watched.set(id, show);
  }

  function campaignLink(id, el) {
    setTimeout(() => el.replaceChildren("started ", h("a", { href: "#/campaigns/" + id }, "campaign " + id), ", running…"), 0);
    return "started campaign " + id;
  }

  /** Shows `content` (text or a node) next to a row; kept across redraws. */
  function rowShow(instance, kind, content) {
    const el = notes.get(instance);
    if (!el) return;
    setStatus(el, kind, typeof content === "string" ? content : "");
    if (content instanceof Node) el.replaceChildren(content);
  }

  /** Runs a row's action, its progress and outcome next to the row. */
  async function rowAction(button, instance, fn) {
    button.disabled = true;
    rowShow(instance, "busy", "working…");
    try {
      rowShow(instance, "ok", await fn());
    } catch (e) {
      rowShow(instance, "error", e.message);
    } finally {
      button.disabled = false;
    }
  }

  async function load() {
    const rows = await act(refresh, status, () => api("GET", "/api/console/devices/" + enc(ep) + "/software"));
    if (!rows) return;
    setStatus(status, "ok", `${rows.length} instance(s), read ${new Date().toLocaleTimeString()}`);
    tbody.replaceChildren(...rows.map((r) => {
      if (!notes.has(r.instance)) notes.set(r.instance, statusSpan("row-status-" + r.instance));
      const rs = notes.get(r.instance);
      const label = r.name || "instance " + r.instance;
      const others = files.filter((f) => f.manifest && f.manifest.name === r.name && f.manifest.version !== r.version);
      const upFile = h("select", { id: "upgrade-file-" + r.instance, "aria-label": "File to upgrade " + label + " to" },
        others.length ? others.map(fileOption) : h("option", { value: "" }, "no other version uploaded"));
      const exec = (res, what) => (e) => rowAction(e.target, r.instance, async () => {
        const x = await dmChecked(ep, { op: "execute", path: `/9/${r.instance}/${res}`, args: null });
        await load();
        return `${what} done (${x.code})`;
      });
      const upgrade = (e) => rowAction(e.target, r.instance, async () => {
        if (!upFile.value) throw new Error("no other uploaded file holds package " + r.name);
        const c = await api("POST", "/api/campaigns", { devices: [ep], op: "upgrade", package: r.name, file: upFile.value, timeout_secs: 120 });
        follow(c.id, (kind, text) => rowShow(r.instance, kind, text));
        return h("span", {}, "started ", h("a", { href: "#/campaigns/" + c.id }, "campaign " + c.id), ", running…");
      });
      return h("tr", { "data-instance": r.instance },
        h("td", {}, "/9/" + r.instance), h("td", { class: "name" }, r.name || "—"), h("td", { class: "version" }, r.version || "—"),
        h("td", { class: "state" }, stateName(r.update_state)),
        h("td", { class: "result" }, resultName(r.update_result, r.update_result_name)),
        h("td", { class: "activation" }, r.active === true ? "active" : r.active === false ? "inactive" : "—"),
        h("td", {}, (r.components || []).map((c) => h("div", {}, `/14/${c.instance} ${showValue(c.identity)} ${showValue(c.version)}${c.active ? " (active)" : ""}`))),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "activate", "aria-label": "Activate " + label, onclick: exec(10, "Activate") }, "Activate"),
          h("button", { type: "button", class: "deactivate", "aria-label": "Deactivate " + label, onclick: exec(11, "Deactivate") }, "Deactivate"),
          h("button", { type: "button", class: "uninstall", "aria-label": "Uninstall " + label, onclick: exec(6, "Uninstall") }, "Uninstall"),
          h("span", { class: "upgrade" }, upFile,
            h("button", { type: "button", "aria-label": "Upgrade " + label, disabled: !others.length, onclick: upgrade }, "Upgrade")),
          rs));
    }));
    if (!rows.length) tbody.append(h("tr", {}, h("td", { colspan: 8 }, "No software installed.")));
  }
  try {
    files = await loadFiles();
    installFile.replaceChildren(...files.map(fileOption));
  } catch (e) { fieldError(installFile, e.message); }
  load();
}

/** At most this many paths in one Read-Composite (the server's cap). */
const MAX_COMPOSITE = 64;
/** Write-Attributes fields (Core 1.1 §5.1.2): name, label, whole seconds? */
const ATTRIBUTES = [["pmin", "pmin (minimum period, s)", true], ["pmax", "pmax (maximum period, s)", true],
  ["gt", "gt (greater than)", false], ["lt", "lt (less than)", false], ["st", "st (step)", false]];

function objectsTab(ep, body, d) {
  const objects = (d && d.objects) || {};
  body.append(h("h2", {}, "Objects"));
  if (!Object.keys(objects).length) body.append(h("p", {}, "The device announced no objects (offline?)."));
  const observed = new Map();
  let poll = null;
  // Resources ticked for Read selected (one Read-Composite, Core 1.1
  // §6.3.8), and how each row shows values read that way.
  const selected = new Set();
  const cells = new Map();
  const composite = compositeBar();
  if (Object.keys(objects).length) body.append(composite);
  for (const [oid, info] of Object.entries(objects)) {
    if (oid === "0") continue; // Security: never readable by a server (Core §E.1).
    // Without a model (an app's object): every operation is offered and
    // the device's answer (4.05 where not allowed) is shown.
    const [oname, resources] = MODEL[oid] || ["Object " + oid, null];
    const det = h("details", { class: "object", id: "object-" + oid, open: oid === "3" ? true : null },
      h("summary", {}, `/${oid} ${oname}` + (info.version ? ` (v${info.version})` : "")));
    for (const iid of info.instances.length ? info.instances : []) {
      det.append(instanceBlock(oid, iid, resources));
    }
    body.append(det);
  }

  /** "Read selected": the ticked resources in one Read-Composite, each value in its row. */
  function compositeBar() {
    const st = statusSpan("read-selected-status");
    const count = h("span", { id: "selected-count" }, "0 selected");
    const btn = h("button", { type: "button", id: "read-selected", "aria-describedby": "selected-count", onclick: (e) => act(e.target, st, async () => {
      const paths = [...selected];
      if (!paths.length) throw new Error("tick the resources to read first (the Select boxes in the tables)");
      if (paths.length > MAX_COMPOSITE) throw new Error(`${paths.length} selected: at most ${MAX_COMPOSITE} in one request`);
      const r = await dmChecked(ep, { op: "read-composite", paths });
      let got = 0;
      for (const p of paths) {
        const vals = Object.fromEntries(Object.entries(r.values).filter(([k]) => k === p || k.startsWith(p + "/")));
        const any = Object.keys(vals).length > 0;
        if (any) got++;
        const show = cells.get(p);
        if (show) show(vals, any ? null : h("div", { class: "absent" }, "no value in the answer"));
      }
      return `read ${got} of ${paths.length} selected (${r.code})`;
    }) }, "Read selected");
    const bar = h("div", { class: "composite-bar" },
      h("p", { class: "hint" }, "Tick the Select boxes of resources in any objects to read them together, in one Read-Composite request."),
      btn, " ", count, st);
    bar.update = () => { count.textContent = selected.size + " selected"; };
    return bar;
  }

  function instanceBlock(oid, iid, resources) {
    const base = `/${oid}/${iid}`;
    const rows = h("tbody", {});
    const st = statusSpan("status-" + base.replace(/\//g, "-"));
    const values = {};
    const render = () => {
      const ids = new Set([...Object.keys(resources || {}), ...Object.keys(values).map((p) => p.split("/")[3])]);
      const model = (rid) => (resources ? resources[rid] || ["Resource " + rid, "R"] : ["Resource " + rid, "RWE"]);
      rows.replaceChildren(...[...ids].sort((a, b) => a - b).map((rid) => resourceRow(base + "/" + rid, rid, model(rid), values)));
    };
    render();
    const readBtn = h("button", { type: "button", class: "read-instance", id: "read-" + base.replace(/\//g, "-"), onclick: (e) => act(e.target, st, async () => {
      const r = await dmChecked(ep, { op: "read", path: base, accept: acceptFor(base) });
      for (const k of Object.keys(values)) delete values[k];
      for (const [p, v] of Object.entries(r.values)) values[p] = v;
      render();
      return "read " + r.code;
    }) }, "Read " + base);
    return h("div", { class: "instance", "data-path": base }, h("h3", {}, base, " ", readBtn, " ", st),
      h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Resource", "Name", "Value", "Operations"].map((c) => h("th", { scope: "col" }, c)))), rows)));
  }

  function resourceRow(path, rid, [name, ops], values) {
    const st = statusSpan();
    const valueCell = h("td", { class: "value", "data-path": path });
    // The values read, and the observed one (or the last one) below them.
    const showCell = (vals, note) => valueCell.replaceChildren(
      ...Object.entries(vals).filter(([p]) => p === path || p.startsWith(path + "/"))
        .map(([p, v]) => h("div", {}, (p !== path ? p.slice(path.length + 1) + ": " : "") + showValue(v))),
      ...(note ? [note] : observed.has(path) ? [h("div", { class: "observed" }, "observed: " + showValue(observed.get(path)))] : []));
    showCell(values);
    cells.set(path, (vals, note) => { Object.assign(values, vals); showCell(values, note); });
    const buttons = [];
    const safe = path.replace(/\//g, "-");
    let pick = null;
    let attrs = null;
    if (ops.includes("R")) {
      pick = h("input", { type: "checkbox", class: "select-resource", id: "sel" + safe, checked: selected.has(path),
        "aria-label": "Select " + path + " " + name, onchange: (e) => {
          if (e.target.checked) selected.add(path); else selected.delete(path);
          composite.update();
        } });
      attrs = attributesPanel(path, name, safe);
      buttons.push(h("button", { type: "button", class: "read", onclick: (e) => act(e.target, st, async () => {
        const r = await dmChecked(ep, { op: "read", path, accept: acceptFor(path) });
        for (const [p, v] of Object.entries(r.values)) values[p] = v;
        showCell(values);
        return r.code;
      }) }, "Read"));
      // Observe and Stop observing take turns; focus moves to the one shown.
      const observe = h("button", { type: "button", class: "observe", hidden: observed.has(path), onclick: (e) => act(e.target, st, async () => {
        const r = await dmChecked(ep, { op: "observe", path, accept: acceptFor(path) });
        observed.set(path, Object.values(r.values)[0]);
        showCell(values);
        observe.hidden = true;
        stop.hidden = false;
        stop.focus();
        startPolling();
        return "observing (" + r.code + ")";
      }) }, "Observe");
      // The server ends its own observation of the path (RFC 7641 §3.6: a
      // GET with Observe=1 and its token, which the server keeps).
      const stop = h("button", { type: "button", class: "stop-observe", hidden: !observed.has(path), onclick: (e) => act(e.target, st, async () => {
        const r = await dmChecked(ep, { op: "cancel-observe", path, accept: acceptFor(path), token: "" });
        const last = observed.get(path);
        observed.delete(path);
        showCell(values, h("div", { class: "observed" }, "last observed: " + showValue(last)));
        stop.hidden = true;
        observe.hidden = false;
        observe.focus();
        return "observation cancelled (" + r.code + ")";
      }) }, "Stop observing");
      buttons.push(observe, stop);
    }
    if (ops.includes("W")) {
      const input = h("input", { class: "write-value", id: "write" + safe, "aria-label": "New value of " + path + " " + name });
      buttons.push(input, h("button", { type: "button", class: "write", onclick: (e) => act(e.target, st, async () => {
        const hex = [...new TextEncoder().encode(input.value)].map((b) => b.toString(16).padStart(2, "0")).join("");
        const r = await dmChecked(ep, { op: "write", path, replace: true, format: 0, payload: hex });
        return "written (" + r.code + ")";
      }) }, "Write"));
    }
    if (ops.includes("E")) {
      const args = h("input", { class: "exec-args", id: "args" + safe, "aria-label": "Arguments for " + path + " " + name, placeholder: "arguments" });
      buttons.push(args, h("button", { type: "button", class: "execute", id: "exec" + safe, onclick: (e) => act(e.target, st, async () => {
        const r = await dmChecked(ep, { op: "execute", path, args: args.value.trim() || null });
        return "executed (" + r.code + ")";
      }) }, "Execute"));
    }
    return h("tr", { "data-path": path }, h("td", {}, pick, pick ? " " : null, path), h("td", {}, name), valueCell,
      h("td", { class: "ops" }, buttons, attrs ? attrs.toggle : null, st, attrs ? attrs.panel : null));
  }

  /** Write-Attributes of one resource: pmin/pmax/gt/lt/st, the device's answer next to them. */
  function attributesPanel(path, name, safe) {
    const panelId = "attrs" + safe;
    const st = statusSpan("attrs-status" + safe);
    const inputs = ATTRIBUTES.map(([key, label]) => [key, h("input", { id: `attr-${key}${safe}`, class: "attr", inputmode: "decimal", autocomplete: "off" }), label]);
    const submit = h("button", { type: "submit" }, "Write attributes");
    const form = h("form", { class: "attrs-form", onsubmit: (e) => {
      e.preventDefault();
      act(submit, st, async () => {
        const attributes = {};
        let bad = false;
        for (const [key, input] of inputs) {
          const text = input.value.trim();
          const whole = ATTRIBUTES.find((a) => a[0] === key)[2];
          let err = "";
          if (text === "none") attributes[key] = null;
          else if (text !== "") {
            const n = Number(text);
            if (!Number.isFinite(n)) err = "a number, or none to remove it";
            else if (whole && (!Number.isInteger(n) || n < 0)) err = "whole seconds, 0 or more";
            else if (key === "st" && n < 0) err = "0 or more";
            else attributes[key] = n;
          }
          fieldError(input, err);
          bad = bad || !!err;
        }
        if (bad) throw new Error("check the marked fields");
        if (!Object.keys(attributes).length) {
          fieldError(inputs[0][1], "fill at least one attribute");
          throw new Error("no attribute given");
        }
        const r = await dmChecked(ep, { op: "write-attributes", path, attributes });
        return "attributes written (" + r.code + ")";
      });
    } }, h("p", { class: "hint" }, "Empty: left as it is; none: removed."),
    inputs.map(([, input, label]) => field(label, input)), submit, st);
    const panel = h("div", { class: "attrs-panel", id: panelId, hidden: true, role: "group", "aria-label": "Attributes of " + path + " " + name }, form);
    const toggle = h("button", { type: "button", class: "attributes", "aria-expanded": "false", "aria-controls": panelId, onclick: () => {
      panel.hidden = !panel.hidden;
      toggle.setAttribute("aria-expanded", String(!panel.hidden));
      if (!panel.hidden) inputs[0][1].focus();
    } }, "Attributes");
    return { toggle, panel };
  }

  /** Follows the observed values the server keeps (every 2 s while any is observed). */
  function startPolling() {
    if (poll) return;
    poll = setInterval(async () => {
      if (!document.body.contains(body) || !observed.size) { clearInterval(poll); poll = null; return; }
      try {
        const vals = await api("GET", "/api/devices/" + enc(ep) + "/observed");
        for (const [p, v] of Object.entries(vals)) {
          for (const [o] of observed) {
            if (p !== o && !p.startsWith(o + "/")) continue;
            observed.set(o, v);
            const cell = body.querySelector(`td.value[data-path="${o}"] .observed`);
            if (cell) cell.textContent = "observed: " + showValue(v);
          }
        }
      } catch (_) { /* shown by the live indicator */ }
    }, 2000);
  }
}

async function historyTab(ep, body) {
  const status = statusSpan("history-status");
  body.append(h("h2", {}, "History"), status);
  const hist = await act(null, status, () => api("GET", "/api/console/devices/" + enc(ep) + "/history"));
  if (!hist) return;
  const rows = hist.campaigns;
  const ops = hist.operations;
  setStatus(status, "ok", `${rows.length} campaign operation(s), ${ops.length} management operation(s)`);
  body.append(h("h3", {}, "Software operations (campaigns)"), h("div", { class: "table-wrap" }, h("table", { id: "history-table" },
    h("thead", {}, h("tr", {}, ["Campaign", "Operation", "Package", "Status", "Update Result", "Versions", "Details", "Started", "Finished"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", {}, h("a", { href: "#/campaigns/" + r.campaign }, r.campaign)), h("td", {}, r.op),
      h("td", {}, r.package + (r.version ? " " + r.version : "")), h("td", {}, h("span", { class: "badge " + r.status }, r.status)),
      h("td", {}, resultName(r.update_result, r.update_result_name)),
      h("td", {}, (r.targets || []).map((t) => `${t.old_version || "—"} → ${t.new_version || "—"}`).join(", ")),
      h("td", {}, r.details || ""), h("td", {}, when(r.started_at)), h("td", {}, when(r.finished_at))))))),
    h("h3", {}, "Management operations (since the server started)"), h("div", { class: "table-wrap" }, h("table", { id: "operations-table" },
      h("thead", {}, h("tr", {}, ["When", "Operation", "Path", "Outcome"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, ops.map((o) => h("tr", {}, h("td", {}, when(o.at)), h("td", {}, o.op), h("td", {}, o.path),
        h("td", { class: o.error || (o.code && o.code[0] !== "2") ? "error" : "" }, o.code ? "device answered " + o.code : "", o.error ? " " + o.error + " (HTTP " + o.status + ")" : "")))))));
}

