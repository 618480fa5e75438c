// The panel: cards and controls generated from the devices' exposes (api/devices), values pushed by the
// server (api/events), every control sent through api/command. No framework, no CDN, relative URLs only.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const app = {
  meta: new Map(), // device id -> {id, kind, name, exposes, byKey}
  signature: null,
  data: null, // the latest api/state
  history: null, // api/history columns
  cards: new Map(), // device id -> {root, update(values)}
  flow: null,
  chartDirty: false,
};

// ---------------------------------------------------------------------------------------------------------
// small DOM helpers: text always goes in as text, never as HTML

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  setAttrs(el, attrs);
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

// ---------------------------------------------------------------------------------------------------------
// formatting

function fmtPower(w) {
  if (w === null || w === undefined || Number.isNaN(w)) return "—";
  return Math.abs(w) >= 1000 ? `${(w / 1000).toFixed(2)} kW` : `${Math.round(w)} W`;
}

function fmtValue(expose, value) {
  if (value === null || value === undefined || value === "") return "—";
  if (expose && expose.unit === "W" && typeof value === "number") return fmtPower(value);
  if (expose && expose.unit === "Wh" && typeof value === "number" && Math.abs(value) >= 1000) return `${(value / 1000).toFixed(2)} kWh`;
  if (typeof value === "number") {
    const digits = expose && expose.precision !== undefined ? expose.precision : Number.isInteger(value) ? 0 : 2;
    return `${value.toFixed(digits)}${expose && expose.unit ? ` ${expose.unit}` : ""}`;
  }
  if (expose && expose.component === "binary_sensor") return value === "ON" ? "yes" : "no";
  if (expose && expose.device_class === "timestamp") return fmtTime(value);
  if (expose && expose.options && expose.options.includes(value)) return enumLabel(value);
  return `${value}${expose && expose.unit ? ` ${expose.unit}` : ""}`;
}

// `no_vehicle` -> "No vehicle", `super_off_peak` -> "Super off-peak": a person reads the state, not the key.
function enumLabel(value) {
  const text = String(value).replace(/_/g, " ").replace(/\boff peak\b/g, "off-peak");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function fmtTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function direction(power, charging, discharging) {
  if (power === null || power === undefined) return ["—", ""];
  if (power < -10) return [`${charging} ${fmtPower(-power)}`, "dir-charge"];
  if (power > 10) return [`${discharging} ${fmtPower(power)}`, "dir-discharge"];
  return ["idle", ""];
}

// ---------------------------------------------------------------------------------------------------------
// talking to the add-on

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

let toastTimer = null;
function toast(text, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = bad ? "toast bad" : "toast";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 8000 : 4000);
}

// Send one command the way MQTT would; the answer (rejected, or the device's outcome) goes to `errorEl`.
async function send(deviceId, key, value, errorEl, busy = []) {
  const meta = app.meta.get(deviceId);
  const label = meta ? `${meta.name}: ${(meta.byKey.get(key) || { name: key }).name}` : key;
  if (errorEl) errorEl.textContent = "";
  busy.forEach((el) => { el.disabled = true; });
  try {
    const response = await fetch("api/command", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ device: deviceId, key, value }),
    });
    const body = await response.json().catch(() => ({ ok: false, error: `HTTP ${response.status}` }));
    if (!body.ok) {
      const why = body.error || `${body.status}: ${body.detail || ""}`;
      if (errorEl) errorEl.textContent = why;
      toast(`${label}: ${why}`, true);
      return false;
    }
    const detail = body.detail ? ` (${body.detail})` : "";
    toast(`${label}: ${body.status}${detail}`);
    return true;
  } catch (error) {
    const why = "no connection to the add-on";
    if (errorEl) errorEl.textContent = why;
    toast(`${label}: ${why}`, true);
    return false;
  } finally {
    busy.forEach((el) => { el.disabled = false; });
  }
}

// ---------------------------------------------------------------------------------------------------------
// controls, generated from exposes

function inputId(deviceId, key) {
  return `c-${deviceId}-${key}`.replace(/[^A-Za-z0-9_-]/g, "_");
}

