// Headroom's console: one page, four views (query, explore, capacity,
// status), talking to the server's own HTTP API. The view and its
// inputs live in the URL's hash, so that a view can be shared. No
// request leaves the server the page came from.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";

// el builds an element: attributes (on* are listeners) and children.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ApiError is an error the API answered with (status and message).
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// api calls a GET endpoint; the session cookie (set by the login form)
// authenticates it. It returns the JSON's data and the response headers.
async function api(path, params) {
  const q = new URLSearchParams(params || {});
  const resp = await fetch(path + (q.toString() ? "?" + q : ""), { credentials: "same-origin" });
  if (resp.status === 401 || resp.status === 403) {
    showLogin(resp.status === 403 ? "This token may not read." : "");
    throw new ApiError(resp.status, "a token with the read scope is needed");
  }
  let body;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(resp.status, `${resp.status} ${resp.statusText}`);
  }
  if (body.status !== "success") throw new ApiError(resp.status, body.error || `${resp.status}`);
  return { data: body.data, headers: resp.headers };
}

// The login form: a token with the read scope becomes an HttpOnly
// session cookie (POST /console/login), which the API accepts for reads.
function showLogin(why) {
  if (document.getElementById("login")) return;
  const msg = el("p", { class: "err", id: "login-error" }, why);
  const token = el("input", { type: "password", id: "token", placeholder: "token", autocomplete: "current-password" });
  const form = el("form", {
    id: "login",
    class: "login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const resp = await fetch("console/login", { method: "POST", body: new URLSearchParams({ token: token.value }), credentials: "same-origin" });
      if (resp.ok) {
        form.remove();
        route();
      } else {
        msg.textContent = (await resp.text()).trim() || `${resp.status}`;
      }
    },
  }, el("h2", {}, "Sign in"), el("p", {}, "This server asks for a token with the read scope."), token, el("button", { type: "submit" }, "Sign in"), msg);
  document.getElementById("main").replaceChildren(form);
}

// The hash: #/view?key=value&...
function hashState() {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, query] = h.split("?");
  return { view: view || "query", params: new URLSearchParams(query || "") };
}

function setHash(view, params) {
  const s = params.toString();
  history.replaceState(null, "", "#/" + view + (s ? "?" + s : ""));
}

