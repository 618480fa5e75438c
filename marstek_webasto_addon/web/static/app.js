// The panel: cards and controls generated from the devices' exposes (api/devices), values pushed by the
// server (api/events), every control sent through api/command. No framework, no CDN, relative URLs only.
"use strict";

const NS = "http://www.w3.org/2000/svg";
const GRID_DEADBAND_W = 50; // the import/export note changes only beyond this
const app = {
  meta: new Map(), // device id -> {id, kind, name, exposes, byKey}
  signature: null,
  data: null, // the latest api/state
  history: null, // api/history columns
  plan: null, // api/plan
  timeline: null, // the uPlot chart and what it shows
  cards: new Map(), // device id -> {root, update(values)}
  flow: null,
  chartDirty: false,
  language: "en", // the labels' language: Home Assistant's when known (see pickLanguage)
  labels: {}, // raw enum value -> its label in that language (api/devices, from web/labels.py)
  waiting: new Map(), // "kind:name" -> the greyed card of a configured device that has not answered
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

// An enum value as a person reads it, in the panel's language (web/labels.py); a value without a label
// still reads: `no_vehicle` -> "No vehicle". Only the text changes: controls keep sending the raw value.
function enumLabel(value) {
  if (value === null || value === undefined) return "—";
  const label = app.labels[value];
  if (typeof label === "string") return label;
  const text = String(value).replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// Home Assistant's language when the page can see it (under ingress the panel shares its origin: the
// frontend's <html lang> and its stored choice), else the one the request's Accept-Language asked for (the
// server's pick), else the browser's; English when none of them is one of ours.
function pickLanguage(serverPick, tables) {
  const ours = (tag) => {
    const code = String(tag || "").toLowerCase().split(/[-_]/)[0];
    return Object.prototype.hasOwnProperty.call(tables, code) ? code : null;
  };
  const candidates = [];
  try {
    if (window.parent && window.parent !== window) {
      const stored = window.parent.localStorage.getItem("selectedLanguage");
      if (stored) candidates.push(JSON.parse(stored));
      candidates.push(window.parent.document.documentElement.lang);
    }
  } catch (error) { /* another origin (a bare port in a frame): not ours to read */ }
  candidates.push(serverPick, ...(navigator.languages || []), navigator.language);
  for (const tag of candidates) if (ours(tag)) return ours(tag);
  return "en";
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
        (expose.options || []).map((option) => h("option", { value: option, text: enumLabel(option) })));
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

// The online/offline badge; offline, the card greys and says why (the runtime's problem for the device).
function connectionBadge() {
  const badge = h("span", { class: "badge" });
  const detail = offlineDetail();
  detail.el.hidden = true;
  return {
    el: badge,
    reason: detail.el,
    update(values) {
      const online = values.available;
      setText(badge, enumLabel(online ? "online" : "offline"));
      badge.className = `badge ${online ? "ok" : "bad"}`;
      const card = badge.closest("section.card");
      if (card) card.classList.toggle("unreachable", !online);
      detail.el.hidden = Boolean(online);
      const connection = (values.attributes && values.attributes.connection) || {};
      if (!online) detail.update(connection.address, offlineReason(values.name));
    },
  };
}

// Where a device that does not answer is expected, and why it is not: under its name, never greyed.
function offlineDetail() {
  const address = h("dd", { "data-bind": "address" });
  const reason = h("p", { class: "reason", "data-bind": "reason" });
  return {
    el: h("div", { class: "offline-detail" }, h("dl", { class: "facts" }, h("dt", { text: "Address" }), address), reason),
    update(where, why) {
      setText(address, where || "—");
      setText(reason, why || "");
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
  // A person's command holds the battery, or a mode switched in the Marstek app (manual_hold_outside_mode):
  // say which and until when, and offer to hand it back to the optimiser.
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
    h("h2", {}, h("span", { class: "name", text: meta.name }), badge.el), badge.reason,
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
      setText(cells.mode, enumLabel(v.mode));
      setText(cells.role, enumLabel((app.data && app.data.optimiser && app.data.optimiser.roles && app.data.optimiser.roles[meta.name]) ?? null));
      setText(cells.temperature, fmtValue(meta.byKey.get("temperature"), v.temperature));
      setText(cells.remaining_energy, fmtValue(meta.byKey.get("remaining_energy"), v.remaining_energy));
      if (mode) mode.update(v.mode);
      hold.hidden = !v.manual_hold;
      if (v.manual_hold) {
        const until = new Date(v.manual_hold).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        // An app-change hold (the mode switched in the Marstek app) is no command given here.
        const appMode = v.manual_hold_outside_mode;
        setText(holdText, appMode
          ? `Switched to ${enumLabel(appMode)} in the Marstek app: the optimiser leaves this battery alone until ${until}. Return to optimiser hands it back now.`
          : `Your command holds this battery until ${until}: the optimiser leaves it alone.`);
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
    h("h2", {}, h("span", { class: "name", text: meta.name }), badge.el), badge.reason,
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

function fmtEuro(value) {
  if (typeof value !== "number") return "—";
  return `€ ${(Math.abs(value) < 0.005 ? 0 : value).toFixed(2)}`; // never "-0.00"
}

// What a run of quarters is for, from its first quarter's reason without the words the line already says.
function planWhy(step) {
  return String(step.reason || "")
    .replace(/^(self-consumption|charge [\d.]+ kW|discharge [\d.]+ kW):?\s*/, "")
    .replace(/: import [\d.]+ kW.*$/, "");
}

// The plan's quarters from now on, consecutive ones with the same action merged into one run.
function planRuns(plan, now) {
  const runs = [];
  for (const step of (plan && plan.steps) || []) {
    const start = epochOf(step.start);
    const end = start + step.hours * 3600;
    if (!(end > now)) continue;
    const last = runs[runs.length - 1];
    if (last && last.action === step.action && Math.abs(last.end - start) < 90) { // a part quarter ends early
      last.end = end;
      last.kwh += step.battery_kw * step.hours;
      last.hours += step.hours;
      continue;
    }
    runs.push({ action: step.action, start: Math.max(start, now), end, kwh: step.battery_kw * step.hours, hours: step.hours, why: planWhy(step) });
  }
  return runs;
}

function runText(run, now) {
  const day = (t) => new Date(t * 1000).toDateString();
  const prefix = day(run.start) !== day(now) ? `${new Date(run.start * 1000).toLocaleDateString("en-GB", { weekday: "short" })} ` : "";
  const clock = (t) => { const d = new Date(t * 1000); return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`; };
  const endClock = day(run.end) === day(run.start) ? clock(run.end)
    : day(run.end - 1) === day(run.start) ? "24:00"
      : `${new Date(run.end * 1000).toLocaleDateString("en-GB", { weekday: "short" })} ${clock(run.end)}`;
  const kw = Math.abs(run.kwh / (run.hours || 1));
  const power = run.action === "charge" || run.action === "discharge" ? ` ${kw.toFixed(1)} kW` : "";
  return [`${prefix}${clock(run.start)}–${endClock}`, `${enumLabel(run.action)}${power}`, run.why];
}

// The running quarter-hour's average offtake against the capacity target: a bar with the target marked.
function peakMeter() {
  const fill = h("div", { class: "fill" });
  const mark = h("div", { class: "mark" });
  const bar = h("div", { class: "meter", role: "meter", "aria-label": "This quarter-hour's average against the target", "aria-valuemin": 0 }, fill, mark);
  const text = h("div", { class: "meter-text", "data-bind": "quarter" });
  return {
    el: h("div", { class: "peak" }, bar, text),
    update(average, target) {
      const known = typeof average === "number" && typeof target === "number" && target > 0;
      const top = known ? Math.max(target * 1.25, average) : 1;
      fill.style.width = known ? `${Math.max(0, Math.min(100, (average / top) * 100)).toFixed(1)}%` : "0%";
      mark.style.left = known ? `${((target / top) * 100).toFixed(1)}%` : "80%";
      bar.className = `meter ${!known ? "" : average > target ? "bad" : average > 0.8 * target ? "warn" : "ok"}`;
      bar.setAttribute("aria-valuenow", known ? average : 0);
      bar.setAttribute("aria-valuemax", top);
      setText(text, known ? `This quarter-hour ${average.toFixed(2)} kW · target ${target.toFixed(2)} kW` : typeof average === "number" ? `This quarter-hour ${average.toFixed(2)} kW` : "This quarter-hour: —");
    },
  };
}

function buildOptimiser(meta) {
  const facts = h("dl", { class: "facts" });
  const cells = [];
  const rows = [["strategy", "Strategy"], ["active_battery", "Active battery"], ["next_action", "Next"],
    ["tariff_period", "Tariff period"], ["month_peak", "Month peak"], ["plan_peak_target", "Planned month peak"],
    ["pv_forecast_tomorrow", "PV tomorrow"], ["night_plan", "Night plan"]];
  const rulesOnly = new Set(["next_action", "night_plan", "active_battery"]); // hidden while the plan runs
  const rowEls = new Map();
  for (const [key, label] of rows) {
    if (!meta.byKey.get(key)) continue;
    const dt = h("dt", { text: label });
    const dd = h("dd", { "data-bind": key });
    facts.append(dt, dd);
    cells.push([key, dd]);
    rowEls.set(key, [dt, dd]);
  }
  const money = h("div", { class: "money", "aria-label": "Money" });
  const amounts = {};
  for (const [key, label] of [["plan_cost_today", "Cost today"], ["plan_saving_today", "Saved today"], ["plan_cost_tomorrow", "Cost tomorrow"]]) {
    if (!meta.byKey.get(key)) continue;
    amounts[key] = h("span", { class: "amount", "data-bind": key, text: "—" });
    money.append(h("div", { class: "figure" }, h("span", { class: "label", text: label }), amounts[key]));
  }
  const planNow = h("div", { class: "plan-now", "data-bind": "plan-now" });
  const peak = peakMeter();
  const planList = h("ol", { class: "plan-list", "aria-label": "The plan", "data-bind": "plan-list" });
  let lastRuns = "";
  const showPlan = (plan) => {
    const now = app.data && app.data.time ? epochOf(app.data.time) : Date.now() / 1000;
    const runs = planRuns(plan, now).slice(0, 8);
    const key = JSON.stringify(runs.map((r) => runText(r, now)));
    if (key === lastRuns) return;
    lastRuns = key;
    planList.replaceChildren(...runs.map((run) => {
      const [when, what, why] = runText(run, now);
      return h("li", { class: `plan-${run.action}` }, h("time", { text: when }), " ", h("strong", { text: what }), why ? h("span", { class: "muted", text: ` (${why})` }) : null);
    }));
    planList.hidden = runs.length === 0;
  };
  const hold = h("div", { class: "outcome" });
  const featured = controlGroup(meta, (e) => e.featured && e.component === "switch", "controls switches");
  const numbers = controlGroup(meta, (e) => e.featured && e.component !== "switch");
  const rest = controlGroup(meta, (e) => !e.featured);
  const plan = h("div", { class: "muted outcome" });
  const decisions = h("ol", { class: "decisions", "aria-label": "Last decisions" });
  const planHeading = h("h3", { text: "The plan" });
  const root = h("section", { class: "card optimiser", "data-device": meta.id, "aria-label": meta.name },
    h("h2", {}, h("span", { class: "name", text: "Optimiser" }), h("span", { class: "badge", "data-bind": "enabled" })),
    featured.el, numbers.el, hold, money, planNow, peak.el, facts, plan,
    planHeading, planList,
    h("h3", { text: "Last decisions" }), decisions,
    h("details", {}, h("summary", { text: "All settings" }), rest.el));
  let lastDecisions = "";
  return {
    root,
    plan: showPlan,
    update(v) {
      for (const [key, el] of Object.entries(amounts)) setText(el, fmtEuro(v[key]));
      money.hidden = Object.keys(amounts).every((key) => typeof v[key] !== "number");
      const planning = typeof v.plan_action === "string" && v.plan_action !== "";
      planNow.hidden = !planning;
      if (planning) {
        const reason = planWhy({ reason: ((v.attributes || {}).plan_action || {}).reason || "" });
        const next = v.plan_next_change && v.plan_next_change !== "none" ? `Next: ${v.plan_next_change}` : "No change planned";
        planNow.replaceChildren(h("div", {}, "Now: ", h("strong", { text: enumLabel(v.plan_action) }),
          reason ? h("span", { class: "muted", text: ` (${reason})` }) : null), h("div", { class: "muted", text: next }));
      }
      planHeading.hidden = !planning;
      if (!planning) planList.hidden = true;
      else if (app.plan) showPlan(app.plan);
      for (const [key, [dt, dd]] of rowEls) {
        const hide = (planning && rulesOnly.has(key)) || (key === "plan_peak_target" && typeof v[key] !== "number");
        dt.hidden = hide;
        dd.hidden = hide;
      }
      peak.update(v.quarter_average, v.peak_target_in_force);
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
      plan.hidden = planning;
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
    // a deadband, so the note does not flip on a few watts either way
    setText(note, typeof grid !== "number" ? "no meter reading" : enumLabel(grid > GRID_DEADBAND_W ? "importing" : grid < -GRID_DEADBAND_W ? "exporting" : "balanced"));
  };
}

// ---------------------------------------------------------------------------------------------------------
// the timeline: the last 24 h (api/history, a point a minute) and the plan's coming quarters (api/plan) in
// one uPlot chart. uPlot comes from npm (package.json) and is served under vendor/; without it the panel
// says the chart library is missing and everything else works.

const POWER_SERIES = [["grid", "Grid (+ import)", "--grid"], ["pv", "PV", "--pv"], ["load", "Home", "--load"],
  ["battery", "Batteries (+ discharge)", "--battery"], ["wallbox", "Car", "--car"]];
const SOC_COLOURS = ["--battery", "--load", "--pv", "--grid", "--car"];
const PLAN_REFRESH_MS = 30_000;

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function pad2(n) { return String(n).padStart(2, "0"); }

// 24-hour local time; midnight shows the day instead, so a reader sees where tomorrow starts.
function axisLabel(t) {
  const date = new Date(t * 1000);
  if (date.getHours() === 0 && date.getMinutes() === 0) return date.toLocaleDateString("en-GB", { weekday: "short", day: "numeric" });
  return `${pad2(date.getHours())}:${pad2(date.getMinutes())}`;
}

function cursorLabel(t) {
  if (t === null || t === undefined) return "—";
  const date = new Date(t * 1000);
  return `${date.toLocaleDateString("en-GB", { weekday: "short" })} ${pad2(date.getHours())}:${pad2(date.getMinutes())}`;
}

function epochOf(iso) { return new Date(iso).getTime() / 1000; }

function batteryName(id) { return (app.meta.get(id) || { name: id }).name; }

// The chart's columns. The history runs to its last minute; the plan from now on: steps already over are
// left out, the running one starts at now, each step's value holds until the next (SOC: at the step's end,
// as the plan gives it). Powers in kW, SOC in %, the price in EUR/kWh.
function timelineData(history, plan, stateNow, liveSoc) {
  const hist = history && history.t ? history : { t: [], soc: {} };
  const lastT = hist.t.length ? hist.t[hist.t.length - 1] : -Infinity;
  const now = Math.max(stateNow || 0, lastT > 0 ? lastT : 0) || Date.now() / 1000;
  const steps = [];
  for (const step of (plan && plan.steps) || []) {
    const start = epochOf(step.start);
    const end = start + step.hours * 3600;
    if (Number.isFinite(start) && end > now + 1) steps.push({ step, x: Math.max(start, now), end });
  }
  const x = [...hist.t];
  const planIndex = [];
  for (const px of [...steps.map((s) => s.x), ...(steps.length ? [steps[steps.length - 1].end] : [])]) {
    if (x.length && px <= x[x.length - 1]) planIndex.push(x.length - 1);
    else { x.push(px); planIndex.push(x.length - 1); }
  }
  const empty = () => new Array(x.length).fill(null);
  const series = [];
  const add = (key, label, colour, scale, values, extra = {}) => series.push({ key, label, colour, scale, values, ...extra });
  const kw = (w) => (w === null || w === undefined ? null : w / 1000);
  for (const [key, label, colour] of POWER_SERIES) {
    const column = hist[key] || [];
    if (!column.some((v) => v !== null && v !== undefined) && key !== "grid") continue;
    add(key, label, colour, "kW", [...column.map(kw), ...new Array(x.length - hist.t.length).fill(null)]);
  }
  const batteries = [...new Set([...Object.keys(hist.soc || {}), ...((plan && plan.batteries) || [])])];
  batteries.forEach((id, i) => {
    const column = (hist.soc || {})[id] || new Array(hist.t.length).fill(null);
    add(`soc:${id}`, `${batteryName(id)} SOC`, SOC_COLOURS[i % SOC_COLOURS.length], "%",
      [...column, ...new Array(x.length - hist.t.length).fill(null)], { width: 1.2 });
  });
  const planned = (key, label, colour, scale, pick, extra = {}) => {
    const values = empty();
    steps.forEach((s, j) => { values[planIndex[j]] = pick(s.step); });
    if (steps.length) values[planIndex[steps.length]] = pick(steps[steps.length - 1].step);
    add(key, label, colour, scale, values, { dash: [6, 4], step: true, ...extra });
  };
  if (steps.length) {
    planned("plan:grid", "Grid, planned", "--grid", "kW", (s) => s.grid_kw);
    planned("plan:battery", "Batteries, planned", "--battery", "kW", (s) => s.battery_kw);
    planned("plan:pv", "PV forecast", "--pv", "kW", (s) => s.pv_kw, { show: false });
    planned("plan:load", "Home forecast", "--load", "kW", (s) => s.load_kw, { show: false });
    planned("plan:wallbox", "Car, planned", "--car", "kW", (s) => s.wallbox_kw, { show: false });
    batteries.forEach((id, i) => {
      const values = empty();
      const known = liveSoc[id] ?? ((hist.soc || {})[id] || []).slice(-1)[0];
      values[planIndex[0]] = known ?? null;
      steps.forEach((s, j) => { values[planIndex[j + 1]] = s.step.soc[id] ?? null; });
      add(`plan:soc:${id}`, `${batteryName(id)} SOC, planned`, SOC_COLOURS[i % SOC_COLOURS.length], "%", values, { dash: [3, 3], width: 1.2 });
    });
    planned("plan:price", "Import price", "--muted", "EUR", (s) => s.import_price, { dash: null, width: 1.4 });
  }
  const target = app.data && app.data.optimiser ? app.data.optimiser.peak_target_in_force : null;
  if (typeof target === "number" && x.length > 1) {
    const values = empty();
    values[0] = target;
    values[x.length - 1] = target;
    add("target", "Capacity target", "--bad", "kW", values, { dash: [2, 4], width: 1, spanGaps: true });
  }
  return { x, series, now, steps: steps.map((s, j) => ({ start: s.step.start, index: planIndex[j], end: planIndex[j + 1] })) };
}

function seriesOptions(item) {
  const unit = item.scale === "kW" ? " kW" : item.scale === "%" ? " %" : " EUR/kWh";
  const digits = item.scale === "kW" ? 2 : item.scale === "%" ? 0 : 3;
  const options = {
    label: item.label,
    scale: item.scale,
    stroke: cssVar(item.colour),
    width: item.width || 1.6,
    show: item.show !== false,
    spanGaps: Boolean(item.spanGaps),
    value: (u, v) => (v === null || v === undefined ? "—" : `${v.toFixed(digits)}${unit}`),
    points: { show: false },
  };
  if (item.dash) options.dash = item.dash;
  if (item.step) options.paths = uPlot.paths.stepped({ align: 1 });
  return options;
}

function chartSize(el) {
  const width = Math.max(240, el.clientWidth);
  return { width, height: width < 520 ? 240 : 320 };
}

function buildTimeline(el, model) {
  const text = cssVar("--muted");
  const line = cssVar("--line");
  const axis = (extra) => ({ stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 }, ...extra });
  const narrow = el.clientWidth < 520;
  const ticks = el.parentElement.querySelector("[data-axis=x]");
  let xSplits = [];
  const opts = {
    ...chartSize(el),
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, "%": { range: [0, 100] }, EUR: { range: (u, lo, hi) => [Math.min(0, lo), Math.max(0.05, hi * 1.1)] } },
    series: [{ label: "Time", value: (u, t) => cursorLabel(t) }, ...model.series.map(seriesOptions)],
    axes: [
      axis({ space: narrow ? 48 : 60, values: (u, splits) => { xSplits = splits; return splits.map(axisLabel); } }),
      axis({ scale: "kW", size: narrow ? 40 : 50, values: (u, splits) => splits.map((v) => `${+v.toFixed(2)}`), label: narrow ? null : "kW", labelSize: 16 }),
      axis({ scale: "%", side: 1, size: narrow ? 44 : 48, grid: { show: false }, values: (u, splits) => splits.map((v) => `${v}%`) }),
      axis({ scale: "EUR", side: 1, show: !narrow && model.series.some((s) => s.scale === "EUR"), size: 52, grid: { show: false }, values: (u, splits) => splits.map((v) => `€${v.toFixed(2)}`) }),
    ],
    hooks: {
      draw: [(u) => {
        const now = app.timeline && app.timeline.model.now;
        if (now) {
          const left = u.valToPos(now, "x", true);
          const ctx = u.ctx;
          ctx.save();
          ctx.strokeStyle = text;
          ctx.fillStyle = text;
          ctx.lineWidth = devicePixelRatio;
          ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
          ctx.beginPath();
          ctx.moveTo(left, u.bbox.top);
          ctx.lineTo(left, u.bbox.top + u.bbox.height);
          ctx.stroke();
          ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
          ctx.fillText("now", left + 3 * devicePixelRatio, u.bbox.top + 11 * devicePixelRatio);
          ctx.restore();
        }
        // The time axis in words too: a reader without the picture, and the tests, see the same labels.
        const splits = xSplits;
        const shown = splits.map((t) => [t, axisLabel(t)]).filter(([t]) => t >= u.scales.x.min && t <= u.scales.x.max);
        const key = JSON.stringify(shown);
        if (ticks && ticks.dataset.key !== key) {
          ticks.dataset.key = key;
          ticks.replaceChildren(...shown.map(([t, label]) => h("li", { "data-t": t, text: label })));
        }
      }],
    },
  };
  return new uPlot(opts, [model.x, ...model.series.map((s) => s.values)], el);
}

function timelineShell(root) {
  const heading = h("h2", {}, h("span", { class: "name", text: "Timeline" }),
    h("span", { class: "muted", "data-bind": "plan-status" }));
  const plot = h("div", { class: "timeline" });
  const ticks = h("ol", { class: "sr-only", "data-axis": "x", "aria-label": "Time axis" });
  root.replaceChildren(heading, plot, ticks);
  return { heading, plot };
}

function drawChart() {
  app.chartDirty = false;
  const root = document.getElementById("chart");
  if (typeof uPlot === "undefined") {
    if (!root.querySelector("[data-bind=chart-missing]")) {
      root.replaceChildren(h("h2", {}, h("span", { class: "name", text: "Timeline" })),
        h("p", { class: "muted", "data-bind": "chart-missing",
          text: "The chart library (uPlot) is missing: run scripts/bootstrap, which installs it with npm. Everything else on this page works without it." }));
    }
    return;
  }
  const liveSoc = {};
  for (const battery of (app.data && app.data.batteries) || []) if (typeof battery.soc === "number") liveSoc[battery.id] = battery.soc;
  const stateNow = app.data && app.data.time ? epochOf(app.data.time) : null;
  const model = timelineData(app.history, app.plan, stateNow, liveSoc);
  const plan = app.plan || {};
  if (!app.timeline) app.timeline = { ...timelineShell(root), chart: null, signature: "" };
  const timeline = app.timeline;
  timeline.model = model;
  setText(timeline.heading.querySelector("[data-bind=plan-status]"),
    (plan.steps || []).length ? `last 24 h and the plan (made ${fmtTime(plan.made_at)})` : `last 24 h · plan: ${plan.status || "loading…"}`);
  if (model.x.length < 2) {
    if (timeline.chart) { timeline.chart.destroy(); timeline.chart = null; timeline.signature = ""; }
    if (!timeline.plot.querySelector("p")) timeline.plot.replaceChildren(h("p", { class: "muted", text: "The chart fills in as minutes pass (one point a minute)." }));
    return;
  }
  const signature = model.series.map((s) => s.key).join("|") + (timeline.plot.clientWidth < 520 ? ":narrow" : "");
  if (!timeline.chart || signature !== timeline.signature) {
    const shown = new Map();
    if (timeline.chart) {
      timeline.chart.series.slice(1).forEach((s, i) => shown.set(timeline.keys[i], s.show));
      timeline.chart.destroy();
    }
    for (const item of model.series) if (shown.has(item.key)) item.show = shown.get(item.key);
    timeline.plot.replaceChildren();
    timeline.chart = buildTimeline(timeline.plot, model);
    timeline.keys = model.series.map((s) => s.key);
    timeline.signature = signature;
  } else {
    timeline.chart.setData([model.x, ...model.series.map((s) => s.values)]);
  }
  // for a look from the console and the browser tests: the columns exactly as drawn
  window.mwaTimeline = { x: model.x, now: model.now, steps: model.steps, made_at: plan.made_at || null,
    columns: Object.fromEntries(model.series.map((s) => [s.key, s.values])) };
}

function scheduleChart() {
  if (!app.chartDirty) {
    app.chartDirty = true;
    requestAnimationFrame(drawChart);
  }
}

async function loadPlan() {
  try {
    app.plan = await getJSON("api/plan");
  } catch (error) {
    app.plan = { status: `not loaded (${error.message})`, steps: [] };
  }
  scheduleChart();
  if (app.cards.get("optimiser")) app.cards.get("optimiser").plan(app.plan);
  return app.plan;
}

window.mwaLoadPlan = () => loadPlan(); // for a look from the console and the browser tests

function watchChartSize() {
  const root = document.getElementById("chart");
  if (typeof ResizeObserver === "undefined") return;
  let width = root.clientWidth;
  new ResizeObserver(() => {
    if (root.clientWidth === width) return;
    width = root.clientWidth;
    const timeline = app.timeline;
    if (!timeline || !timeline.chart) return;
    const narrow = timeline.plot.clientWidth < 520;
    if (narrow !== timeline.signature.endsWith(":narrow")) scheduleChart(); // other axes: built anew
    else timeline.chart.setSize(chartSize(timeline.plot));
  }).observe(root);
}

function addSample(sample) {
  const data = app.history;
  if (!data) return;
  data.t.push(sample.t);
  for (const key of ["grid", "pv", "load", "battery", "wallbox"]) (data[key] = data[key] || []).push(sample.powers[key] ?? null);
  const count = data.t.length;
  data.soc = data.soc || {};
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
  scheduleChart();
}
// ---------------------------------------------------------------------------------------------------------
// putting it together

let siteUpdate = null;
let flowUpdate = null;

async function loadMeta() {
  const meta = await getJSON("api/devices");
  app.signature = meta.signature;
  const tables = meta.labels || {};
  app.language = pickLanguage(meta.language, tables);
  app.labels = tables[app.language] || {};
  document.documentElement.lang = app.language;
  app.meta.clear();
  for (const device of meta.devices) app.meta.set(device.id, { ...device, byKey: new Map(device.exposes.map((e) => [e.key, e])) });
  const containers = { battery: document.getElementById("batteries"), wallbox: document.getElementById("wallboxes") };
  app.cards.clear();
  app.waiting.clear();
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

// A configured battery or wallbox that has never answered has no exposes yet, but still its card: greyed,
// with its name, its address and why (the runtime's problem text).
function waitingCard(device) {
  const detail = offlineDetail();
  const root = h("section", { class: `card ${device.kind} unreachable`, "aria-label": device.name, "data-waiting": device.kind },
    h("h2", {}, h("span", { class: "name", text: device.name }), h("span", { class: "badge bad", text: enumLabel("offline") })),
    detail.el);
  return { root, update(item) { detail.update(item.address, item.reason); } };
}

function renderWaiting(waiting) {
  const containers = { battery: document.getElementById("batteries"), wallbox: document.getElementById("wallboxes") };
  const seen = new Set();
  for (const item of waiting) {
    if (!containers[item.kind]) continue;
    const key = `${item.kind}:${item.name}`;
    seen.add(key);
    let card = app.waiting.get(key);
    if (!card) {
      card = waitingCard(item);
      app.waiting.set(key, card);
      containers[item.kind].append(card.root);
    }
    card.update(item);
  }
  for (const [key, card] of app.waiting) {
    if (seen.has(key)) continue;
    card.root.remove();
    app.waiting.delete(key);
  }
}

// A device that answered once and is offline now keeps its card, greyed, with the reason under its name.
function offlineReason(name) {
  const problem = ((app.data && app.data.problems) || []).find((p) => p.source === name);
  return problem ? problem.text : "no answer";
}

function render(data) {
  app.data = data;
  setText(document.getElementById("clock"), data.time ? new Date(data.time).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" }) : "");
  renderProblems(data.problems || [], data.waiting || []);
  renderWaiting(data.waiting || []);
  if (!siteUpdate) siteUpdate = buildSite();
  if (!flowUpdate) flowUpdate = buildFlow();
  siteUpdate(data.site, data.mqtt);
  flowUpdate(data.site);
  for (const device of [...data.batteries, ...data.wallboxes, ...(data.optimiser ? [data.optimiser] : [])]) {
    const card = app.cards.get(device.id);
    if (card) card.update(device);
  }
}

// ---------------------------------------------------------------------------------------------------------
// the savings report: the replay on the site's own recorded history (api/report), run in the background

const REPORT_SCENARIOS = ["no_battery", "auto_all", "rules", "optimiser", "bound"];
const REPORT_COLOURS = { no_battery: "--grid", auto_all: "--load", rules: "--pv", optimiser: "--battery", bound: "--muted" };
const REPORT_POLL_MS = 1000;

function reportShell(root) {
  const run = h("button", { type: "button", class: "primary", "data-bind": "report-run", text: "Run the report" });
  const cancel = h("button", { type: "button", "data-bind": "report-cancel", text: "Cancel", hidden: true });
  const bar = h("progress", { max: "1", value: "0", hidden: true, "data-bind": "report-progress", "aria-label": "Savings report: progress" });
  const status = h("span", { class: "muted", "data-bind": "report-status", role: "status" });
  const error = h("p", { class: "field-error", "data-bind": "report-error", role: "alert" });
  const about = h("p", { class: "muted", "data-bind": "report-about" });
  const table = h("div", { class: "report-table", "data-bind": "report-table" });
  const chart = h("div", { class: "report-chart", "data-bind": "report-chart" });
  const notes = h("ul", { class: "muted", "data-bind": "report-notes" });
  root.replaceChildren(
    h("h2", {}, h("span", { class: "name", text: "Savings report" })),
    h("p", { class: "muted", text: "Your own recorded weeks replayed: no battery, the batteries in Auto, the rules and the planner, against the best possible (perfect foresight)." }),
    h("div", { class: "report-run" }, run, cancel, bar, status), error, about, table, chart, notes);
  run.addEventListener("click", startReport);
  cancel.addEventListener("click", cancelReport);
  return { root, run, cancel, bar, status, error, about, table, chart, notes, shown: null, plot: null };
}

function reportTable(report) {
  const head = h("tr", {}, ["Scenario", "Bill", "Saving vs no battery", "Share of the best possible"].map((t) => h("th", { scope: "col", text: t })));
  const rows = REPORT_SCENARIOS.map((name) => {
    const s = report.scenarios[name];
    const share = s.share === null ? "—" : `${Math.round(s.share * 100)} %`;
    return h("tr", { "data-scenario": name },
      h("th", { scope: "row", text: enumLabel(name) }),
      h("td", { "data-key": "bill", "data-value": s.bill_eur, text: fmtEuro(s.bill_eur) }),
      h("td", { "data-key": "saving", "data-value": s.saving_eur, text: fmtEuro(s.saving_eur) }),
      h("td", { "data-key": "share", "data-value": s.share ?? "", text: share }));
  });
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

// One bar per scenario and month, side by side (uPlot's bars, each series shifted within its month).
function reportChart(el, report) {
  if (typeof uPlot === "undefined") return null;
  const months = report.months;
  const x = months.map((_, i) => i);
  const width = 0.8 / REPORT_SCENARIOS.length;
  const text = cssVar("--muted");
  const line = cssVar("--line");
  const series = REPORT_SCENARIOS.map((name, k) => ({
    label: enumLabel(name),
    stroke: cssVar(REPORT_COLOURS[name]),
    fill: cssVar(REPORT_COLOURS[name]),
    width: 0,
    value: (u, v) => (v === null || v === undefined ? "—" : fmtEuro(v)),
    points: { show: false },
    paths: uPlot.paths.bars({
      disp: {
        x0: { unit: 1, values: () => x.map((i) => i - 0.4 + k * width) },
        size: { unit: 1, values: () => x.map(() => width * 0.9) },
      },
    }),
  }));
  const opts = {
    width: Math.max(240, el.clientWidth),
    height: 240,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false, range: [-0.5, months.length - 0.5] }, y: { range: (u, lo, hi) => [Math.min(0, lo), Math.max(1, hi * 1.1)] } },
    series: [{ label: "Month", value: (u, i) => (i === null ? "—" : months[Math.round(i)] || "") }, ...series],
    axes: [
      { stroke: text, grid: { show: false }, ticks: { stroke: line }, splits: () => x, values: (u, splits) => splits.map((i) => months[i] || "") },
      { stroke: text, grid: { stroke: line, width: 1 }, ticks: { stroke: line }, size: 56, values: (u, splits) => splits.map((v) => `€${+v.toFixed(2)}`) },
    ],
  };
  const data = [x, ...REPORT_SCENARIOS.map((name) => months.map((m) => report.scenarios[name].months[m].bill_eur))];
  return new uPlot(opts, data, el);
}

function renderReport(status) {
  if (!app.report) app.report = reportShell(document.getElementById("report"));
  const view = app.report;
  const running = status.state === "running";
  view.run.disabled = running;
  view.cancel.hidden = !running;
  view.cancel.disabled = false;
  view.bar.hidden = !running;
  view.bar.value = status.progress || 0;
  const made = status.finished ? `made ${fmtTime(status.finished)}` : "not run yet";
  setText(view.status, running ? `running… ${Math.round((status.progress || 0) * 100)} %`
    : status.state === "cancelled" ? `cancelled; ${status.finished ? `the last report was ${made}` : "no report yet"}` : made);
  setText(view.error, status.state === "failed" ? `The report failed: ${status.error}` : "");
  const report = status.report;
  const key = report ? JSON.stringify([report.from, report.to, status.finished]) : null;
  if (key === view.shown) return;
  view.shown = key;
  if (view.plot) { view.plot.destroy(); view.plot = null; }
  if (!report) {
    view.about.textContent = "";
    view.table.replaceChildren();
    view.chart.replaceChildren();
    view.notes.replaceChildren();
    return;
  }
  setText(view.about, `${fmtDate(report.from)} – ${fmtDate(report.to)} (${report.days} ${report.days === 1 ? "day" : "days"}), ${report.batteries} batteries, prices: ${report.prices}. Bills per month, energy and capacity tariff:`);
  view.table.replaceChildren(reportTable(report));
  view.chart.replaceChildren();
  view.plot = reportChart(view.chart, report);
  if (!view.plot) view.chart.append(h("p", { class: "muted", text: "The chart library (uPlot) is missing: the months are in the table's figures only." }));
  view.notes.replaceChildren(...report.notes.map((note) => h("li", { text: note })));
  window.mwaReport = report; // for a look from the console and the browser tests
}

function fmtDate(iso) {
  const at = new Date(iso);
  return `${at.getFullYear()}-${pad2(at.getMonth() + 1)}-${pad2(at.getDate())} ${pad2(at.getHours())}:${pad2(at.getMinutes())}`;
}

async function loadReport() {
  try {
    const status = await getJSON("api/report");
    renderReport(status);
    clearTimeout(app.reportTimer);
    if (status.state === "running") app.reportTimer = setTimeout(loadReport, REPORT_POLL_MS);
  } catch (error) {
    if (app.report) setText(app.report.error, `The report's status did not load: ${error.message}`);
  }
}

async function startReport() {
  const view = app.report;
  view.run.disabled = true;
  setText(view.error, "");
  try {
    const response = await fetch("api/report", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: "{}",
    });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      setText(view.error, body.error || `HTTP ${response.status}`);
      view.run.disabled = false;
      return;
    }
    renderReport(body);
  } catch (error) {
    setText(view.error, "no connection to the add-on");
    view.run.disabled = false;
    return;
  }
  app.reportTimer = setTimeout(loadReport, REPORT_POLL_MS / 4);
}

async function cancelReport() {
  const view = app.report;
  view.cancel.disabled = true;
  try {
    const response = await fetch("api/report", { method: "DELETE", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) {
      setText(view.error, body.error || `HTTP ${response.status}`);
      loadReport();
      return;
    }
    clearTimeout(app.reportTimer);
    renderReport(body);
  } catch (error) {
    setText(view.error, "no connection to the add-on");
    view.cancel.disabled = false;
  }
}

function live(text, cls) {
  const badge = document.getElementById("live");
  setText(badge, text);
  badge.className = `badge ${cls}`;
  // Values that no longer follow the devices must not look live: dimmed until the stream is back.
  document.body.classList.toggle("stale", cls !== "ok");
}

// The event stream. A browser retries a dropped stream on its own, but gives up for good when an answer is
// not the stream: while the add-on restarts, Home Assistant's ingress answers 502. A connection that stays
// open but carries nothing (a proxy or a network that lost it) raises no error at all. So the page keeps
// its own watch: the server sends a ping every heartbeat, and a stream silent for longer, or closed, is
// opened again, less often the longer it fails.
const RECONNECT_MS = [1000, 2000, 5000, 10000, 30000];
const HEARTBEAT_MISSED = 2.5; // heartbeats without a word before the stream counts as lost
const stream = { source: null, retry: null, watchdog: null, failures: 0, heartbeatMs: 15000, greeted: false };

function reconnectLater(text) {
  if (stream.source) stream.source.close();
  stream.source = null;
  clearTimeout(stream.watchdog);
  clearTimeout(stream.retry);
  live(text, "warn");
  const delay = RECONNECT_MS[Math.min(stream.failures, RECONNECT_MS.length - 1)];
  stream.failures += 1;
  stream.retry = setTimeout(connect, delay);
}

function heard() {
  clearTimeout(stream.watchdog);
  stream.watchdog = setTimeout(() => reconnectLater("no updates: reconnecting…"), stream.heartbeatMs * HEARTBEAT_MISSED);
}

// Back after a gap: what the stream does not repeat (the chart's minutes, the plan) is fetched again.
async function resync() {
  try {
    app.history = await getJSON("api/history");
    scheduleChart();
  } catch (error) { /* the next reconnect tries again */ }
  loadPlan();
  loadReport();
}

function connect() {
  clearTimeout(stream.retry);
  if (stream.source) stream.source.close();
  const events = new EventSource("api/events");
  stream.source = events;
  heard();
  events.addEventListener("hello", (event) => {
    const hello = JSON.parse(event.data);
    if (typeof hello.heartbeat_ms === "number" && hello.heartbeat_ms > 0) stream.heartbeatMs = hello.heartbeat_ms;
    heard();
    stream.failures = 0;
    live("live", "ok");
    if (stream.greeted || app.history === null) resync(); // a gap, or the first loading failed
    stream.greeted = true;
  });
  events.addEventListener("error", () => {
    if (events !== stream.source) return;
    if (events.readyState === EventSource.CLOSED) reconnectLater("reconnecting…");
    else {
      live("reconnecting…", "warn");
      heard(); // the browser's own retry: watched too, it may hang as well
    }
  });
  events.addEventListener("ping", heard);
  events.addEventListener("devices", (event) => {
    heard();
    const { signature } = JSON.parse(event.data);
    if (signature !== app.signature) loadMeta().catch((error) => toast(`Loading the devices failed: ${error.message}`, true));
  });
  events.addEventListener("state", (event) => {
    heard();
    render(JSON.parse(event.data));
  });
  events.addEventListener("sample", (event) => {
    heard();
    addSample(JSON.parse(event.data));
  });
  events.addEventListener("bye", () => {
    clearTimeout(stream.watchdog);
    live("add-on stopped", "bad");
  });
}

async function start() {
  try {
    await loadMeta();
    app.history = await getJSON("api/history");
    drawChart();
  } catch (error) {
    toast(`The add-on did not answer: ${error.message}`, true);
  }
  watchChartSize();
  connect();
  loadReport();
  await loadPlan();
  setInterval(loadPlan, PLAN_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