// Returns {el, update(value)}; `update` leaves a control alone while the user is editing it, and while
// its command is on its way (disabled): a state push from before the command must not undo the click.
function control(deviceId, expose) {
  const error = h("div", { class: "field-error", "data-error": expose.key });
  const id = inputId(deviceId, expose.key);
  switch (expose.component) {
    case "button": {
      const button = h("button", { type: "button", "data-key": expose.key, text: expose.name });
      button.addEventListener("click", () => send(deviceId, expose.key, "PRESS", error, [button]));
      return { el: h("div", { class: "control" }, button, error), update() {} };
    }
    case "switch": {
      const box = h("input", { type: "checkbox", id, "data-key": expose.key });
      box.addEventListener("change", async () => {
        const ok = await send(deviceId, expose.key, box.checked, error, [box]);
        if (!ok) box.checked = !box.checked;
      });
      return {
        el: h("div", { class: "control inline" }, box, h("label", { for: id, text: expose.name }), error),
        update(value) { if (document.activeElement !== box && !box.disabled) box.checked = value === "ON"; },
      };
    }
    case "select": {
      const select = h("select", { id, "data-key": expose.key },
        h("option", { value: "", text: "—", disabled: true }),
        (expose.options || []).map((option) => h("option", { value: option, text: option })));
      select.addEventListener("change", () => send(deviceId, expose.key, select.value, error, [select]));
      return {
        el: h("div", { class: "control" }, h("label", { for: id, text: expose.name }), select, error),
        update(value) { if (document.activeElement !== select && !select.disabled) select.value = value ?? ""; },
      };
    }
    case "number":
    case "text": {
      const attrs = expose.component === "number"
        ? { type: "number", min: expose.minimum, max: expose.maximum, step: expose.step || "any", inputmode: "decimal" }
        : { type: "text", size: 6 };
      const input = h("input", { id, "data-key": expose.key, ...attrs });
      const set = h("button", { type: "button", text: "Set" });
      const submit = () => {
        const raw = input.value.trim();
        const value = expose.component === "number" && raw !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
        send(deviceId, expose.key, value, error, [set]);
      };
      set.addEventListener("click", submit);
      input.addEventListener("keydown", (event) => { if (event.key === "Enter") submit(); });
      const unit = expose.unit ? ` (${expose.unit})` : "";
      return {
        el: h("div", { class: "control" }, h("label", { for: id, text: expose.name + unit }),
          h("div", { class: "control inline" }, input, set), error),
        update(value) {
          const editing = document.activeElement === input || document.activeElement === set;
          if (!editing && !set.disabled) input.value = value ?? "";
        },
      };
    }
    default:
      return { el: h("span"), update() {} };
  }
}

// Sensors not shown elsewhere, as a definition list under "All values".
function valueList(meta, skip) {
  const dl = h("dl", { class: "facts" });
  const cells = new Map();
  for (const expose of meta.exposes) {
    if (expose.commandable || skip.has(expose.key)) continue;
    const dd = h("dd", { "data-value": expose.key });
    dl.append(h("dt", { text: expose.name }), dd);
    cells.set(expose.key, dd);
  }
  return {
    el: h("details", {}, h("summary", { text: "All values" }), dl),
    update(values) { for (const [key, dd] of cells) setText(dd, fmtValue(meta.byKey.get(key), values[key])); },
  };
}

function controlGroup(meta, predicate, cls = "controls") {
  const parts = meta.exposes.filter((e) => e.commandable && predicate(e)).map((e) => [e.key, control(meta.id, e)]);
  return {
    el: parts.length ? h("div", { class: cls }, parts.map(([, c]) => c.el)) : null,
    update(values) { for (const [key, c] of parts) c.update(values[key]); },
  };
}

function lastCommand(values) {
  const info = (values.attributes && values.attributes.last_command) || {};
  if (!info.status) return null;
  return [info.status, `${info.command}${info.detail ? ` — ${info.detail}` : ""}`, info.at];
}