// Durations: "5m", "1h", "7d" <-> seconds.
const units = { s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
function parseDur(s) {
  const m = /^(\d+(?:\.\d+)?)([smhdwy])$/.exec(String(s).trim());
  return m ? parseFloat(m[1]) * units[m[2]] : NaN;
}
function fmtDur(sec) {
  for (const u of ["y", "w", "d", "h", "m"]) if (sec >= units[u] && sec % units[u] === 0) return sec / units[u] + u;
  return sec + "s";
}

// autoStep: about 250 points, rounded to a step the tiers serve.
function autoStep(rangeSec) {
  const steps = [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const want = rangeSec / 250;
  return steps.find((s) => s >= want) || 86400;
}

function labelString(metric) {
  const name = metric.__name__ || "";
  const rest = Object.entries(metric)
    .filter(([k]) => k !== "__name__")
    .map(([k, v]) => `${k}="${v}"`)
    .join(", ");
  return name + (rest || !name ? `{${rest}}` : "");
}

function fmtNum(v) {
  if (!isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e15) return v.toLocaleString("en");
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(+v.toPrecision(5));
}

// ---- Completion: metric names, label names inside {...}, label values
// after name=" ---------------------------------------------------------
const cache = {};
async function cached(key, f) {
  if (!cache[key]) cache[key] = f().catch((e) => { delete cache[key]; throw e; });
  return cache[key];
}
const metricNames = () => cached("names", async () => (await api("api/v1/label/__name__/values")).data);
const labelNames = () => cached("labels", async () => (await api("api/v1/labels")).data);
const labelValues = (n) => cached("values:" + n, async () => (await api(`api/v1/label/${encodeURIComponent(n)}/values`)).data);

// completionContext says what the word before the cursor is: a metric
// name, a label name or a label value.
function completionContext(text, pos) {
  const before = text.slice(0, pos);
  const value = /([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)$/.exec(before);
  if (value && before.lastIndexOf("{") > before.lastIndexOf("}")) return { kind: "value", label: value[1], word: value[2] };
  const word = /[a-zA-Z_:][a-zA-Z0-9_:]*$/.exec(before);
  const w = word ? word[0] : "";
  if (before.lastIndexOf("{") > before.lastIndexOf("}")) return { kind: "label", word: w };
  return { kind: "metric", word: w };
}

async function suggestions(text, pos) {
  const ctx = completionContext(text, pos);
  let all;
  if (ctx.kind === "value") all = await labelValues(ctx.label);
  else if (ctx.kind === "label") all = await labelNames();
  else {
    if (!ctx.word) return { ctx, items: [] };
    all = await metricNames();
  }
  const items = all.filter((s) => s.startsWith(ctx.word) && s !== ctx.word).slice(0, 12);
  return { ctx, items };
}

// ---- The query view --------------------------------------------------
const ranges = ["5m", "15m", "1h", "3h", "6h", "12h", "1d", "2d", "7d", "14d", "30d", "90d", "180d", "365d"];

function queryView(params) {
  const main = document.getElementById("main");
  const controls = el("div", { class: "controls" });
  const rangeSel = el("select", { id: "range" }, ranges.map((r) => el("option", { value: r, selected: r === (params.get("range") || "1h") }, r)));
  const startInput = el("input", { id: "start", type: "datetime-local", step: "1", value: params.get("start") || "", title: "start, UTC (set: an absolute range from it to the end, instead of the relative range)" });
  const endInput = el("input", { id: "end", type: "datetime-local", step: "1", value: params.get("end") || "", title: "end (empty: now), UTC" });
  const stepInput = el("input", { id: "step", placeholder: "auto", size: 6, value: params.get("step") || "", title: "step: auto, or like 30s, 5m, 1h" });
  const panels = el("div", { id: "panels" });
  const save = () => {
    const p = new URLSearchParams();
    p.set("range", rangeSel.value);
    if (startInput.value) p.set("start", startInput.value);
    if (endInput.value) p.set("end", endInput.value);
    if (stepInput.value) p.set("step", stepInput.value);
    [...panels.children].forEach((pn, i) => {
      p.set("q" + i, pn.querySelector("textarea").value);
      if (pn.dataset.tab === "table") p.set("tab" + i, "table");
      if (pn.querySelector(".stack").checked) p.set("stack" + i, "1");
    });
    setHash("query", p);
  };
  const runAll = () => {
    save();
    for (const pn of panels.children) pn.run();
  };
  controls.append(
    el("label", {}, "range ", rangeSel),
    el("label", {}, "or from ", startInput),
    el("label", {}, "to ", endInput),
    el("label", {}, "step ", stepInput),
    el("button", { onclick: runAll, id: "run-all" }, "Run all"),
    el("button", { onclick: () => { panels.append(panel("", "graph", false)); save(); } }, "Add query"),
  );
  rangeSel.addEventListener("change", runAll);
  endInput.addEventListener("change", runAll);
  startInput.addEventListener("change", () => { rangeSel.disabled = !!startInput.value; runAll(); });
  rangeSel.disabled = !!startInput.value;
  stepInput.addEventListener("change", runAll);

  function window() {
    const end = endInput.value ? Date.parse(endInput.value + "Z") / 1000 : Date.now() / 1000;
    const from = startInput.value ? Date.parse(startInput.value + "Z") / 1000 : NaN;
    const range = from < end ? end - from : parseDur(rangeSel.value);
    let step = stepInput.value ? parseDur(stepInput.value) : autoStep(range);
    if (!(step > 0)) step = autoStep(range);
    return { start: end - range, end, step };
  }

  function panel(expr, tab, stacked) {
    const area = el("textarea", { class: "expr", rows: 2, spellcheck: "false", placeholder: "PromQL, like rate(http_requests_total[5m]); Ctrl+Enter runs" });
    area.value = expr;
    const list = el("ul", { class: "complete", hidden: true });
    const errBox = el("pre", { class: "err", hidden: true });
    const info = el("div", { class: "info" });
    const out = el("div", { class: "out" });
    const stack = el("input", { type: "checkbox", class: "stack", checked: stacked });
    const graphBtn = el("button", { class: "tab", onclick: () => setTab("graph") }, "Graph");
    const tableBtn = el("button", { class: "tab", onclick: () => setTab("table") }, "Table");
    const pn = el("section", { class: "panel" },
      el("div", { class: "editor" }, area, list),
      el("div", { class: "bar" },
        el("button", { class: "run", onclick: () => { save(); pn.run(); } }, "Run"),
        graphBtn, tableBtn,
        el("label", {}, stack, " stacked"),
        el("button", { class: "remove", title: "remove this query", onclick: () => { pn.remove(); save(); } }, "×"),
        info),
      errBox, out);
    pn.dataset.tab = tab;
    let last = null;
    function setTab(t) {
      pn.dataset.tab = t;
      graphBtn.classList.toggle("on", t === "graph");
      tableBtn.classList.toggle("on", t === "table");
      save();
      if (last) draw(last);
    }
    stack.addEventListener("change", () => { save(); if (last) draw(last); });
    graphBtn.classList.toggle("on", tab === "graph");
    tableBtn.classList.toggle("on", tab === "table");

    // Completion under the editor.
    let items = [], active = 0, ctx = null;
    const hide = () => { list.hidden = true; items = []; };
    const accept = (s) => {
      const pos = area.selectionStart;
      const head = area.value.slice(0, pos - ctx.word.length);
      area.value = head + s + area.value.slice(pos);
      area.selectionStart = area.selectionEnd = head.length + s.length;
      hide();
      area.focus();
    };
    area.addEventListener("input", async () => {
      try {
        const r = await suggestions(area.value, area.selectionStart);
        ctx = r.ctx;
        items = r.items;
        active = 0;
        list.replaceChildren(...items.map((s, i) => el("li", { class: i === 0 ? "on" : "", onmousedown: (ev) => { ev.preventDefault(); accept(s); } }, s)));
        list.hidden = items.length === 0;
      } catch {
        hide();
      }
    });
    area.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        hide();
        save();
        pn.run();
        return;
      }
      if (list.hidden) return;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        active = (active + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
        [...list.children].forEach((li, i) => li.classList.toggle("on", i === active));
      } else if (ev.key === "Tab" || ev.key === "Enter") {
        ev.preventDefault();
        accept(items[active]);
      } else if (ev.key === "Escape") hide();
    });
    area.addEventListener("blur", () => setTimeout(hide, 150));

    function showError(e) {
      // "1:12: parse error: ...": a caret under the column.
      const m = /(\d+):(\d+): (parse error.*)$/s.exec(e.message);
      if (m) {
        const line = area.value.split("\n")[+m[1] - 1] || "";
        errBox.textContent = `${line}\n${" ".repeat(Math.max(+m[2] - 1, 0))}^ ${m[3]}`;
      } else errBox.textContent = e.message;
      errBox.hidden = false;
      out.replaceChildren();
    }

    function draw(res) {
      if (pn.dataset.tab === "table") drawTable(out, res);
      else drawGraph(out, res, stack.checked);
    }

    pn.run = async () => {
      const q = area.value.trim();
      errBox.hidden = true;
      info.textContent = "";
      if (!q) { out.replaceChildren(); return; }
      const w = window();
      info.textContent = "running…";
      const t0 = performance.now();
      try {
        const { data, headers } = await api("api/v1/query_range", { query: q, start: w.start, end: w.end, step: w.step, stats: "1" });
        last = { data, w };
        const n = data.result.length;
        const samples = data.stats ? data.stats.samples.totalQueryableSamples : 0;
        info.textContent = `${n} series, step ${fmtDur(w.step)}, from ${headers.get("X-Headroom-Tier") || "raw"}, ${samples.toLocaleString("en")} samples read, ${Math.round(performance.now() - t0)} ms`;
        info.dataset.series = n;
        draw(last);
      } catch (e) {
        info.textContent = "";
        if (e.status !== 401 && e.status !== 403) showError(e);
      }
    };
    return pn;
  }

  const exprs = [];
  for (let i = 0; params.has("q" + i); i++) exprs.push(i);
  if (exprs.length === 0) panels.append(panel("", "graph", false));
  for (const i of exprs) panels.append(panel(params.get("q" + i), params.get("tab" + i) || "graph", params.get("stack" + i) === "1"));
  main.replaceChildren(controls, panels);
  for (const pn of panels.children) pn.run();
}

