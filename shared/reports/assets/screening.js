// The screening report: report_files/index.js calls wsIndex(...), each part file wsPart(...); a finished job's
// views (the flagged images by suspicion, the unreadable items) wsSorted(...) and wsErrors(...), a few pages a file.
// The page opens on the first file of each view; a filter or the sort by id reads every part first.
// Every text from the records (ids come from users' file names) goes into the page as text, never as HTML.
"use strict";
(function () {
  const FOLDER = "report_files/";
  const PER_PAGE = 48, ERRORS_PER_PAGE = 50;
  const flagged = [], errors = [];  // every part's entries, once all are read
  const views = {sorted: new Map(), errors: new Map()}, asked = new Set();
  let index = null, loadedParts = 0, allAsked = false, allRead = false;
  const state = { label: "", signal: "", sort: "suspicion", page: 0, errorsPage: 0 };
  // Columns of a flagged entry (shared/reports/screening_page.py: FLAGGED_COLUMNS).
  const SEQ = 0, ID = 1, LABEL = 2, CONFIDENCE = 3, RAW = 4, SUSPICION = 5, SIGNAL = 6, THUMB = 7, WHY = 8;

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function pct(x) { return (100 * x).toFixed(1) + " %"; }
  function row(table, name, value, numeric) {
    const tr = el("tr");
    tr.appendChild(el("th", name));
    tr.appendChild(el("td", value, numeric ? "num" : ""));
    table.appendChild(tr);
  }
  function load(src, onerror) {
    const script = document.createElement("script");
    script.src = src;
    script.onerror = onerror;
    document.body.appendChild(script);
  }

  window.wsIndex = function (data) {
    index = data;
    showSummary();
    setUp();
    render();
  };
  window.wsPart = function (number, part) {
    // Only what the index counts: a part rewritten since the index was read may hold more.
    const most = index.flagged ?? Infinity, mostErrors = index.errors ?? Infinity;
    for (const entry of part.flagged) if (entry[SEQ] <= most) flagged.push(entry);
    for (const entry of part.errors) if (errors.length < mostErrors) errors.push(entry);
    loadedParts += 1;
    if (loadedParts < index.parts) load(file("part", loadedParts), missing);
    else { allRead = true; render(); }
  };
  window.wsSorted = function (number, entries) { views.sorted.set(number, entries); render(); };
  window.wsErrors = function (number, entries) { views.errors.set(number, entries); render(); };
  function file(name, number) { return FOLDER + name + "-" + String(number).padStart(5, "0") + ".js"; }
  function missing() {
    document.getElementById("status").textContent = "A file of this report is missing (it is being rewritten?): reload the page.";
  }
  function readAll() {
    if (allAsked) return;
    allAsked = true;
    if (index.parts === 0) { allRead = true; render(); return; }
    load(file("part", 0), missing);
  }
  function viewEntry(view, size, at) {
    // The entries of a view's file holding entry ``at``, or null while it loads.
    const number = Math.floor(at / size);
    if (views[view].has(number)) return views[view].get(number);
    if (!asked.has(view + number)) { asked.add(view + number); load(file(view, number), missing); }
    return null;
  }
  function render() { showGallery(); showErrors(); }

  function showSummary() {
    const s = index.summary, table = document.getElementById("summary");
    const when = new Date(index.written).toLocaleString();
    const lines = {complete: "Complete: " + s.images + " items, written " + when + ".",
      stopped: "Watch stopped: " + s.images + " items, written " + when + ".",
      interrupted: "Interrupted: " + s.images + " items screened before it stopped, written " + when + ".",
      running: "Running: " + s.images + " items so far, written " + when + " (reload for more)."};
    document.getElementById("status").textContent = lines[index.status] || lines.running;
    row(table, "items", s.images, true);
    row(table, "screened", s.screened, true);
    row(table, "flagged", s.flagged + (s.screened ? " (" + pct(s.flagged / s.screened) + ")" : ""), true);
    row(table, "unreadable", s.errors, true);
    if (s.calibration) {
      const c = s.calibration;
      row(table, "calibration", c.name);
      row(table, "threshold", c.threshold === null || c.threshold === undefined ? "-" : Number(c.threshold).toFixed(4), true);
      if (c.fpr !== null && c.fpr !== undefined) row(table, "calibrated false-positive rate", pct(c.fpr), true);
    }
    if (s.source_check) {
      const check = s.source_check;
      row(table, "source check", check.warning ? "warning" : (check.reason || "no warning"));
      if (check.warning) document.getElementById("warning").appendChild(el("p", check.message, "warning"));
    }
    const labels = Object.entries(s.labels || {}).map(([k, v]) => k + " " + v).join(", ");
    row(table, "labels", labels || "-");
    const charts = document.getElementById("charts");
    const threshold = s.calibration ? s.calibration.threshold : null;
    charts.appendChild(histogram("this job", index.histogram, threshold, "#4c72b0"));
    if (index.clean_histogram) charts.appendChild(histogram("clean calibration images", index.clean_histogram, threshold, "#8c8c8c"));
    else charts.appendChild(el("p", "This calibration did not record its clean images' suspicion; " +
      "waveshield calibrate records it.", "note"));
  }

  // A histogram of suspicion (0 to 1) as SVG: bars on a log scale (the flagged tail is a few % of a clean set),
  // the threshold as a red line. Each bar carries its count (data-count, and a tooltip).
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function histogram(title, counts, threshold, colour) {
    const W = 760, H = 220, left = 56, right = 150, top = 26, bottom = 40;
    const plotW = W - left - right, plotH = H - top - bottom;
    const total = counts.reduce((a, b) => a + b, 0), peak = Math.max(1, ...counts);
    const decades = Math.max(1, Math.ceil(Math.log10(peak + 1)));
    const y = (n) => top + plotH - (n > 0 ? plotH * Math.log10(n + 1) / decades : 0);
    const x = (v) => left + plotW * v;
    const chart = svg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", class: "histogram"});
    chart.appendChild(svg("title", {}, title + ": suspicion of " + total + " images"));
    chart.appendChild(svg("text", {x: left, y: 16, "font-size": 13}, title + ": " + total.toLocaleString("en") + " images"));
    for (const n of [0, ...Array.from({length: decades}, (_, d) => Math.pow(10, d))]) {  // 0, 1, 10, 100...
      const at = y(n);
      chart.appendChild(svg("line", {x1: left, x2: left + plotW, y1: at, y2: at, stroke: "#e4e4e4"}));
      chart.appendChild(svg("text", {x: left - 6, y: at + 4, "text-anchor": "end", "font-size": 11}, String(n)));
    }
    const width = plotW / counts.length;
    counts.forEach((n, k) => {
      const bar = svg("rect", {x: x(k / counts.length) + 0.5, width: Math.max(width - 1, 1), y: y(n), height: top + plotH - y(n),
        fill: colour, "data-count": n, "data-from": (k / counts.length).toFixed(2)});
      bar.appendChild(svg("title", {}, (k / counts.length).toFixed(2) + " to " + ((k + 1) / counts.length).toFixed(2) + ": " + n + " images"));
      chart.appendChild(bar);
    });
    chart.appendChild(svg("rect", {x: left, y: top, width: plotW, height: plotH, fill: "none", stroke: "#333"}));
    for (let t = 0; t <= 5; t++) {
      chart.appendChild(svg("text", {x: x(t / 5), y: top + plotH + 15, "text-anchor": "middle", "font-size": 11}, (t / 5).toFixed(1)));
    }
    chart.appendChild(svg("text", {x: left + plotW / 2, y: H - 6, "text-anchor": "middle", "font-size": 12},
      "suspicion (flagged above the threshold); images, log scale"));
    if (threshold !== null && threshold !== undefined) {
      chart.appendChild(svg("line", {x1: x(threshold), x2: x(threshold), y1: top, y2: top + plotH, stroke: "#c0392b",
        "stroke-width": 2, class: "threshold", "data-threshold": threshold}));
      chart.appendChild(svg("line", {x1: left + plotW + 12, x2: left + plotW + 30, y1: top + 10, y2: top + 10, stroke: "#c0392b", "stroke-width": 2}));
      chart.appendChild(svg("text", {x: left + plotW + 34, y: top + 14, "font-size": 11}, "threshold " + Number(threshold).toFixed(3)));
    }
    return chart;
  }

  function options(select, values) {
    for (const v of values) { const o = el("option", v); o.value = v; select.appendChild(o); }
  }
  function setUp() {
    if (index.labels) options(document.getElementById("label-filter"), index.labels);
    if (index.signals) options(document.getElementById("signal-filter"), index.signals);
    for (const [id, key] of [["label-filter", "label"], ["signal-filter", "signal"], ["sort", "sort"]]) {
      document.getElementById(id).addEventListener("change", (event) => { state[key] = event.target.value; state.page = 0; render(); });
    }
    document.getElementById("previous").addEventListener("click", () => { state.page -= 1; showGallery(); });
    document.getElementById("next").addEventListener("click", () => { state.page += 1; showGallery(); });
    document.getElementById("errors-previous").addEventListener("click", () => { state.errorsPage -= 1; showErrors(); });
    document.getElementById("errors-next").addEventListener("click", () => { state.errorsPage += 1; showErrors(); });
  }
  // Whether what is shown needs every entry: a running job (no views yet), a filter, the sort by id.
  function needsAll() { return !index.views || state.label !== "" || state.signal !== "" || state.sort !== "suspicion"; }

  function chosen() {
    const shown = flagged.filter((f) => (!state.label || f[LABEL] === state.label) &&
      (!state.signal || (f[SIGNAL] === null ? "none" : f[SIGNAL]) === state.signal));
    if (state.sort === "id") shown.sort((a, b) => (a[ID] < b[ID] ? -1 : a[ID] > b[ID] ? 1 : a[SEQ] - b[SEQ]));
    else shown.sort((a, b) => b[SUSPICION] - a[SUSPICION] || a[SEQ] - b[SEQ]);
    return shown;
  }
  function picture(file, alt) {
    if (!file) return el("div", "image not at hand here", "missing");
    const img = el("img");
    img.src = FOLDER + "thumbs/" + file;
    img.alt = alt;
    return img;
  }
  function showGallery() {
    const gallery = document.getElementById("gallery");
    let total, page;
    if (needsAll() && !allRead) {
      readAll();
      gallery.replaceChildren(el("p", "Reading all " + index.flagged + " flagged entries\u2026", "note"));
      return;
    }
    if (allRead) {
      const shown = chosen();
      total = shown.length;
      state.page = Math.min(Math.max(state.page, 0), Math.max(1, Math.ceil(total / PER_PAGE)) - 1);
      page = shown.slice(state.page * PER_PAGE, (state.page + 1) * PER_PAGE);
    } else if (index.flagged === 0) {
      total = 0;
      page = [];
    } else {
      total = index.flagged;
      state.page = Math.min(Math.max(state.page, 0), Math.max(1, Math.ceil(total / PER_PAGE)) - 1);
      const first = state.page * PER_PAGE, size = index.views.sorted_size;
      const entries = viewEntry("sorted", size, first);
      if (entries === null) { gallery.replaceChildren(el("p", "Loading\u2026", "note")); return; }
      page = entries.slice(first % size, first % size + PER_PAGE);
    }
    const pages = Math.max(1, Math.ceil(total / PER_PAGE));
    gallery.replaceChildren();
    for (const f of page) {
      const tile = el("figure", null, "tile");
      tile.dataset.seq = f[SEQ];
      const pictures = el("div", null, "pictures");
      const name = String(f[SEQ]).padStart(7, "0");
      pictures.appendChild(picture(f[THUMB] ? name + ".png" : null, "the image as the classifier saw it"));
      if (f[WHY]) pictures.appendChild(picture(name + "-why.png", "what the DWT reconstruction removes, amplified"));
      tile.appendChild(pictures);
      const caption = el("figcaption");
      caption.appendChild(el("div", f[ID], "id"));
      caption.appendChild(el("div", f[LABEL] + " (" + pct(f[CONFIDENCE]) + ")", "line label"));
      if (f[RAW] !== f[LABEL]) caption.appendChild(el("div", "raw image: " + f[RAW], "line raw"));
      const s = el("div", null, "line");
      s.appendChild(el("span", "suspicion " + Number(f[SUSPICION]).toFixed(4), "suspicion"));
      s.appendChild(el("span", " \u00b7 " + (f[SIGNAL] === null ? "no signal" : f[SIGNAL]), "signal"));
      caption.appendChild(s);
      tile.appendChild(caption);
      gallery.appendChild(tile);
    }
    document.getElementById("page").textContent = "page " + (state.page + 1) + " of " + pages;
    document.getElementById("previous").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    document.getElementById("gallery-note").textContent = total + " of " + index.flagged +
      " flagged images shown. Left: the image at the pixels the classifier saw (" + index.size + " x " + index.size +
      ", enlarged without smoothing); right, where the signal is a model path or a reconstruction: what the " +
      "DWT reconstruction removes, x" + index.why_gain + " around mid-grey.";
  }
  function showErrors() {
    const count = allRead ? errors.length : index.errors;
    const pages = Math.max(1, Math.ceil(count / ERRORS_PER_PAGE));
    state.errorsPage = Math.min(Math.max(state.errorsPage, 0), pages - 1);
    const first = state.errorsPage * ERRORS_PER_PAGE;
    let shown;
    if (allRead) shown = errors.slice(first, first + ERRORS_PER_PAGE);
    else if (!index.views) { readAll(); return; }
    else if (count === 0) shown = [];
    else {
      const size = index.views.errors_size, entries = viewEntry("errors", size, first);
      if (entries === null) return;
      shown = entries.slice(first % size, first % size + ERRORS_PER_PAGE);
    }
    const table = document.getElementById("errors");
    table.replaceChildren();
    const head = el("tr");
    head.appendChild(el("th", "id"));
    head.appendChild(el("th", "reason"));
    table.appendChild(head);
    for (const [id, reason] of shown) {
      const tr = el("tr");
      tr.appendChild(el("td", id));
      tr.appendChild(el("td", reason));
      table.appendChild(tr);
    }
    document.getElementById("errors-note").textContent = count ? count + " item(s) could not be read." : "None.";
    document.getElementById("errors-page").textContent = "page " + (state.errorsPage + 1) + " of " + pages;
    document.getElementById("errors-previous").disabled = state.errorsPage === 0;
    document.getElementById("errors-next").disabled = state.errorsPage >= pages - 1;
  }
  load(FOLDER + "index.js", () => {
    document.getElementById("status").textContent = "report_files/index.js is missing: this page needs the folder beside it.";
  });
}());