function outcomeLine() {
  const status = h("span");
  const text = h("span");
  const el = h("div", { class: "outcome muted" }, "Last command: ", status, " ", text);
  return {
    el,
    update(values) {
      const last = lastCommand(values);
      el.hidden = !last;
      if (!last) return;
      setText(status, last[0]);
      status.className = `status-${last[0]}`;
      setText(text, `${last[1]}${last[2] ? ` (${fmtTime(last[2])})` : ""}`);
    },
  };
}

function connectionBadge() {
  const badge = h("span", { class: "badge" });
  return {
    el: badge,
    update(values) {
      const online = values.available;
      setText(badge, online ? "online" : "offline");
      badge.className = `badge ${online ? "ok" : "bad"}`;
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// cards

function gauge() {
  const r = 40;
  const length = 2 * Math.PI * r;
  const value = s("circle", { class: "value", cx: 50, cy: 50, r, fill: "none", "stroke-width": 10,
    "stroke-linecap": "round", transform: "rotate(-90 50 50)", "stroke-dasharray": `0 ${length}` });
  const label = s("text", { x: 50, y: 57, "text-anchor": "middle" }, "—");
  const svg = s("svg", { class: "gauge", viewBox: "0 0 100 100", role: "img", "aria-label": "state of charge" },
    s("circle", { class: "track", cx: 50, cy: 50, r, fill: "none", "stroke-width": 10 }), value, label);
  return {
    el: svg,
    update(soc) {
      const known = typeof soc === "number";
      value.setAttribute("stroke-dasharray", `${known ? (length * Math.min(100, Math.max(0, soc))) / 100 : 0} ${length}`);
      setText(label, known ? `${Math.round(soc)}%` : "—");
      svg.setAttribute("aria-label", known ? `state of charge ${Math.round(soc)} %` : "state of charge unknown");
      svg.classList.toggle("low", known && soc < 15);
    },
  };
}

function buildBattery(meta) {
  const badge = connectionBadge();
  const soc = gauge();
  const power = h("div", { class: "big", "data-bind": "power" });
  const facts = h("dl", { class: "facts" });
  const cells = {};
  for (const [key, label] of [["mode", "Mode"], ["role", "Optimiser"], ["temperature", "Temperature"], ["remaining_energy", "Stored"]]) {
    cells[key] = h("dd", { "data-bind": key });
    facts.append(h("dt", { text: label }), cells[key]);
  }
  const mode = meta.byKey.get("mode") ? control(meta.id, meta.byKey.get("mode")) : null;
  // Charge / discharge now: power and duration, then the button, one command after the other.
  const powerExpose = meta.byKey.get("passive_power");
  const durationExpose = meta.byKey.get("passive_duration");
  const now = h("div", { class: "controls" });
  const nowError = h("div", { class: "field-error", "data-error": "now" });
  let powerInput = null;
  let durationInput = null;
  if (powerExpose && durationExpose && meta.byKey.get("charge_now")) {
    const maxW = Math.max(Math.abs(powerExpose.minimum || 0), Math.abs(powerExpose.maximum || 0));
    powerInput = h("input", { type: "number", id: inputId(meta.id, "now_power"), min: 0, max: maxW, step: powerExpose.step || 50, "data-key": "now_power" });
    durationInput = h("input", { type: "number", id: inputId(meta.id, "now_duration"), min: durationExpose.minimum, max: durationExpose.maximum, step: 1, "data-key": "now_duration" });
    const buttons = [];
    const act = async (key, sign) => {
      const watts = Number(powerInput.value);
      const minutes = Number(durationInput.value);
      if (sign !== 0) {
        if (!(await send(meta.id, "passive_power", sign * Math.abs(watts), nowError, buttons))) return;
      }
      if (!(await send(meta.id, "passive_duration", minutes, nowError, buttons))) return;
      await send(meta.id, key, "PRESS", nowError, buttons);
    };
    for (const [key, label, sign, cls] of [["charge_now", "Charge", -1, "primary"], ["discharge_now", "Discharge", 1, ""], ["stop", "Stop", 0, ""]]) {
      if (!meta.byKey.get(key)) continue;
      const button = h("button", { type: "button", class: cls, "data-key": key, text: label });
      button.addEventListener("click", () => act(key, sign));
      buttons.push(button);
    }
    now.append(
      h("div", { class: "control" }, h("label", { for: powerInput.id, text: "Power (W)" }), powerInput),
      h("div", { class: "control" }, h("label", { for: durationInput.id, text: "Minutes" }), durationInput),
      ...buttons, nowError);
  }
  // A person's command holds the battery: say until when, and offer to hand it back to the optimiser.
  const holdText = h("span", { "data-bind": "manual_hold" });
  const holdError = h("div", { class: "field-error", "data-error": "resume_optimiser" });
  const hold = h("div", { class: "hold", hidden: true }, holdText);
  if (meta.byKey.get("resume_optimiser")) {
    const resume = h("button", { type: "button", "data-key": "resume_optimiser", text: "Return to optimiser" });
    resume.addEventListener("click", () => send(meta.id, "resume_optimiser", "PRESS", holdError, [resume]));
    hold.append(resume, holdError);
  }
  const shown = new Set(["mode", "passive_power", "passive_duration", "charge_now", "discharge_now", "stop",
    "manual_hold", "resume_optimiser"]);
  const more = controlGroup(meta, (e) => !shown.has(e.key));
  const values = valueList(meta, new Set(["soc", "ac_power", "last_command", "manual_hold"]));
  const outcome = outcomeLine();
  const root = h("section", { class: "card battery", "data-device": meta.id, "aria-label": meta.name },
    h("h2", {}, h("span", { class: "name", text: meta.name }), badge.el),
    h("div", { class: "hero" }, soc.el, h("div", {}, power, facts)),
    mode ? h("div", { class: "controls" }, mode.el) : null,
    now,
    hold,
    outcome.el,
    h("details", {}, h("summary", { text: "More controls" }), more.el),
    values.el);
  let prefilled = false;
  return {
    root,
    update(v) {
      badge.update(v);
      soc.update(v.soc);
      const [text, cls] = direction(v.ac_power, "charging", "discharging");
      setText(power, text);
      power.className = `big ${cls}`;
      setText(cells.mode, v.mode ?? "—");
      setText(cells.role, (app.data && app.data.optimiser && app.data.optimiser.roles && app.data.optimiser.roles[meta.name]) || "—");
      setText(cells.temperature, fmtValue(meta.byKey.get("temperature"), v.temperature));
      setText(cells.remaining_energy, fmtValue(meta.byKey.get("remaining_energy"), v.remaining_energy));
      if (mode) mode.update(v.mode);
      hold.hidden = !v.manual_hold;
      if (v.manual_hold) {
        const until = new Date(v.manual_hold).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        setText(holdText, `Your command holds this battery until ${until}: the optimiser leaves it alone.`);
      }
      if (powerInput && !prefilled && v.passive_power !== null && v.passive_power !== undefined) {
        powerInput.value = Math.abs(v.passive_power);
        durationInput.value = v.passive_duration ?? 30;
        prefilled = true;
      }
      more.update(v);
      outcome.update(v);
      values.update(v);
    },
  };
}

function buildWallbox(meta) {
  const badge = connectionBadge();
  const power = h("div", { class: "big" });
  const facts = h("dl", { class: "facts" });
  const keys = [["charge_point_state", "State"], ["charging_state", "Charging"], ["cable_state", "Cable"],
    ["current_l1", "Current L1"], ["session_energy", "Session"], ["last_session_energy", "Last session"]];
  const cells = [];
  for (const [key, label] of keys) {
    if (!meta.byKey.get(key)) continue;
    const dd = h("dd", { "data-bind": key });
    facts.append(h("dt", { text: label }), dd);
    cells.push([key, dd]);
  }
  const featured = controlGroup(meta, (e) => e.featured);
  const more = controlGroup(meta, (e) => !e.featured);
  const values = valueList(meta, new Set(["power", "last_command"]));
  const outcome = outcomeLine();
  const root = h("section", { class: "card wallbox", "data-device": meta.id, "aria-label": meta.name },
    h("h2", {}, h("span", { class: "name", text: meta.name }), badge.el),
    power, facts, featured.el, outcome.el,
    h("details", {}, h("summary", { text: "More controls" }), more.el), values.el);
  return {
    root,
    update(v) {
      badge.update(v);
      setText(power, v.power ? `charging ${fmtPower(v.power)}` : "not charging");
      for (const [key, dd] of cells) setText(dd, fmtValue(meta.byKey.get(key), v[key]));
      featured.update(v);
      more.update(v);
      outcome.update(v);
      values.update(v);
    },
  };
}

function buildOptimiser(meta) {
  const facts = h("dl", { class: "facts" });
  const cells = [];
  const rows = [["strategy", "Strategy"], ["active_battery", "Active battery"], ["next_action", "Next"],
    ["tariff_period", "Tariff period"], ["quarter_average", "This quarter-hour"], ["month_peak", "Month peak"],
    ["peak_target_in_force", "Peak target"], ["pv_forecast_tomorrow", "PV tomorrow"], ["night_plan", "Night plan"]];
  for (const [key, label] of rows) {
    if (!meta.byKey.get(key)) continue;
    const dd = h("dd", { "data-bind": key });
    facts.append(h("dt", { text: label }), dd);
    cells.push([key, dd]);
  }
  const hold = h("div", { class: "outcome" });
  const featured = controlGroup(meta, (e) => e.featured && e.component === "switch", "controls switches");
  const numbers = controlGroup(meta, (e) => e.featured && e.component !== "switch");
  const rest = controlGroup(meta, (e) => !e.featured);
  const plan = h("div", { class: "muted outcome" });
  const decisions = h("ol", { class: "decisions", "aria-label": "Last decisions" });
  const root = h("section", { class: "card optimiser", "data-device": meta.id, "aria-label": meta.name },
    h("h2", {}, h("span", { class: "name", text: "Optimiser" }), h("span", { class: "badge", "data-bind": "enabled" })),
    featured.el, numbers.el, hold, facts, plan,
    h("h3", { text: "Last decisions" }), decisions,
    h("details", {}, h("summary", { text: "All settings" }), rest.el));
  let lastDecisions = "";
  return {
    root,
    update(v) {
      const badge = root.querySelector("[data-bind=enabled]");
      const on = v.enabled === "ON";
      setText(badge, on ? "on" : "off");
      badge.className = `badge ${on ? "ok" : ""}`;
      const holding = v.input_stale === "ON" ? (v.attributes.input_stale || {}).hold || "grid input stale" : "";
      setText(hold, on && holding ? `Holding every battery in Auto: ${holding}` : "");
      hold.className = holding ? "outcome status-rejected" : "outcome";
      for (const [key, dd] of cells) setText(dd, fmtValue(meta.byKey.get(key), v[key]));
      const pv = (v.attributes && v.attributes.pv_forecast_tomorrow) || {};
      if (pv.problem) setText(cells.find(([k]) => k === "pv_forecast_tomorrow")?.[1], `— (${pv.problem})`);
      const night = (v.attributes && v.attributes.night_plan) || {};
      const windows = night.windows && night.windows.length ? ` · windows ${night.windows.join(", ")}` : "";
      const energy = night.energy_kwh ? Object.entries(night.energy_kwh).map(([id, kwh]) => `${(app.meta.get(id) || { name: id }).name} ${kwh} kWh`).join(", ") : "";
      setText(plan, night.night_of ? `Night of ${night.night_of}: deficit ${night.deficit_kwh} kWh, expected PV ${night.expected_pv_kwh} kWh${energy ? ` · ${energy}` : ""}${windows}` : "");
      const list = ((v.attributes && v.attributes.last_decision) || {}).decisions || [];
      const key = JSON.stringify(list);
      if (key !== lastDecisions) {
        lastDecisions = key;
        decisions.replaceChildren(...list.slice().reverse().map((d) =>
          h("li", {}, h("time", { datetime: d.at, text: fmtTime(d.at) }), d.text)));
        if (!list.length) decisions.append(h("li", { class: "muted", text: "none yet" }));
      }
      featured.update(v);
      numbers.update(v);
      rest.update(v);
    },
  };
}

function buildSite() {
  const root = document.getElementById("site");
  const facts = h("dl", { class: "facts" });
  const cells = {};
  for (const [key, label] of [["stored_energy", "Stored energy"], ["soc_average", "Average charge"],
    ["batteries_online", "Batteries online"], ["house_load", "House load"], ["mqtt", "MQTT"]]) {
    cells[key] = h("dd", { "data-bind": key });
    facts.append(h("dt", { text: label }), cells[key]);
  }
  root.replaceChildren(h("h2", {}, h("span", { class: "name", text: "Home" })), facts);
  return (site, mqtt) => {
    setText(cells.stored_energy, site && site.stored_energy !== null ? `${site.stored_energy.toFixed(2)} kWh` : "—");
    setText(cells.soc_average, site && site.soc_average !== null ? `${site.soc_average.toFixed(0)} %` : "—");
    setText(cells.batteries_online, site ? String(site.batteries_online ?? "—") : "—");
    setText(cells.house_load, fmtPower(site ? site.house_load : null));
    setText(cells.mqtt, mqtt && mqtt.connected ? `connected (${mqtt.broker})` : `not connected${mqtt && mqtt.last_error ? `: ${mqtt.last_error}` : ""}`);
  };
}

// ---------------------------------------------------------------------------------------------------------
// the power flow

function buildFlow() {
  const root = document.getElementById("flow");
  const nodes = {
    pv: { x: 90, y: 60, label: "PV", cls: "pv" },
    grid: { x: 90, y: 200, label: "Grid", cls: "grid" },
    load: { x: 300, y: 130, label: "Home", cls: "load" },
    battery: { x: 510, y: 60, label: "Batteries", cls: "battery" },
    wallbox: { x: 510, y: 200, label: "Car", cls: "car" },
  };
  const svg = s("svg", { viewBox: "0 0 600 260", role: "img", "aria-label": "Power flow" });
  const parts = {};
  for (const [key, node] of Object.entries(nodes)) {
    if (key === "load") continue;
    const path = s("path", { class: `link c-${node.cls}`, d: `M${node.x},${node.y} L${nodes.load.x},${nodes.load.y}` });
    svg.append(path);
    parts[key] = { path };
  }
  for (const [key, node] of Object.entries(nodes)) {
    const value = s("text", { class: "val", x: node.x, y: node.y + 6 }, "—");
    const group = s("g", { class: "node", "data-node": key },
      s("circle", { cx: node.x, cy: node.y, r: 44, class: `c-${node.cls}` }),
      s("text", { x: node.x, y: node.y - 12 }, node.label), value);
    svg.append(group);
    parts[key] = { ...(parts[key] || {}), value, group };
  }
  root.replaceChildren(h("h2", {}, h("span", { class: "name", text: "Power flow" }), h("span", { class: "muted", "data-bind": "flow-note" })), h("div", { class: "flow" }, svg));
  // Each link points from its node to the home: "reverse" makes the dashes run home -> node.
  return (site) => {
    const v = site || {};
    const flows = {
      pv: v.pv_power,
      grid: v.grid_power, // + import: towards home
      battery: v.battery_power, // + discharge: towards home
      wallbox: v.wallbox_power === null || v.wallbox_power === undefined ? null : -v.wallbox_power,
    };
    for (const [key, flow] of Object.entries(flows)) {
      const part = parts[key];
      const active = typeof flow === "number" && Math.abs(flow) > 10;
      part.path.classList.toggle("active", active);
      part.path.classList.toggle("reverse", active && flow < 0);
      const shown = key === "wallbox" ? v.wallbox_power : key === "grid" || key === "battery" ? v[`${key}_power`] : flow;
      setText(part.value, fmtPower(shown));
      part.group.style.opacity = flow === null || flow === undefined ? "0.45" : "1";
    }
    setText(parts.load.value, fmtPower(v.house_load));
    const note = root.querySelector("[data-bind=flow-note]");
    const grid = v.grid_power;
    setText(note, typeof grid === "number" ? (grid >= 0 ? "importing" : "exporting") : "no meter reading");
  };
}

// ---------------------------------------------------------------------------------------------------------
// the 24 h chart (SVG polylines; gaps where a value is missing)

function polylines(ts, values, x, y, cls) {
  const lines = [];
  let points = [];
  values.forEach((value, i) => {
    if (value === null || value === undefined) {
      if (points.length > 1) lines.push(points);
      points = [];
      return;
    }
    points.push(`${x(ts[i]).toFixed(1)},${y(value).toFixed(1)}`);
  });
  if (points.length > 1) lines.push(points);
  return lines.map((p) => s("polyline", { class: cls, points: p.join(" ") }));
}

function axisTicks(t0, t1, x, height) {
  const out = [];
  const step = 3 * 3600;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const date = new Date(t * 1000);
    out.push(s("line", { class: "axis", x1: x(t), x2: x(t), y1: 0, y2: height }));
    out.push(s("text", { class: "tick", x: x(t) + 3, y: height - 4 },
      date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  }
  return out;
}

function drawChart() {
  app.chartDirty = false;
  const root = document.getElementById("chart");
  const data = app.history;
  const heading = h("h2", {}, h("span", { class: "name", text: "Last 24 hours" }));
  if (!data || data.t.length < 2) {
    root.replaceChildren(heading, h("p", { class: "muted", text: "The chart fills in as minutes pass (one point a minute)." }));
    return;
  }
  const W = 900;
  const H = 220;
  const t1 = data.t[data.t.length - 1];
  const t0 = Math.max(data.t[0], t1 - 24 * 3600);
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * (W - 10) + 5;
  const series = ["grid", "pv", "load", "battery", "wallbox"].filter((k) => data[k] && data[k].some((v) => v !== null));
  let lo = 0;
  let hi = 100;
  for (const key of series) for (const v of data[key]) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const y = (v) => H - 10 - ((v - lo) / (hi - lo || 1)) * (H - 30);
  const power = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Power over the last 24 hours" },
    axisTicks(t0, t1, x, H), s("line", { class: "zero", x1: 0, x2: W, y1: y(0), y2: y(0) }),
    s("text", { class: "tick", x: 4, y: 14 }, fmtPower(hi)), s("text", { class: "tick", x: 4, y: H - 12 }, fmtPower(lo)),
    series.map((key) => polylines(data.t, data[key], x, y, `c-${key === "wallbox" ? "car" : key}`)));
  const names = { grid: "Grid (+ import)", pv: "PV", load: "Home", battery: "Batteries (+ discharge)", wallbox: "Car" };
  const HS = 150;
  const ys = (v) => HS - 10 - (v / 100) * (HS - 30);
  const batteries = Object.keys(data.soc || {});
  const soc = s("svg", { viewBox: `0 0 ${W} ${HS}`, role: "img", "aria-label": "State of charge over the last 24 hours" },
    axisTicks(t0, t1, x, HS), s("line", { class: "axis", x1: 0, x2: W, y1: ys(100), y2: ys(100) }),
    s("text", { class: "tick", x: 4, y: ys(100) + 12 }, "100 %"), s("text", { class: "tick", x: 4, y: ys(0) - 2 }, "0 %"),
    batteries.map((id, i) => polylines(data.t, data.soc[id], x, ys, `soc-${i % 5}`)));
  root.replaceChildren(heading,
    h("div", { class: "legend" }, series.map((key) => h("span", { class: key, text: names[key] }))),
    h("div", { class: "chart" }, power),
    h("h3", { text: "State of charge" }),
    h("div", { class: "legend" }, batteries.map((id, i) => h("span", { class: `soc-${i % 5}`, text: (app.meta.get(id) || { name: id }).name }))),
    h("div", { class: "chart" }, soc));
}

function addSample(sample) {
  const data = app.history;
  if (!data) return;
  data.t.push(sample.t);
  for (const key of ["grid", "pv", "load", "battery", "wallbox"]) (data[key] = data[key] || []).push(sample.powers[key] ?? null);
  const count = data.t.length;
  for (const [id, value] of Object.entries(sample.soc)) {
    if (!data.soc[id]) data.soc[id] = new Array(count - 1).fill(null);
    data.soc[id].push(value);
  }
  for (const id of Object.keys(data.soc)) while (data.soc[id].length < count) data.soc[id].push(null);
  const cutoff = sample.t - 24 * 3600;
  while (data.t.length && data.t[0] <= cutoff) {
    data.t.shift();
    for (const key of ["grid", "pv", "load", "battery", "wallbox"]) data[key].shift();
    for (const id of Object.keys(data.soc)) data.soc[id].shift();
  }
  if (!app.chartDirty) {
    app.chartDirty = true;
    requestAnimationFrame(drawChart);
  }
}

// ---------------------------------------------------------------------------------------------------------
// putting it together

let siteUpdate = null;
let flowUpdate = null;

async function loadMeta() {
  const meta = await getJSON("api/devices");
  app.signature = meta.signature;
  app.meta.clear();
  for (const device of meta.devices) app.meta.set(device.id, { ...device, byKey: new Map(device.exposes.map((e) => [e.key, e])) });
  const containers = { battery: document.getElementById("batteries"), wallbox: document.getElementById("wallboxes") };
  app.cards.clear();
  containers.battery.replaceChildren();
  containers.wallbox.replaceChildren();
  for (const device of app.meta.values()) {
    if (device.kind === "battery") app.cards.set(device.id, buildBattery(device));
    else if (device.kind === "wallbox") app.cards.set(device.id, buildWallbox(device));
    else if (device.kind === "optimiser") app.cards.set(device.id, buildOptimiser(device));
    else continue;
    const card = app.cards.get(device.id);
    if (device.kind === "optimiser") document.getElementById("optimiser").replaceWith(Object.assign(card.root, { id: "optimiser" }));
    else containers[device.kind].append(card.root);
  }
  if (!app.meta.has("optimiser")) document.getElementById("optimiser").hidden = true;
  if (app.data) render(app.data);
}

function renderProblems(problems, waiting) {
  const el = document.getElementById("problems");
  const items = problems.map((p) => h("li", {}, h("strong", { text: `${p.source}: ` }), p.text));
  el.hidden = items.length === 0;
  el.replaceChildren(h("strong", { text: items.length === 1 ? "1 problem" : `${items.length} problems` }), h("ul", {}, items));
  void waiting;
}

function render(data) {
  app.data = data;
  setText(document.getElementById("clock"), data.time ? new Date(data.time).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" }) : "");
  renderProblems(data.problems || [], data.waiting || []);
  if (!siteUpdate) siteUpdate = buildSite();
  if (!flowUpdate) flowUpdate = buildFlow();
  siteUpdate(data.site, data.mqtt);
  flowUpdate(data.site);
  for (const device of [...data.batteries, ...data.wallboxes, ...(data.optimiser ? [data.optimiser] : [])]) {
    const card = app.cards.get(device.id);
    if (card) card.update(device);
  }
}

function live(text, cls) {
  const badge = document.getElementById("live");
  setText(badge, text);
  badge.className = `badge ${cls}`;
}

function connect() {
  const events = new EventSource("api/events");
  events.addEventListener("open", () => live("live", "ok"));
  events.addEventListener("error", () => live("reconnecting…", "warn"));
  events.addEventListener("devices", (event) => {
    const { signature } = JSON.parse(event.data);
    if (signature !== app.signature) loadMeta().catch((error) => toast(`Loading the devices failed: ${error.message}`, true));
  });
  events.addEventListener("state", (event) => render(JSON.parse(event.data)));
  events.addEventListener("sample", (event) => addSample(JSON.parse(event.data)));
  events.addEventListener("bye", () => live("add-on stopped", "bad"));
}

async function start() {
  try {
    await loadMeta();
    app.history = await getJSON("api/history");
    drawChart();
  } catch (error) {
    toast(`The add-on did not answer: ${error.message}`, true);
  }
  connect();
}

document.addEventListener("DOMContentLoaded", start);