// The graph: one line per series (stacked when asked), the legend
// toggles a series, hovering shows every value at that time.
const palette = ["#1f6feb", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a7ea4", "#d1242f", "#6e7781", "#e16f24", "#2da44e"];
function drawGraph(out, res, stacked) {
  const { data, w } = res;
  const xs = [];
  for (let t = w.start; t <= w.end + 1e-9; t += w.step) xs.push(Math.round(t * 1000) / 1000);
  const index = new Map(xs.map((t, i) => [t, i]));
  const ys = data.result.map((s) => {
    const y = new Array(xs.length).fill(null);
    for (const [t, v] of s.values || []) {
      const i = index.get(Math.round(t * 1000) / 1000);
      if (i !== undefined) y[i] = parseFloat(v);
    }
    return y;
  });
  if (stacked) {
    for (let k = 1; k < ys.length; k++) for (let i = 0; i < xs.length; i++) if (ys[k][i] !== null) ys[k][i] += ys[k - 1][i] || 0;
  }
  out.replaceChildren();
  if (data.result.length === 0) { out.append(el("p", { class: "empty" }, "No data in this range.")); return; }
  const opts = {
    width: Math.max(out.clientWidth || 900, 300),
    height: 320,
    series: [{}].concat(data.result.map((s, k) => ({ label: labelString(s.metric), stroke: palette[k % palette.length], width: 1.5, fill: stacked ? palette[k % palette.length] + "33" : undefined, value: (u, v) => (v === null ? "-" : fmtNum(v)) }))),
    axes: [{}, { values: (u, vals) => vals.map(fmtNum), size: 70 }],
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
  };
  new uPlot(opts, [xs, ...ys], out);
  out.dataset.points = xs.length;
  out.dataset.series = ys.length;
}

// The table: each series' latest value in the range.
function drawTable(out, res) {
  const rows = res.data.result.map((s) => {
    const v = s.values && s.values.length ? s.values[s.values.length - 1] : null;
    return el("tr", {}, el("td", { class: "g" }, labelString(s.metric)), el("td", { class: "num" }, v ? fmtNum(parseFloat(v[1])) : "-"), el("td", {}, v ? new Date(v[0] * 1000).toISOString() : ""));
  });
  out.replaceChildren(el("table", { class: "result" }, el("thead", {}, el("tr", {}, el("th", {}, "series"), el("th", {}, "value"), el("th", {}, "at"))), el("tbody", {}, rows)));
}

// ---- Tables that sort by a click on a column's header -------------------
function sortableTable(columns, rows, opts) {
  // columns: [{name, num}]; rows: arrays of cell values (numbers sort as
  // numbers); opts.onRow(row) makes rows clickable.
  let by = opts && opts.sortBy !== undefined ? opts.sortBy : 0;
  let desc = !!(opts && opts.desc);
  const table = el("table", { class: "result sortable" });
  const render = () => {
    const sorted = [...rows].sort((a, b) => {
      const x = a[by], y = b[by];
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return desc ? -c : c;
    });
    const head = el("tr", {}, columns.map((c, i) => el("th", { class: c.num ? "num" : "", onclick: () => { desc = by === i ? !desc : !!c.num; by = i; render(); } },
      c.name + (by === i ? (desc ? " ▾" : " ▴") : ""))));
    const body = sorted.map((r) => el("tr", { class: opts && opts.onRow ? "click" : "", onclick: opts && opts.onRow ? () => opts.onRow(r) : undefined },
      r.map((v, i) => el("td", { class: columns[i].num ? "num" : i === 0 ? "g" : "" }, typeof v === "number" ? fmtNum(v) : v))));
    table.replaceChildren(el("thead", {}, head), el("tbody", {}, body));
  };
  render();
  return table;
}

// ---- The explore view: what is stored -------------------------------------
async function exploreView(params) {
  const main = document.getElementById("main");
  main.replaceChildren(el("p", { class: "empty" }, "loading…"));
  try {
    const [names, meta, tsdb] = await Promise.all([
      api("api/v1/label/__name__/values"), api("api/v1/metadata"), api("api/v1/status/tsdb", { limit: 10000 }),
    ]);
    const counts = new Map((tsdb.data.seriesCountByMetricName || []).map((x) => [x.name, x.value]));
    const rows = names.data.map((n) => {
      const m = (meta.data[n] || [{}])[0];
      return [n, m.type || "", m.unit || "", counts.get(n) || 0, m.help || ""];
    });
    const detail = el("div", { id: "metric-detail" });
    const show = async (name) => {
      const p = new URLSearchParams({ metric: name });
      setHash("explore", p);
      detail.replaceChildren(el("p", { class: "empty" }, "loading…"));
      const end = Date.now() / 1000;
      const series = (await api("api/v1/series", { "match[]": name, start: end - 86400, end })).data;
      const values = new Map();
      for (const s of series) for (const [k, v] of Object.entries(s)) if (k !== "__name__") (values.get(k) || values.set(k, new Set()).get(k)).add(v);
      detail.replaceChildren(
        el("h3", {}, name, " ", el("a", { href: "#/query?range=1h&q0=" + encodeURIComponent(name) }, "query it")),
        el("p", {}, `${series.length} series in the last day.`),
        sortableTable([{ name: "label" }, { name: "values", num: true }, { name: "some values" }],
          [...values].map(([k, vs]) => [k, vs.size, [...vs].slice(0, 8).join(", ") + (vs.size > 8 ? ", …" : "")]), { sortBy: 1, desc: true }));
    };
    main.replaceChildren(
      el("h2", {}, `Metrics (${rows.length})`),
      sortableTable([{ name: "metric" }, { name: "type" }, { name: "unit" }, { name: "series", num: true }, { name: "help" }], rows,
        { sortBy: 3, desc: true, onRow: (r) => show(r[0]) }),
      detail,
      el("h2", {}, "Cardinality"),
      el("div", { class: "cols" },
        el("div", {}, el("h3", {}, "Series by metric"), sortableTable([{ name: "metric" }, { name: "series", num: true }],
          (tsdb.data.seriesCountByMetricName || []).map((x) => [x.name, x.value]), { sortBy: 1, desc: true })),
        el("div", {}, el("h3", {}, "Values by label"), sortableTable([{ name: "label" }, { name: "values", num: true }],
          (tsdb.data.labelValueCountByLabelName || []).map((x) => [x.name, x.value]), { sortBy: 1, desc: true })),
        el("div", {}, el("h3", {}, "Series by label pair"), sortableTable([{ name: "pair" }, { name: "series", num: true }],
          (tsdb.data.seriesCountByLabelValuePair || []).map((x) => [x.name, x.value]), { sortBy: 1, desc: true })),
        el("div", {}, el("h3", {}, "Memory by label"), sortableTable([{ name: "label" }, { name: "bytes", num: true }],
          (tsdb.data.memoryInBytesByLabelName || []).map((x) => [x.name, x.value]), { sortBy: 1, desc: true }))),
    );
    if (params.get("metric")) show(params.get("metric"));
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) main.replaceChildren(el("pre", { class: "err" }, e.message));
  }
}

