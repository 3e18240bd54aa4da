// The dev page of `biconnector serve --dev` (docs/dev.md). Plain JavaScript, no
// framework, no build step. Everything shown is set with textContent: a value
// such as <script> is text, never markup.
"use strict";

(function () {
  const STORAGE_KEY = "biconnector.dev.settings";
  const MAX_ROWS_SHOWN = 1000;

  // ------------------------------------------------------------ helpers

  const $ = (sel) => document.querySelector(sel);

  // An element with attributes and text: never HTML.
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v);
      else e[k] = v;
    }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function setStatus(node, state, text) {
    node.dataset.state = state;
    node.textContent = text;
  }

  // ------------------------------------------------------------ the form encoder
  // What PHP's http_build_query writes (RFC 1738: letters, digits and -_. stay,
  // space is +, the rest %XX upper case; nested keys as %5Bkey%5D; arrays with
  // indexes 0..n-1; true/false as 1/0; null and empty arrays/objects left out),
  // with keys sorted bytewise as biconnector.form.encode sorts them (PHP keeps
  // insertion order; a connector reads either the same).

  const utf8 = new TextEncoder();

  function urlencode(text) {
    let out = "";
    for (const b of utf8.encode(String(text))) {
      if ((b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
          b === 0x2d || b === 0x5f || b === 0x2e) {
        out += String.fromCharCode(b);
      } else if (b === 0x20) {
        out += "+";
      } else {
        out += "%" + (b < 16 ? "0" : "") + b.toString(16).toUpperCase();
      }
    }
    return out;
  }

  function compareBytes(a, b) {
    const x = utf8.encode(a), y = utf8.encode(b);
    const n = Math.min(x.length, y.length);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }

  // C's %.<p>g
  function gFormat(x, p) {
    if (x === 0) return Object.is(x, -0) ? "-0" : "0";
    const [m, e] = x.toExponential(p - 1).split("e");
    const exp = Number(e);
    const strip = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
    if (exp < -4 || exp >= p) {
      const a = Math.abs(exp);
      return strip(m) + "e" + (exp < 0 ? "-" : "+") + (a < 10 ? "0" : "") + a;
    }
    return strip(x.toFixed(Math.max(0, p - 1 - exp)));
  }

  // A number as PHP prints it (precision 14), or the shortest form from 14 to
  // 17 digits that reads back, as biconnector.form.encode does.
  function numberText(x) {
    if (Number.isNaN(x)) return "NAN";
    if (x === Infinity) return "INF";
    if (x === -Infinity) return "-INF";
    if (Number.isInteger(x) && Math.abs(x) <= 9007199254740992) return String(x);
    let t = "";
    for (let p = 14; p <= 17; p++) {
      t = gFormat(x, p);
      if (Number(t) === x) break;
    }
    const i = t.indexOf("e");
    if (i >= 0) {
      let mant = t.slice(0, i);
      const ev = Number(t.slice(i + 1));
      if (!mant.includes(".")) mant += ".0";
      t = mant + "E" + (ev < 0 ? "-" : "+") + Math.abs(ev);
    }
    return t;
  }

  function formEncode(obj) {
    const parts = [];
    function walk(prefix, v) {
      if (v === null || v === undefined) return;
      if (Array.isArray(v)) {
        v.forEach((item, i) => walk(prefix + "%5B" + i + "%5D", item));
      } else if (typeof v === "object") {
        for (const k of Object.keys(v).sort(compareBytes)) walk(prefix + "%5B" + urlencode(k) + "%5D", v[k]);
      } else {
        let text;
        if (typeof v === "boolean") text = v ? "1" : "0";
        else if (typeof v === "number") text = numberText(v);
        else text = String(v);
        parts.push(prefix + "=" + urlencode(text));
      }
    }
    for (const k of Object.keys(obj).sort(compareBytes)) walk(urlencode(k), obj[k]);
    return parts.join("&");
  }

  // ------------------------------------------------------------ state

  // Objects keyed by codes the connector chose: no prototype, so that a code
  // such as __proto__, constructor or toString is a key like any other.
  const dict = () => Object.create(null);

  const state = {
    info: null,
    settings: dict(), // code -> value
    table: null, // {code, title}
    fields: [], // [{code, name, type}]
    seq: { check: 0, tables: 0, table: 0, data: 0 },
  };

  function connection() {
    const c = dict();
    for (const s of state.info.settings) c[s.code] = state.settings[s.code] || "";
    return c;
  }

  // POSTs to a connector endpoint: a form body, as Bitrix24 sends, or JSON.
  async function post(path, obj, asJson) {
    const started = performance.now();
    const res = await fetch(path, {
      method: "POST",
      cache: "no-store",
      headers: { "Content-Type": asJson ? "application/json" : "application/x-www-form-urlencoded" },
      body: asJson ? JSON.stringify(obj) : formEncode(obj),
    });
    let buf;
    try {
      buf = await res.arrayBuffer();
    } catch (e) {
      // the status and headers came, then the answer broke off (e.g. the
      // connector failed while streaming rows): not "no answer"
      const ms = performance.now() - started;
      return { status: res.status, text: "", bytes: 0, ms, cut: e.message };
    }
    const ms = performance.now() - started;
    const text = new TextDecoder().decode(buf);
    return { status: res.status, text, bytes: buf.byteLength, ms };
  }

  // The line for an answer that broke off after its status.
  function describeCut(name, r) {
    return name + ": HTTP " + r.status + " but the answer broke off before its end (" + r.cut + ", after " +
      r.ms.toFixed(0) + " ms): the connector failed while sending it; see the server log";
  }

  function parseJson(text, reviver) {
    try {
      return { value: JSON.parse(text, reviver) };
    } catch (e) {
      return { error: e.message };
    }
  }

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function describeFailure(r) {
    return "HTTP " + r.status + " · " + plural(r.bytes, "byte") + " · " + r.ms.toFixed(0) + " ms";
  }

  // ------------------------------------------------------------ settings

  function loadSettings() {
    const codes = state.info.settings.map((s) => s.code);
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const fromLink = codes.some((c) => fragment.has(c));
    if (fromLink) {
      for (const c of codes) state.settings[c] = fragment.get(c) || "";
      saveSettings();
      // the values are remembered now: the address bar and this history entry drop them
      history.replaceState(null, "", location.pathname + location.search);
      return;
    }
    try {
      const stored = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
      for (const c of codes) if (typeof stored[c] === "string") state.settings[c] = stored[c];
    } catch (e) {
      // a broken entry: start empty
    }
  }

  function saveSettings() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(state.settings));
    } catch (e) {
      // storage refused (private mode): the settings stay for this page only
    }
  }

  function renderSettings() {
    const box = $("#settings-fields");
    clear(box);
    if (state.info.settings.length === 0) {
      box.appendChild(el("p", { class: "muted" }, "This connector has no settings."));
    }
    state.info.settings.forEach((s, i) => {
      const id = "setting-" + i;
      const label = el("label", { htmlFor: id });
      label.appendChild(el("span", {}, s.name + " "));
      label.appendChild(el("code", {}, s.code));
      const input = el("input", {
        id, type: "text", autocomplete: "off", spellcheck: false,
        value: state.settings[s.code] || "", "data-code": s.code,
      });
      if (s.type === "INT") input.inputMode = "numeric";
      box.appendChild(el("div", { class: "field" }));
      box.lastChild.appendChild(label);
      box.lastChild.appendChild(input);
    });
  }

  // The form's values as they are now (typed but not yet submitted included).
  function readSettingsForm() {
    for (const input of document.querySelectorAll("#settings-fields input")) {
      state.settings[input.dataset.code] = input.value;
    }
    saveSettings();
  }

  async function check() {
    const seq = ++state.seq.check; // an answer for the settings of an earlier Connect is dropped
    const node = $("#check-status");
    setStatus(node, "busy", "Checking...");
    let r;
    try {
      r = await post(state.info.endpoints.check, { connection: connection() });
    } catch (e) {
      if (seq === state.seq.check) setStatus(node, "error", "urlCheck: no answer (" + e.message + ")");
      return;
    }
    if (seq !== state.seq.check) return;
    if (r.cut) setStatus(node, "error", describeCut("urlCheck", r));
    else if (r.status === 200) setStatus(node, "done", "urlCheck: 200 OK (" + r.ms.toFixed(0) + " ms)");
    else setStatus(node, "error", "urlCheck: " + describeFailure(r) + ": " + r.text);
  }

  // ------------------------------------------------------------ tables

  async function loadTables() {
    readSettingsForm();
    const seq = ++state.seq.tables;
    const node = $("#tables-status");
    const list = $("#tables");
    setStatus(node, "busy", "Loading tables...");
    let r;
    try {
      r = await post(state.info.endpoints.table_list, { connection: connection(), searchString: $("#search").value });
    } catch (e) {
      if (seq !== state.seq.tables) return;
      // the server went away (stopped, or started again on another port: this page's address is the old one)
      clear(list);
      setStatus(node, "error", "urlTableList: no answer (" + e.message + ") from " + location.origin +
        ": the server stopped, or was started again on another port (open the link it printed then)");
      markStale();
      return;
    }
    if (seq !== state.seq.tables) return; // a newer search is under way
    clear(list);
    if (r.cut) {
      setStatus(node, "error", describeCut("urlTableList", r));
      markStale();
      return;
    }
    if (r.status !== 200) {
      setStatus(node, "error", "urlTableList: " + describeFailure(r) + ": " + r.text);
      markStale();
      return;
    }
    const parsed = parseJson(r.text);
    if (!Array.isArray(parsed.value)) {
      setStatus(node, "error", "urlTableList: the answer is not a JSON array: " + (parsed.error || r.text));
      markStale();
      return;
    }
    markStale(false); // the server answers these settings again
    for (const t of parsed.value) {
      const code = t && typeof t.code === "string" ? t.code : String(t && t.code);
      const title = t && typeof t.title === "string" ? t.title : String(t && t.title);
      const button = el("button", { type: "button", class: "table-btn", "data-table": code });
      button.appendChild(el("span", { class: "t-title" }, title));
      button.appendChild(el("code", { class: "t-code" }, code));
      button.addEventListener("click", () => openTable({ code, title }));
      const li = el("li");
      li.appendChild(button);
      list.appendChild(li);
    }
    setStatus(node, "done", plural(parsed.value.length, "table") + " (" + r.ms.toFixed(0) + " ms)");
  }

  // The table shown after a table list that failed (no answer, a refusal of
  // the settings): what it shows was answered before, by a server or with
  // settings that no longer answer. It stays, dimmed, under a notice, until a
  // table list succeeds or a table is opened. markStale(false) lifts it.
  function markStale(on) {
    const section = $("#table-section");
    const notice = $("#table-stale");
    if (on === false || !state.table) {
      delete section.dataset.stale;
      notice.hidden = true;
      notice.textContent = "";
      return;
    }
    section.dataset.stale = "true";
    notice.textContent = "Not current: the last table list failed (see Tables). The fields and rows below " +
      "are what the server answered before; Connect again once it answers.";
    notice.hidden = false;
  }

  // ------------------------------------------------------------ one table

  async function openTable(t) {
    const seq = ++state.seq.table;
    state.seq.data++; // a preview still under way for the table shown before is dropped when it answers
    state.table = t;
    state.fields = [];
    markStale(false);
    $("#table-section").hidden = false;
    $("#table-code").textContent = t.code;
    $("#table-title").textContent = t.title;
    const list = $("#fields");
    clear(list);
    clear($("#conditions"));
    clearResult();
    // the request of the table shown before is not this one's (until its fields come)
    $("#request-json").textContent = "";
    $("#request-form").textContent = "";
    $("#filter-note").textContent = "";
    const heading = $("#table-h");
    heading.tabIndex = -1;
    heading.focus();
    let r;
    try {
      r = await post(state.info.endpoints.table_description, { connection: connection(), table: t.code });
    } catch (e) {
      // as for an answer: one for a table opened before is dropped
      if (seq === state.seq.table) showError("urlTableDescription: no answer (" + e.message + ")", "");
      return;
    }
    if (seq !== state.seq.table) return;
    if (r.cut) {
      showError(describeCut("urlTableDescription", r), "");
      return;
    }
    if (r.status !== 200) {
      showError("urlTableDescription: " + describeFailure(r), r.text);
      return;
    }
    const parsed = parseJson(r.text);
    if (!Array.isArray(parsed.value)) {
      showError("urlTableDescription: the answer is not a JSON array", parsed.error || r.text);
      return;
    }
    state.fields = parsed.value.map((f) => ({ code: String(f.code), name: String(f.name), type: String(f.type) }));
    for (const f of state.fields) {
      const li = el("li", { "data-field": f.code });
      const label = el("label");
      const box = el("input", { type: "checkbox", checked: true, "data-code": f.code });
      box.addEventListener("change", showRequest);
      label.appendChild(box);
      label.appendChild(el("code", { class: "f-code" }, f.code));
      label.appendChild(el("span", { class: "f-type type-" + f.type }, f.type));
      label.appendChild(el("span", { class: "f-name" }, f.name));
      li.appendChild(label);
      list.appendChild(li);
    }
    showRequest();
  }

  // ------------------------------------------------------------ the filter builder

  const OPS = {
    A: [["=", "= equal"], ["!=", "!= not equal"], [">", "> greater"], [">=", ">= greater or equal"],
      ["<", "< less"], ["<=", "<= less or equal"], ["@", "@ in (comma list)"], ["!@", "!@ not in (comma list)"],
      ["%", "% contains"], ["!%", "!% does not contain"], ["=%", "=% LIKE pattern (% and _)"]],
    B: [["=", "="], ["!=", "!="], [">", ">"], [">=", ">="], ["<", "<"], ["<=", "<="],
      ["LIKE", "LIKE (contains)"], ["NOT LIKE", "NOT LIKE"], ["IN", "IN (comma list)"], ["NOT IN", "NOT IN (comma list)"],
      ["IS NULL", "IS NULL"], ["IS NOT NULL", "IS NOT NULL"], ["BETWEEN", "BETWEEN (inclusive)"]],
  };
  const LIST_OPS = new Set(["@", "!@", "IN", "NOT IN"]);
  const NO_VALUE_OPS = new Set(["IS NULL", "IS NOT NULL"]);

  function style() {
    return document.querySelector("input[name=style]:checked").value;
  }

  function fillOps(select, keep) {
    clear(select);
    for (const [value, label] of OPS[style()]) select.appendChild(el("option", { value }, label));
    if (keep && OPS[style()].some(([v]) => v === keep)) select.value = keep;
  }

  function updateCondition(li) {
    const op = li.querySelector(".c-op").value;
    li.querySelector(".c-value-label").hidden = NO_VALUE_OPS.has(op);
    li.querySelector(".c-to-label").hidden = op !== "BETWEEN";
    li.querySelector(".c-value").placeholder = op === "BETWEEN" ? "from" : LIST_OPS.has(op) ? "a, b, c" : "value";
  }

  function addCondition(preset) {
    const li = $("#condition-template").content.firstElementChild.cloneNode(true);
    const fieldSelect = li.querySelector(".c-field");
    // the code between U+2068 and U+2069 (an isolate): an override in it stays in it
    for (const f of state.fields) fieldSelect.appendChild(el("option", { value: f.code }, "\u2068" + f.code + "\u2069 (" + f.type + ")"));
    fillOps(li.querySelector(".c-op"));
    if (preset) {
      if (preset.field) fieldSelect.value = preset.field;
      if (preset.op) li.querySelector(".c-op").value = preset.op;
      if (preset.value !== undefined) li.querySelector(".c-value").value = preset.value;
    }
    li.addEventListener("input", showRequest);
    li.addEventListener("change", () => { updateCondition(li); showRequest(); });
    li.querySelector(".c-remove").addEventListener("click", () => {
      li.remove();
      showRequest();
      $("#add-condition").focus();
    });
    $("#conditions").appendChild(li);
    updateCondition(li);
    showRequest();
    return li;
  }

  function splitList(text) {
    return text.split(",").map((s) => s.trim()).filter((s) => s !== "");
  }

  // The filter object of the conditions: {filter} | {filter: undefined} | {error}
  function buildFilter() {
    const items = [...document.querySelectorAll("#conditions .condition")].map((li) => ({
      field: li.querySelector(".c-field").value,
      op: li.querySelector(".c-op").value,
      value: li.querySelector(".c-value").value,
      to: li.querySelector(".c-to").value,
    }));
    const logic = $("#logic").value;
    if (items.length === 0) return { filter: undefined, note: "" };
    if (style() === "A") {
      const filter = dict();
      if (logic === "OR") filter.LOGIC = "OR";
      let group = 0;
      for (const c of items) {
        const key = c.op + c.field;
        const value = LIST_OPS.has(c.op) ? splitList(c.value) : c.value;
        if (key in filter) {
          // the same key twice: the second goes into a nested group of its own
          while (String(group) in filter) group++;
          filter[String(group)] = Object.assign(dict(), { [key]: value });
        } else {
          filter[key] = value;
        }
      }
      return { filter, note: "Style A: each key is an operator prefix and a field code" +
        (logic === "OR" ? "; LOGIC=OR joins them." : ".") };
    }
    const filter = dict();
    for (const c of items) {
      if (c.field in filter) return { error: "style B holds one condition per field: " + c.field + " is used twice" };
      let cond;
      if (NO_VALUE_OPS.has(c.op)) cond = { operator: c.op };
      else if (c.op === "BETWEEN") cond = { operator: c.op, from: c.value, to: c.to };
      else if (LIST_OPS.has(c.op)) cond = { operator: c.op, value: splitList(c.value) };
      else cond = { operator: c.op, value: c.value };
      filter[c.field] = cond;
    }
    return { filter, note: "Style B has no groups: the conditions are ANDed" +
      (logic === "OR" ? " (LOGIC=OR is not expressible, so it is ignored)." : ".") };
  }

  function buildRequest() {
    const select = [...document.querySelectorAll("#fields input[type=checkbox]")]
      .filter((b) => b.checked).map((b) => b.dataset.code);
    const req = { connection: connection(), table: state.table.code };
    if (select.length > 0) req.select = select;
    const f = buildFilter();
    if (f.error) return { error: f.error };
    if (f.filter !== undefined) req.filter = f.filter;
    const limitText = $("#limit").value.trim();
    // a number box gives "" for text it cannot read ("1e", "--1"): not "no limit"
    if ($("#limit").validity.badInput) return { error: "limit must be a whole number of 0 or more" };
    if (limitText !== "") {
      const limit = Number(limitText);
      if (!Number.isInteger(limit) || limit < 0) return { error: "limit must be a whole number of 0 or more" };
      req.limit = limit;
    }
    if (select.length === 0) return { error: "choose at least one column" };
    return { req, note: f.note };
  }

  function showRequest() {
    if (!state.table) return;
    const built = buildRequest();
    $("#filter-note").textContent = built.error || built.note || "";
    $("#filter-note").classList.toggle("error", !!built.error);
    if (built.error) {
      $("#request-json").textContent = "";
      $("#request-form").textContent = "";
      return;
    }
    $("#request-json").textContent = JSON.stringify(built.req, null, 2);
    $("#request-form").textContent = formEncode(built.req);
  }

  // ------------------------------------------------------------ the preview

  function clearResult() {
    const status = $("#result-status");
    delete status.dataset.state;
    status.textContent = "";
    $("#result-error").hidden = true;
    $("#result-error").textContent = "";
    clear($("#rows thead"));
    clear($("#rows tbody"));
    status.removeAttribute("data-rows");
  }

  function showError(line, body) {
    setStatus($("#result-status"), "error", line);
    const pre = $("#result-error");
    pre.textContent = body;
    pre.hidden = body === "";
  }

  // A number of the answer as its text there: 9007199254740993 or 1e+300 are
  // shown as the connector wrote them, not as a double reads them back.
  class ExactNumber {
    constructor(value, text) { this.value = value; this.text = text; }
    toJSON() { return typeof JSON.rawJSON === "function" ? JSON.rawJSON(this.text) : this.value; }
  }
  function exactNumbers(key, value, context) {
    // an object only where the text differs from what the double prints
    if (typeof value === "number" && context && typeof context.source === "string" &&
        context.source !== String(value)) {
      return new ExactNumber(value, context.source);
    }
    return value;
  }

  // The text of a JSON array cut after its first n elements, closed again: the
  // rows shown are read with exactNumbers from it alone (a reviver over a
  // million rows costs seconds and memory). The whole text when it is shorter.
  function firstElements(text, n) {
    let depth = 0, inString = false, count = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (inString) {
        if (c === 0x5c) i++; // backslash: the next character is escaped
        else if (c === 0x22) inString = false;
      } else if (c === 0x22) {
        inString = true;
      } else if (c === 0x5b || c === 0x7b) {
        depth++;
      } else if (c === 0x5d || c === 0x7d) {
        depth--;
      } else if (c === 0x2c && depth === 1 && ++count === n) {
        return text.slice(0, i) + "]";
      }
    }
    return text;
  }

  function cellKind(v) {
    if (v === null) return "null";
    return "v-" + (v instanceof ExactNumber ? "number" : typeof v);
  }

  function cellText(v) {
    if (v === null) return "null";
    if (v instanceof ExactNumber) return v.text;
    if (typeof v === "string") return v;
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    return JSON.stringify(v);
  }

  async function runPreview(ev) {
    if (ev) ev.preventDefault();
    if (!state.table) return;
    readSettingsForm();
    const built = buildRequest();
    if (built.error) {
      showError(built.error, "");
      return;
    }
    showRequest();
    const seq = ++state.seq.data;
    clearResult();
    setStatus($("#result-status"), "busy", "Running...");
    let r;
    try {
      r = await post(state.info.endpoints.data, built.req, $("#send-json").checked);
    } catch (e) {
      if (seq === state.seq.data) showError("urlData: no answer (" + e.message + ")", "");
      return;
    }
    if (seq !== state.seq.data) return;
    if (r.cut) {
      showError(describeCut("urlData", r), "");
      return;
    }
    if (r.status !== 200) {
      // the error exactly as the connector answered it
      showError("urlData: " + describeFailure(r), r.text);
      return;
    }
    const parsed = parseJson(r.text);
    if (!Array.isArray(parsed.value) || !Array.isArray(parsed.value[0])) {
      showError("urlData: HTTP 200 but the answer is not a JSON array of arrays (" + (parsed.error || "") + ")", r.text);
      return;
    }
    const rows = parsed.value;
    // the header and the rows shown, with each number as the answer wrote it
    const exact = parseJson(firstElements(r.text, MAX_ROWS_SHOWN + 1), exactNumbers).value;
    const shownRows = Array.isArray(exact) && exact.length === Math.min(rows.length, MAX_ROWS_SHOWN + 1) ? exact : rows;
    const header = shownRows[0];
    const types = dict();
    for (const f of state.fields) types[f.code] = f.type;
    const headRow = el("tr");
    header.forEach((code) => {
      code = cellText(code);
      const th = el("th", { scope: "col" });
      th.appendChild(el("span", { class: "h-code" }, code));
      th.appendChild(el("span", { class: "h-type type-" + (types[code] || "unknown") }, types[code] || "not described"));
      headRow.appendChild(th);
    });
    $("#rows thead").appendChild(headRow);
    const body = $("#rows tbody");
    const shown = Math.min(rows.length - 1, MAX_ROWS_SHOWN);
    const frag = document.createDocumentFragment();
    for (let i = 1; i <= shown; i++) {
      const tr = el("tr");
      const row = Array.isArray(shownRows[i]) ? shownRows[i] : [shownRows[i]];
      row.forEach((v) => tr.appendChild(el("td", { class: cellKind(v) }, cellText(v))));
      frag.appendChild(tr);
    }
    body.appendChild(frag);
    const count = rows.length - 1;
    const status = $("#result-status");
    status.dataset.rows = String(count);
    setStatus(status, "done", "HTTP 200 · " + plural(count, "row") + " · " + plural(r.bytes, "byte") + " · " +
      r.ms.toFixed(0) + " ms" + (count > shown ? " (showing the first " + shown + ")" : ""));
  }

  // ------------------------------------------------------------ Verify

  async function runVerify(ev) {
    if (ev) ev.preventDefault();
    const summary = $("#verify-summary");
    const body = $("#verify-checks tbody");
    const button = $("#verify");
    readSettingsForm();
    clear(body);
    setStatus(summary, "busy", "Verifying...");
    button.disabled = true;
    try {
      const res = await fetch(state.info.verify, {
        method: "POST",
        cache: "no-store",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ settings: connection(), body: $("#verify-body").value }),
      });
      const text = await res.text();
      const parsed = parseJson(text);
      const report = parsed.value;
      if (res.status !== 200 || !report || report.error) {
        setStatus(summary, "error", "Verify: HTTP " + res.status + ": " + ((report && report.message) || text));
        return;
      }
      const checks = Array.isArray(report.checks) ? report.checks : [];
      for (const c of checks) {
        const tr = el("tr", { class: "r-" + c.result });
        tr.appendChild(el("td", { class: "result" }, c.result));
        tr.appendChild(el("td", {}, (report.body === "both" ? "[" + c.body + "] " : "") + c.check));
        tr.appendChild(el("td", {}, c.message));
        body.appendChild(tr);
      }
      const s = report.summary || {};
      const all = checks.length > 0 && s.PASS === checks.length;
      summary.dataset.ok = report.ok ? "true" : "false";
      setStatus(summary, report.ok ? "done" : "failed", all ? "all passed (" + plural(s.PASS, "check") + ")" :
        s.PASS + " passed, " + plural(s.WARN, "warning") + ", " + s.FAIL + " failed, " + s.SKIP + " skipped: " +
        (report.ok ? "conforms" : "does NOT conform"));
    } catch (e) {
      setStatus(summary, "error", "Verify: no answer (" + e.message + ")");
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------ start

  let searchTimer = null;

  async function connect(ev) {
    if (ev) ev.preventDefault();
    readSettingsForm();
    await Promise.all([check(), loadTables()]);
  }

  async function start() {
    const res = await fetch("/_dev/info", { cache: "no-store" });
    state.info = await res.json();
    document.title = "biconnector dev: " + state.info.title;
    $("#title").textContent = state.info.title;
    $("#source").textContent = state.info.source;
    $("#version").textContent = "biconnector " + state.info.version;
    loadSettings();
    renderSettings();
    $("#settings-form").addEventListener("submit", connect);
    $("#forget").addEventListener("click", () => {
      localStorage.removeItem(STORAGE_KEY);
      state.settings = dict();
      renderSettings();
      setStatus($("#check-status"), "done", "Settings forgotten by this browser.");
    });
    $("#search-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadTables(); });
    $("#search").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(loadTables, 200);
    });
    $("#add-condition").addEventListener("click", () => addCondition().querySelector(".c-field").focus());
    for (const r of document.querySelectorAll("input[name=style]")) {
      r.addEventListener("change", () => {
        for (const s of document.querySelectorAll("#conditions .c-op")) {
          fillOps(s, s.value);
          updateCondition(s.closest("li"));
        }
        showRequest();
      });
    }
    $("#logic").addEventListener("change", showRequest);
    $("#limit").addEventListener("input", showRequest);
    $("#preview-form").addEventListener("submit", runPreview);
    $("#verify-form").addEventListener("submit", runVerify);
    document.body.dataset.ready = "true";
    await connect();
  }

  window.biconnectorDev = { formEncode, numberText, state, addCondition, openTable, loadTables };
  document.addEventListener("DOMContentLoaded", () => {
    start().catch((e) => setStatus($("#check-status"), "error", "The dev page could not start: " + e.message));
  });
})();