// ---- The capacity view: the report as a page -------------------------------
function capacityView(params) {
  const main = document.getElementById("main");
  const q = el("input", { id: "cap-query", size: 60, value: params.get("query") || "", placeholder: "a selector or expression, like avg by (host) (rate(cpu_seconds_total[5m]))" });
  const range = el("select", { id: "cap-range" }, ["7d", "14d", "30d", "90d", "180d", "365d"].map((r) => el("option", { value: r, selected: r === (params.get("range") || "30d") }, r)));
  const thr = el("input", { id: "cap-threshold", size: 8, value: params.get("threshold") || "", placeholder: "0.8 or 80%" });
  const of = el("select", { id: "cap-of" }, ["", "samples", "points", "5m-avg"].map((v) => el("option", { value: v, selected: v === (params.get("of") || "") }, v || "default")));
  const out = el("div", { id: "cap-out" });
  const form = el("form", { class: "controls", onsubmit: (ev) => { ev.preventDefault(); run(); } },
    el("label", {}, "query ", q), el("label", {}, "range ", range), el("label", {}, "threshold ", thr), el("label", {}, "percentiles of ", of),
    el("button", { type: "submit", id: "cap-run" }, "Report"));
  main.replaceChildren(form, out);

  async function run() {
    const p = new URLSearchParams({ query: q.value, range: range.value });
    if (thr.value) p.set("threshold", thr.value);
    if (of.value) p.set("percentile_of", of.value);
    setHash("capacity", new URLSearchParams({ query: q.value, range: range.value, threshold: thr.value, of: of.value }));
    out.replaceChildren(el("p", { class: "empty" }, "running…"));
    let rep;
    try {
      rep = (await api("api/v1/report", Object.fromEntries(p))).data;
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) out.replaceChildren(el("pre", { class: "err" }, e.message));
      return;
    }
    const unit = rep.unit === "%" ? "" : rep.unit ? " " + rep.unit : "";
    const f = (v) => (v === null || v === undefined ? "-" : rep.unit === "%" ? fmtNum(v * 100) + "%" : fmtNum(v) + unit);
    const days = (g) => (g.forecast.daysUntilCrossing === null ? Infinity : g.forecast.daysUntilCrossing);
    const forecast = (g) => g.forecast.kind === "crosses" ? "crosses " + g.forecast.crossing.slice(0, 10) : g.forecast.kind + (g.forecast.why ? " (" + g.forecast.why + ")" : "");
    const interval = (g) => g.forecast.crossingLow ? `${g.forecast.crossingLow.slice(0, 10)} to ${g.forecast.crossingHigh ? g.forecast.crossingHigh.slice(0, 10) : "after the horizon"}` : "-";
    const name = (g) => labelString(g.labels);
    const chart = el("div", { id: "cap-chart" });
    const rows = rep.groups.map((g, i) => [name(g), f(g.currentLevel), f(g.p95), g.headroom === null ? "-" : f(g.headroom), forecast(g), interval(g), days(g), i]);
    const table = el("table", { class: "result", id: "cap-table" },
      el("thead", {}, el("tr", {}, ["group", "level", "p95", "headroom", "forecast", "80% interval", "days left"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", { class: "click", onclick: () => drill(rep.groups[r[7]]) },
        r.slice(0, 7).map((v, i) => el("td", { class: i === 0 ? "g" : i === 6 || i < 4 ? "num" : "" }, i === 6 ? (v === Infinity ? "-" : v.toFixed(0)) : v))))));
    const base = "api/v1/report?" + p;
    const csv = () => {
      const lines = [["group", "level", "p95", "headroom", "forecast", "interval", "days left"].join(",")].concat(
        rows.map((r) => r.slice(0, 7).map((v) => `"${String(v === Infinity ? "" : v).replaceAll('"', '""')}"`).join(",")));
      const a = el("a", { href: URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" })), download: "capacity-report.csv" });
      a.click();
    };
    out.replaceChildren(
      el("p", { class: "info" }, `${rep.groups.length} groups, ${rep.start.slice(0, 10)} to ${rep.end.slice(0, 10)}, percentiles of ${rep.percentileOf}, from ${rep.tiers.join(", ")}`,
        " · export ", el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); csv(); } }, "CSV"), " ", el("a", { href: base + "&format=html", target: "_blank" }, "HTML"), " ",
        el("a", { href: base, target: "_blank" }, "JSON")),
      table, chart);
    if (rep.groups.length) drill(rep.groups[0]);

    // A group's daily p95, its trend from the regime's start carried to
    // the crossing, and the threshold.
    function drill(g) {
      chart.replaceChildren(el("h3", {}, name(g)), el("p", {}, forecast(g) + (g.forecast.crossingLow ? `, 80%: ${interval(g)}` : "")));
      const day0 = Date.parse(g.firstDay + "T00:00:00Z") / 1000;
      const n = g.dailyP95.length;
      let extra = 7;
      if (g.forecast.crossing) extra = Math.max(extra, Math.ceil((Date.parse(g.forecast.crossingHigh || g.forecast.crossing) / 1000 - (day0 + n * 86400)) / 86400) + 2);
      const xs = [], level = [], trend = [], threshold = [];
      const regime = g.trend.regimeStart ? Date.parse(g.trend.regimeStart + "T00:00:00Z") / 1000 : day0;
      const startLevel = g.currentLevel - g.trend.perDay * (n - 1);
      for (let i = 0; i < n + extra; i++) {
        const t = day0 + i * 86400 + 43200;
        xs.push(t);
        level.push(i < n ? g.dailyP95[i] : null);
        trend.push(t >= regime ? startLevel + g.trend.perDay * i : null);
        threshold.push(rep.threshold === null ? null : rep.threshold);
      }
      const series = [{}, { label: "daily p95", stroke: palette[0], width: 1.5 }, { label: "trend", stroke: "#8250df", dash: [5, 4], width: 1.2 }];
      const data = [xs, level, trend];
      if (rep.threshold !== null) {
        series.push({ label: "threshold", stroke: "#cf222e", width: 1 });
        data.push(threshold);
        if (g.forecast.crossingLow) {
          // The crossing's 80% interval, drawn thick on the threshold.
          const lo = Date.parse(g.forecast.crossingLow) / 1000;
          const hi = g.forecast.crossingHigh ? Date.parse(g.forecast.crossingHigh) / 1000 : Infinity;
          series.push({ label: "80% interval", stroke: "#cf222e55", width: 8 });
          data.push(xs.map((t) => (t >= lo - 43200 && t <= hi + 43200 ? rep.threshold : null)));
        }
      }
      new uPlot({ width: Math.max(chart.clientWidth || 900, 300), height: 280, series, axes: [{}, { values: (u, v) => v.map((x) => f(x)), size: 80 }] }, data, chart);
    }
  }
  if (q.value) run();
}

// ---- The status view: the server as /metrics and the build tell -----------
async function statusView() {
  const main = document.getElementById("main");
  main.replaceChildren(el("p", { class: "empty" }, "loading…"));
  const read = async () => {
    const resp = await fetch("metrics", { credentials: "same-origin" });
    const m = new Map();
    for (const line of (await resp.text()).split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const i = line.lastIndexOf(" ");
      m.set(line.slice(0, i), parseFloat(line.slice(i + 1)));
    }
    return m;
  };
  try {
    const [build, flags, errs, cl] = await Promise.all([api("api/v1/status/buildinfo"), api("api/v1/status/flags").catch(() => ({ data: {} })),
      api("api/v1/status/errors").catch(() => ({ data: [] })), api("api/v1/status/cluster").catch(() => ({ data: {} }))]);
    // The page shows at once; the ingest rate, from two readings two
    // seconds apart, follows.
    const b = await read();
    const get = (m, k) => m.get(k) ?? NaN;
    const rateCell = el("span", { id: "ingest-rate" }, "measuring…");
    setTimeout(async () => {
      try {
        const c = await read();
        const k = "headroom_storage_samples_appended_total";
        rateCell.textContent = fmtNum((get(c, k) - get(b, k)) / 2);
      } catch {
        rateCell.textContent = "-";
      }
    }, 2000);
    const sum = (m, prefix) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((s, [, v]) => s + v, 0);
    const tiers = [...b].filter(([k]) => k.startsWith("headroom_tier_disk_bytes{")).map(([k, v]) => [/tier="([^"]+)"/.exec(k)[1], v]);
    const kv = (rows) => el("table", { class: "result kv" }, el("tbody", {}, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { class: "num" }, v)))));
    const bytes = (v) => (isFinite(v) ? (v / 1048576).toFixed(1) + " MiB" : "-");
    // In a cluster: the nodes, each partition's owners, and this node's
    // standing on those it owns (docs/cluster.md).
    const c = cl.data;
    const num = (v) => (v === undefined ? "-" : fmtNum(v));
    const standing = (p) => (p.serving === undefined ? "-" : p.serving ? "yes" : p.incomplete ? "no: the stream lacks its past" : "catching up");
    const clusterPart = !c.partitionOwners ? [] : [
      el("h2", {}, "Cluster"),
      kv([["this node", c.node], ["partitions", String(c.partitions)], ["owners a partition", String(c.ownersPerPartition)], ["lease", c.lease],
        ["acknowledged samples this node's store refused (past its retention when applied)", num(c.refusedSamples)],
        ["new series written unchecked against limits (no owner answered)", num(c.uncheckedSeries)],
        ...Object.entries(c.nodes).sort().map(([n, a]) => [`node ${n}`, a])]),
      el("table", { class: "result", id: "cluster-partitions" },
        el("thead", {}, el("tr", {}, ["partition", "owners", "served by this node", "lag (messages)", "applied (stream sequence)", "owners serving"].map((h) => el("th", {}, h)))),
        el("tbody", {}, c.partitionOwners.map((p) => el("tr", {},
          el("td", { class: "num" }, String(p.partition)), el("td", {}, p.owners.join(", ") || "none"), el("td", {}, standing(p)),
          el("td", { class: "num" }, num(p.lag)), el("td", { class: "num" }, num(p.applied)),
          el("td", {}, (p.servingOwners || []).join(", ") || "none"))))),
    ];
    main.replaceChildren(
      el("h2", {}, "Server"),
      kv([["version", build.data.version], ["revision", build.data.revision || "-"], ["Go", build.data.goVersion || "-"]]),
      ...clusterPart,
      el("h2", {}, "Ingest and storage"),
      kv([
        ["samples appended a second", rateCell],
        ["active series", `${fmtNum(get(b, "headroom_active_series"))} of ${fmtNum(get(b, "headroom_active_series_limit"))}`],
        ["writable", get(b, "headroom_storage_writable") === 1 ? "yes" : "no"],
        ["data directory on disk", bytes(get(b, "headroom_pebble_disk_bytes"))],
        ...tiers.map(([t, v]) => [`tier ${t} on disk`, bytes(v)]),
        ["rollup lag", isFinite(get(b, "headroom_rollup_lag_seconds")) ? get(b, "headroom_rollup_lag_seconds").toFixed(0) + " s" : "-"],
        ["series-days waiting for the downsampler", fmtNum(sum(b, "headroom_rollup_pending"))],
        ["write errors of the log", fmtNum(get(b, "headroom_wal_write_errors_total"))],
        ["writes refused for memory", fmtNum(get(b, "headroom_memory_refused_total"))],
      ]),
      el("h2", {}, "Recent errors and warnings"),
      errs.data.length === 0 ? el("p", { class: "empty" }, "None since the server started.")
        : el("table", { class: "result", id: "recent-errors" }, el("tbody", {}, errs.data.map((e) => el("tr", {}, el("td", {}, e.time.replace("T", " ").slice(0, 19)), el("td", {}, e.level), el("td", {}, e.message))))),
      el("h2", {}, "Flags"),
      kv(Object.entries(flags.data).sort()),
    );
  } catch (e) {
    if (e.status !== 401 && e.status !== 403) main.replaceChildren(el("pre", { class: "err" }, e.message));
  }
}

function route() {
  const { view, params } = hashState();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === view);
  if (view === "explore") exploreView(params);
  else if (view === "capacity") capacityView(params);
  else if (view === "status") statusView(params);
  else queryView(params);
}

window.addEventListener("hashchange", route);
route();
