// The Aster portal: ADQL queries (async TAP jobs) with a table browser, results, plots and
// downloads; the sky (Aladin Lite on the archive's HiPS, image footprints from ObsCore,
// objects from TAP); image search (SIAv2) with previews and SODA cutouts; the query
// history; sign-in, personal tokens and the user's own files (VOSpace). Everything it needs
// is served by the archive itself.
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const BASE = new URL(".", location.href).href.replace(/\/$/, "");

// ---------------------------------------------------------------- TAP helpers
async function tapSync(query, maxrec = 100000) {
  const body = new URLSearchParams({ LANG: "ADQL", QUERY: query, RESPONSEFORMAT: "json", MAXREC: maxrec });
  const r = await fetch(`${BASE}/tap/sync`, { method: "POST", body });
  if (!r.ok) throw new Error(await errorText(r));
  return r.json();
}

// An error answer's message: the QUERY_STATUS INFO of a DALI error VOTable, or the text.
async function errorText(r) {
  const text = await r.text();
  const m = text.match(/<INFO[^>]*name="QUERY_STATUS"[^>]*>([\s\S]*?)<\/INFO>/);
  return (m ? m[1] : text).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&").trim()
    || `HTTP ${r.status}`;
}

// ---------------------------------------------------------------- tabs
function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-selected", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "sky") initSky();
  if (name === "history") loadHistory();
  if (name === "space") loadSpace();
}
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));

// ---------------------------------------------------------------- ADQL editor
const KEYWORDS = new Set(("SELECT FROM WHERE AND OR NOT AS ORDER BY GROUP HAVING TOP DISTINCT JOIN LEFT RIGHT " +
  "INNER OUTER FULL NATURAL ON USING ASC DESC LIMIT OFFSET IN IS NULL BETWEEN LIKE ILIKE UNION INTERSECT " +
  "EXCEPT ALL WITH CASE WHEN THEN ELSE END EXISTS CAST").split(" "));
const FUNCTIONS = new Set(("POINT CIRCLE POLYGON BOX CONTAINS INTERSECTS DISTANCE AREA CENTROID COORD1 COORD2 " +
  "COUNT SUM AVG MIN MAX ABS SQRT LOG LOG10 EXP POWER ROUND FLOOR CEILING RADIANS DEGREES SIN COS TAN ASIN " +
  "ACOS ATAN ATAN2 PI MOD LOWER UPPER COALESCE IVO_HEALPIX_INDEX NJY_TO_ABMAG").split(" "));
const editor = $("#adql"), highlight = $("#adql-hl");

function escapeHtml(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
function highlightAdql(text) {
  const re = /(--[^\n]*)|('(?:[^']|'')*'?)|("(?:[^"])*"?)|(\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)/g;
  let out = "", last = 0, m;
  while ((m = re.exec(text))) {
    out += escapeHtml(text.slice(last, m.index));
    const [t] = m;
    let cls = null;
    if (m[1]) cls = "cmt"; else if (m[2]) cls = "str"; else if (m[4]) cls = "num";
    else if (m[5]) cls = KEYWORDS.has(t.toUpperCase()) ? "kw" : FUNCTIONS.has(t.toUpperCase()) ? "fn" : null;
    out += cls ? `<span class="${cls}">${escapeHtml(t)}</span>` : escapeHtml(t);
    last = m.index + t.length;
  }
  return out + escapeHtml(text.slice(last)) + "\n";
}
function refreshHighlight() { highlight.innerHTML = highlightAdql(editor.value); highlight.scrollTop = editor.scrollTop; }
editor.addEventListener("input", refreshHighlight);
editor.addEventListener("scroll", () => { highlight.scrollTop = editor.scrollTop; });
refreshHighlight();
function insertAtCursor(text) {
  const { selectionStart: a, selectionEnd: b, value } = editor;
  editor.value = value.slice(0, a) + text + value.slice(b);
  editor.selectionStart = editor.selectionEnd = a + text.length;
  editor.focus();
  refreshHighlight();
}

// Examples from the TAP service's examples document (DALI examples, RDFa).
async function loadExamples() {
  try {
    const doc = new DOMParser().parseFromString(await (await fetch(`${BASE}/tap/examples`)).text(), "text/html");
    const select = $("#examples");
    for (const ex of doc.querySelectorAll('[typeof="example"]')) {
      const name = ex.querySelector('[property="name"]')?.textContent.trim();
      const query = ex.querySelector('[property="query"]')?.textContent.trim();
      if (name && query) select.append(el("option", { value: query }, name));
    }
    select.addEventListener("change", () => { if (select.value) { editor.value = select.value; refreshHighlight(); } });
  } catch (e) { console.warn("examples", e); }
}

// ---------------------------------------------------------------- table browser
let schema = [];
async function loadSchema() {
  try {
    const [tables, columns] = await Promise.all([
      tapSync("SELECT table_name, description FROM TAP_SCHEMA.tables ORDER BY table_name"),
      tapSync("SELECT table_name, column_name, datatype, unit, ucd, description FROM TAP_SCHEMA.columns"),
    ]);
    const byTable = new Map(tables.data.map(([t, d]) => [t, { name: t, description: d || "", columns: [] }]));
    for (const [t, c, type, unit, ucd, d] of columns.data) byTable.get(t)?.columns.push({ name: c, type, unit, ucd, description: d || "" });
    schema = [...byTable.values()];
    renderSchema();
    if ($("#table-search").value.trim()) searchSchema();
  } catch (e) { $("#table-list").replaceChildren(el("li", { class: "error" }, `Tables: ${e.message}`)); }
}
// The whole list, or, while searching, the archive's full-text matches grouped by table.
function renderSchema(hits = null) {
  const list = $("#table-list");
  list.replaceChildren();
  const byName = new Map(schema.map((t) => [t.name, t]));
  let shown;
  if (hits === null) {
    shown = schema.map((t) => ({ table: t, columns: t.columns, open: false }));
  } else {
    const groups = new Map();
    for (const h of hits) {
      const t = byName.get(h.table);
      if (!t) continue;
      if (!groups.has(h.table)) groups.set(h.table, { table: t, columns: [], open: true });
      if (h.column) groups.get(h.table).columns.push(t.columns.find((c) => c.name === h.column) || { name: h.column, description: h.description });
    }
    shown = [...groups.values()].map((g) => ({ ...g, columns: g.columns.length ? g.columns : g.table.columns }));
    if (!shown.length) list.append(el("li", { class: "tdesc" }, "Nothing matches."));
  }
  for (const { table: t, columns, open } of shown) {
    const sub = el("ul", {});
    sub.hidden = !open;
    for (const c of columns) {
      sub.append(el("li", {},
        el("span", { class: "col", title: c.description, onclick: () => insertAtCursor(c.name) }, c.name),
        " ", el("span", { class: "cdesc" }, [c.type, c.unit].filter(Boolean).join(", "))));
    }
    const name = el("span", { class: "tname", title: "Show columns; double-click to query", onclick: () => { sub.hidden = !sub.hidden; },
      ondblclick: () => { editor.value = `SELECT TOP 100 * FROM ${t.name}`; refreshHighlight(); } }, t.name);
    list.append(el("li", { "data-table": t.name }, name, el("div", { class: "tdesc" }, t.description), sub));
  }
}
let searchTimer = null;
async function searchSchema() {
  const q = $("#table-search").value.trim();
  if (!q) { renderSchema(); return; }
  try {
    const r = await fetch(`${BASE}/tap/search?${new URLSearchParams({ q, limit: 100 })}`);
    if (!r.ok) throw new Error(await r.text());
    if ($("#table-search").value.trim() === q) renderSchema(await r.json());
  } catch (e) { $("#table-list").replaceChildren(el("li", { class: "error" }, `Search: ${e.message}`)); }
}
$("#table-search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(searchSchema, 150); });

// ---------------------------------------------------------------- running queries
let job = null, result = null, sortBy = null, page = 0;
const PAGE = 50;
const status = (text, error = false) => { const s = $("#status"); s.textContent = text; s.className = error ? "error" : ""; };

async function runQuery() {
  const query = editor.value.trim();
  if (!query) return;
  $("#run").disabled = true;
  $("#cancel").disabled = false;
  $("#result").hidden = true;
  status("submitting…");
  const started = performance.now();
  try {
    const body = new URLSearchParams({ LANG: "ADQL", QUERY: query, RESPONSEFORMAT: "json", MAXREC: $("#maxrec").value, PHASE: "RUN" });
    const r = await fetch(`${BASE}/tap/async`, { method: "POST", body });
    if (!r.ok) throw new Error(await errorText(r));
    job = r.url;
    let phase = "QUEUED";
    while (["PENDING", "QUEUED", "EXECUTING"].includes(phase)) {
      await new Promise((ok) => setTimeout(ok, 250));
      phase = (await (await fetch(`${job}/phase`)).text()).trim();
      status(`${phase.toLowerCase()} · ${((performance.now() - started) / 1000).toFixed(1)} s`);
    }
    if (phase === "COMPLETED") {
      const res = await fetch(`${job}/results/result`);
      if (!res.ok) throw new Error(await errorText(res));
      result = await res.json();
      sortBy = null; page = 0;
      showResult(query, (performance.now() - started) / 1000);
    } else if (phase === "ERROR") {
      throw new Error(await errorText(await fetch(`${job}/error`)));
    } else {
      status(`job ${phase.toLowerCase()}`, phase !== "ABORTED");
    }
  } catch (e) {
    status(e.message, true);
  } finally {
    $("#run").disabled = false;
    $("#cancel").disabled = true;
  }
}
$("#run").addEventListener("click", runQuery);
editor.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runQuery(); } });
$("#cancel").addEventListener("click", async () => {
  if (!job) return;
  await fetch(`${job}/phase`, { method: "POST", body: new URLSearchParams({ PHASE: "ABORT" }) });
  status("cancelling…");
});

function showResult(query, seconds) {
  const n = result.data.length;
  const overflow = result.data.length >= Number($("#maxrec").value);
  status(`${n} rows in ${seconds.toFixed(2)} s${overflow ? " (MAXREC reached)" : ""}`);
  $("#result").hidden = false;
  const names = result.metadata.map((c) => c.name);
  for (const id of ["#plot-x", "#plot-y"]) {
    $(id).replaceChildren(...names.map((c) => el("option", { value: c }, c)));
  }
  const numeric = result.metadata.map((c, i) => [c, i]).filter(([c]) => /double|float|long|int|short/.test(c.datatype));
  if (numeric.length) $("#plot-x").value = numeric[Math.min(numeric.length - 1, 3)][0].name;
  if (numeric.length > 1) $("#plot-y").value = numeric[Math.min(numeric.length - 1, 4)][0].name;
  const ra = result.metadata.find((c) => (c.ucd || "").startsWith("pos.eq.ra"));
  $("#plot-kind").value = numeric.length ? "histogram" : "histogram";
  if (ra) $("#plot-kind").dataset.hasSky = "1";
  renderTable();
  drawPlot();
  const links = $("#downloads");
  links.hidden = false;
  links.replaceChildren("Download: ", ...[["votable", "VOTable"], ["csv", "CSV"], ["tsv", "TSV"], ["fits", "FITS"], ["parquet", "Parquet"], ["json", "JSON"]]
    .map(([f, label]) => el("a", { href: `${BASE}/tap/sync?${new URLSearchParams({ LANG: "ADQL", QUERY: query, RESPONSEFORMAT: f })}`, download: "" }, label)));
}

function renderTable() {
  const rows = result.data.slice();
  if (sortBy) {
    const { index, dir } = sortBy;
    rows.sort((a, b) => {
      const x = a[index], y = b[index];
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
  }
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  $("#page").textContent = `page ${page + 1} of ${pages}`;
  $("#row-count").textContent = `${rows.length} rows`;
  const head = el("tr", {}, ...result.metadata.map((c, i) => el("th", {
    title: [c.description, c.unit, c.ucd].filter(Boolean).join(" · "),
    class: sortBy?.index === i ? (sortBy.dir > 0 ? "sorted-asc" : "sorted-desc") : "",
    onclick: () => { sortBy = { index: i, dir: sortBy?.index === i ? -sortBy.dir : 1 }; renderTable(); },
  }, c.name)));
  const fmt = (v) => v === null ? "" : typeof v === "number" && !Number.isInteger(v) ? Number(v.toPrecision(8)).toString() : String(v);
  const body = rows.slice(page * PAGE, (page + 1) * PAGE).map((r) => el("tr", {}, ...r.map((v) => el("td", {}, fmt(v)))));
  $("#table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...body));
}
$("#prev").addEventListener("click", () => { page = Math.max(0, page - 1); renderTable(); });
$("#next").addEventListener("click", () => { page += 1; renderTable(); });

// ---------------------------------------------------------------- plots
function column(name) {
  const i = result.metadata.findIndex((c) => c.name === name);
  return result.data.map((r) => r[i]).map((v) => (v === null ? NaN : Number(v)));
}
function extent(v) {
  const f = v.filter(Number.isFinite);
  if (!f.length) return [0, 1];
  let lo = Math.min(...f), hi = Math.max(...f);
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  return [lo, hi];
}
function ticks(lo, hi, n = 5) {
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const s = [1, 2, 5, 10].map((m) => m * step).find((st) => (hi - lo) / st <= n) || step * 10;
  const out = [];
  for (let t = Math.ceil(lo / s) * s; t <= hi + 1e-12; t += s) out.push(Number(t.toPrecision(10)));
  return out;
}
// Axes on a canvas; returns the data-to-pixel transforms.
function axes(ctx, [x0, x1], [y0, y1], xlabel, ylabel, { flipX = false } = {}) {
  const { width: W, height: H } = ctx.canvas;
  const L = 74, R = 15, T = 12, B = 40; // room for "-100000" beside the y label
  ctx.clearRect(0, 0, W, H);
  ctx.font = "12px system-ui"; ctx.fillStyle = "#1d2330"; ctx.strokeStyle = "#8a93a6";
  const X = (v) => flipX ? W - R - ((v - x0) / (x1 - x0)) * (W - L - R) : L + ((v - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => H - B - ((v - y0) / (y1 - y0)) * (H - T - B);
  ctx.strokeRect(L, T, W - L - R, H - T - B);
  ctx.textAlign = "center";
  for (const t of ticks(x0, x1)) { ctx.fillText(t, X(t), H - B + 15); }
  ctx.fillText(xlabel, (L + W - R) / 2, H - 6);
  ctx.textAlign = "right";
  for (const t of ticks(y0, y1)) { ctx.fillText(t, L - 5, Y(t) + 4); }
  ctx.save(); ctx.translate(14, (T + H - B) / 2); ctx.rotate(-Math.PI / 2); ctx.textAlign = "center"; ctx.fillText(ylabel, 0, 0); ctx.restore();
  return { X, Y };
}
function drawPlot() {
  if (!result) return;
  const ctx = $("#plot").getContext("2d");
  const kind = $("#plot-kind").value;
  const xs = column($("#plot-x").value);
  if (kind === "histogram") {
    const [lo, hi] = extent(xs);
    const nb = Math.min(60, Math.max(5, Math.round(Math.sqrt(xs.length))));
    const counts = new Array(nb).fill(0);
    for (const v of xs) if (Number.isFinite(v)) counts[Math.min(nb - 1, Math.floor(((v - lo) / (hi - lo)) * nb))] += 1;
    const { X, Y } = axes(ctx, [lo, hi], [0, Math.max(...counts) * 1.05 || 1], $("#plot-x").value, "count");
    ctx.fillStyle = "#2b5fd9";
    counts.forEach((c, i) => { const a = X(lo + (i * (hi - lo)) / nb), b = X(lo + ((i + 1) * (hi - lo)) / nb); ctx.fillRect(a, Y(c), b - a - 1, Y(0) - Y(c)); });
    return;
  }
  let x = xs, y = column($("#plot-y").value), xl = $("#plot-x").value, yl = $("#plot-y").value, flipX = false;
  if (kind === "sky") {
    const ra = result.metadata.find((c) => (c.ucd || "").startsWith("pos.eq.ra"));
    const dec = result.metadata.find((c) => (c.ucd || "").startsWith("pos.eq.dec"));
    if (!ra || !dec) { axes(ctx, [0, 1], [0, 1], "no columns with pos.eq.ra / pos.eq.dec UCDs", ""); return; }
    x = column(ra.name); y = column(dec.name); xl = ra.name; yl = dec.name; flipX = true;
  }
  const { X, Y } = axes(ctx, extent(x), extent(y), xl, yl, { flipX });
  ctx.fillStyle = "rgba(43,95,217,0.6)";
  for (let i = 0; i < x.length; i++) if (Number.isFinite(x[i]) && Number.isFinite(y[i])) ctx.fillRect(X(x[i]) - 1.5, Y(y[i]) - 1.5, 3, 3);
}
for (const id of ["#plot-kind", "#plot-x", "#plot-y"]) $(id).addEventListener("change", drawPlot);

// A DiaObject's light curve from its DiaSources, by band, with error bars; or, folded on
// its Lomb-Scargle period, its forced photometry on the difference images.
async function lightCurve() {
  const id = $("#dia-id").value.trim();
  const ctx = $("#lightcurve").getContext("2d");
  $("#dia-period").textContent = "";
  if (!/^\d+$/.test(id)) { axes(ctx, [0, 1], [0, 1], "enter a diaObjectId (digits)", ""); return; }
  try {
    const p = await tapSync(`SELECT TOP 1 lombScarglePeriod, lombScarglePower, lombScargleFalseAlarmProb, lombScargleNdata FROM ap.DiaObject WHERE diaObjectId = ${id} ORDER BY validityStartMjdTai DESC`);
    const [period, power, fap, n] = p.data.length ? p.data[0] : [null];
    $("#dia-period").textContent = period
      ? `period ${period.toPrecision(6)} d: power ${power.toFixed(3)}, false-alarm probability ${fap.toExponential(1)}, ${n} forced fluxes`
      : "no period (too few forced fluxes over too short a time)";
    const fold = $("#dia-fold").checked && period;
    const r = fold
      ? await tapSync(`SELECT midpointMjdTai, psfFlux, psfFluxErr, band FROM ap.DiaForcedSource WHERE diaObjectId = ${id} ORDER BY midpointMjdTai`)
      : await tapSync(`SELECT midpointMjdTai, psfFlux, psfFluxErr, band FROM ap.DiaSource WHERE diaObjectId = ${id} ORDER BY midpointMjdTai`);
    if (!r.data.length) { axes(ctx, [0, 1], [0, 1], `no DiaSources of ${id}`, ""); return; }
    const t0 = r.data[0][0];
    const x = (t) => fold ? (((t - t0) / period) % 1 + 1) % 1 : t;
    const f = r.data.map((d) => d[1]), e = r.data.map((d) => d[2] || 0);
    const [flo, fhi] = extent(f.map((v, i) => v - e[i]).concat(f.map((v, i) => v + e[i])));
    const { X, Y } = fold
      ? axes(ctx, [0, 1], [flo, fhi], `phase (period ${period.toPrecision(6)} d)`, "forced psfFlux on the difference (nJy)")
      : axes(ctx, extent(r.data.map((d) => d[0])), [flo, fhi], "MJD (TAI)", "psfFlux (nJy)");
    const colours = { u: "#6a3d9a", g: "#1f78b4", r: "#33a02c", i: "#ff7f00", z: "#e31a1c", y: "#8c510a" };
    r.data.forEach(([tt, ff, ee, band]) => {
      ctx.strokeStyle = ctx.fillStyle = colours[band] || "#333";
      ctx.beginPath(); ctx.moveTo(X(x(tt)), Y(ff - (ee || 0))); ctx.lineTo(X(x(tt)), Y(ff + (ee || 0))); ctx.stroke();
      ctx.beginPath(); ctx.arc(X(x(tt)), Y(ff), 3, 0, 2 * Math.PI); ctx.fill();
    });
  } catch (err) { axes(ctx, [0, 1], [0, 1], err.message, ""); }
  await nearbyObjects(id);
}
$("#dia-go").addEventListener("click", lightCurve);
$("#dia-fold").addEventListener("change", lightCurve);

// Its nearby Objects of the data release (three stars, three galaxies within 60"), with the
// probability of being each.
async function nearbyObjects(id) {
  const table = $("#nearby");
  try {
    const r = await tapSync(
      "SELECT m.objectId, o.refExtendedness, m.dist, m.lnP, o.r_psfFlux FROM ap.DiaObject_To_Object_Match AS m " +
      `JOIN dp.Object AS o ON o.objectId = m.objectId WHERE m.diaObjectId = ${id} ORDER BY m.dist`);
    const head = el("tr", {}, ...["nearby objectId", "kind", "dist (arcsec)", "P (same)", "r psfFlux (nJy)"].map((h) => el("th", {}, h)));
    const rows = r.data.map(([oid, ext, dist, lnp, flux]) => el("tr", {},
      el("td", {}, String(oid)), el("td", {}, ext >= 0.5 ? "galaxy" : "star"),
      el("td", {}, Number(dist).toFixed(2)), el("td", {}, Math.exp(lnp).toPrecision(3)),
      el("td", {}, flux == null ? "" : Number(flux).toFixed(0))));
    table.replaceChildren(head, ...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "5" }, "no Object within 60 arcsec"))]));
  } catch (err) { table.replaceChildren(el("tr", {}, el("td", {}, err.message))); }
}

// ---------------------------------------------------------------- sky view
let A = null, aladin = null, footprints = null, objects = null;
function parseHipsList(text) {
  return text.split(/\n\s*\n/).map((block) => {
    const p = {};
    for (const line of block.split("\n")) {
      if (!line.trim() || line.startsWith("#")) continue;
      const i = line.indexOf("=");
      if (i > 0) p[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    return p;
  }).filter((p) => p.hips_service_url);
}
async function initSky() {
  if (aladin) return;
  const status = $("#sky-status");
  status.textContent = "loading…";
  try {
    const list = parseHipsList(await (await fetch(`${BASE}/hips/list`)).text());
    const images = list.filter((p) => p.dataproduct_type === "image");
    const select = $("#hips");
    select.replaceChildren(...images.map((p) => el("option", { value: p.hips_service_url }, p.obs_title || p.hips_service_url)));
    const start = images.find((p) => p.hips_service_url.endsWith("/deep-color")) || images[0];
    if (!start) { status.textContent = "no HiPS yet: run `aster hips build`"; return; }
    select.value = start.hips_service_url;
    A = (await import("./vendor/aladin-lite/aladin.js")).default;
    await A.init;
    aladin = A.aladin("#aladin", {
      survey: start.hips_service_url,
      target: `${start.hips_initial_ra} ${start.hips_initial_dec}`,
      fov: Number(start.hips_initial_fov) || 0.3,
      showReticle: false, showCooGrid: false, showShareControl: false, showSimbadPointerControl: false,
      showContextMenu: true, cooFrame: "ICRS", log: false, projection: "TAN",
    });
    window.aladin = aladin;
    select.addEventListener("change", () => aladin.setImageSurvey(select.value));
    footprints = A.graphicOverlay({ color: "#f5b700", lineWidth: 1.5, name: "Images (ObsCore)" });
    aladin.addOverlay(footprints);
    objects = A.catalog({ name: "dp.Object", sourceSize: 12, color: "#39c0ff", shape: "circle" });
    aladin.addCatalog(objects);
    aladin.on("objectClicked", (o) => { if (o && o.data) showRecord(o.data); });
    const catalogHips = list.find((p) => p.dataproduct_type === "catalog");
    if (catalogHips) {
      aladin.addCatalog(A.catalogHiPS(catalogHips.hips_service_url, { name: catalogHips.obs_title, color: "#ff6b6b", sourceSize: 8, onClick: "showTable" }));
    }
    await loadOverlays();
  } catch (e) {
    status.textContent = `sky view: ${e.message || e}`;
    status.className = "error";
  }
}
async function loadOverlays() {
  const status = $("#sky-status");
  const [ra, dec] = aladin.getRaDec();
  const radius = Math.min(2, Math.max(...aladin.getFov()) / 1.5);
  const circle = `CIRCLE('ICRS', ${ra.toFixed(6)}, ${dec.toFixed(6)}, ${radius.toFixed(4)})`;
  footprints.removeAll();
  objects.removeAll();
  let n = 0;
  if ($("#show-footprints").checked) {
    const fp = await tapSync(`SELECT obs_publisher_did, dataproduct_subtype, s_region FROM ivoa.ObsCore WHERE calib_level >= 2 AND CONTAINS(POINT('ICRS', s_ra, s_dec), ${circle}) = 1`, 2000);
    for (const [did, kind, region] of fp.data) {
      const v = region.split(/\s+/).slice(2).map(Number);
      const corners = [];
      for (let i = 0; i + 1 < v.length; i += 2) corners.push([v[i], v[i + 1]]);
      footprints.add(A.polygon(corners, { color: kind === "coadd" ? "#f5b700" : "#7ddc1f", name: did }));
    }
    n += fp.data.length;
  }
  let rows = 0;
  if ($("#show-objects").checked) {
    const obj = await tapSync(`SELECT TOP 3000 objectId, coord_ra, coord_dec, nJy_to_abmag(r_psfFlux) AS r_mag, refExtendedness FROM dp.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), ${circle}) = 1 ORDER BY r_psfFlux DESC`, 3000);
    const names = obj.metadata.map((c) => c.name);
    objects.addSources(obj.data.map((r) => A.source(r[1], r[2], Object.fromEntries(names.map((k, i) => [k, r[i]])))));
    rows = obj.data.length;
  }
  status.textContent = `${n} image footprints, ${rows} objects`;
  status.className = "";
}
async function showRecord(data) {
  const box = $("#record");
  const rows = Object.entries(data).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)));
  box.replaceChildren(el("h3", {}, "Source"), el("table", {}, ...rows));
  if (data.objectId !== undefined) {
    try {
      const r = await tapSync(`SELECT * FROM dp.Object WHERE objectId = ${Number(data.objectId)}`, 1);
      if (r.data.length) {
        box.replaceChildren(el("h3", {}, `Object ${data.objectId}`), el("table", {},
          ...r.metadata.map((c, i) => el("tr", {}, el("th", { title: c.description || "" }, c.name), el("td", {}, r.data[0][i] ?? "")))));
      }
    } catch (e) { box.append(el("p", { class: "error" }, e.message)); }
  }
}
$("#sky-refresh").addEventListener("click", () => aladin && loadOverlays());
// A captioned picture of the current view, drawn by the archive from the HiPS.
$("#sky-picture").addEventListener("click", (e) => {
  if (!aladin) { e.preventDefault(); return; }
  const [ra, dec] = aladin.getRaDec();
  const [fov] = aladin.getFov();
  const id = $("#hips").value.split("/").pop();
  e.currentTarget.href = `${BASE}/hips/${id}/render?${new URLSearchParams({ ra: ra.toFixed(6), dec: dec.toFixed(6), fov: Math.min(10, fov).toFixed(5), width: 1200, height: 900, format: "html" })}`;
});
for (const id of ["#show-footprints", "#show-objects"]) $(id).addEventListener("change", () => aladin && loadOverlays());

// ---------------------------------------------------------------- images (SIAv2, SODA)
function votableRows(text) {
  const doc = new DOMParser().parseFromString(text, "application/xml");
  const status = doc.querySelector('INFO[name="QUERY_STATUS"]');
  if (status && status.getAttribute("value") === "ERROR") throw new Error(status.textContent.trim());
  const fields = [...doc.querySelectorAll("TABLE > FIELD")].map((f) => f.getAttribute("name"));
  return [...doc.querySelectorAll("TABLEDATA > TR")].map((tr) =>
    Object.fromEntries([...tr.querySelectorAll("TD")].map((td, i) => [fields[i], td.textContent])));
}
let cutoutOf = null;
$("#sia-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const params = new URLSearchParams({ POS: `CIRCLE ${f.get("ra")} ${f.get("dec")} ${f.get("radius")}`, MAXREC: "200" });
  if (f.get("collection")) params.set("COLLECTION", f.get("collection"));
  if (f.get("band")) {
    const centre = { u: 367e-9, g: 482e-9, r: 622e-9, i: 754e-9, z: 869e-9, y: 971e-9 }[f.get("band")];
    params.set("BAND", `${centre} ${centre}`);
  }
  const status = $("#sia-status");
  status.textContent = "searching…";
  try {
    const r = await fetch(`${BASE}/sia/query?${params}`);
    const rows = votableRows(await r.text());
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    status.textContent = `${rows.length} images`;
    $("#sia-results").replaceChildren(...rows.map((row) => {
      const id = row.obs_publisher_did.split("?")[1];
      return el("div", { class: "card", "data-id": id },
        el("img", { src: `${BASE}/preview/${encodeURIComponent(id)}?size=256`, alt: id, loading: "lazy" }),
        el("div", {}, el("strong", {}, row.dataproduct_subtype), " ", row.obs_collection),
        el("div", {}, id),
        el("div", {}, `centre ${Number(row.s_ra).toFixed(4)} ${Number(row.s_dec).toFixed(4)}`),
        el("div", { class: "links" },
          el("a", { href: row.access_url }, "DataLink"),
          el("a", { href: `${BASE}/files/${encodeURIComponent(id)}` }, "FITS"),
          el("button", { type: "button", class: "cut", onclick: () => openCutout(row, id) }, "Cutout…")));
    }));
  } catch (err) { status.textContent = err.message; status.className = "error"; }
});
function openCutout(row, id) {
  cutoutOf = { row, id };
  $("#cutout").hidden = false;
  $("#cutout-of").textContent = id;
  $("#cutout").scrollIntoView({ behavior: "smooth" });
  makeCutout();
}
function makeCutout() {
  if (!cutoutOf) return;
  const { row } = cutoutOf;
  const f = new FormData($("#sia-form"));
  const r = Number($("#cutout-radius").value) / 3600;
  // The search position if it lies on the image, else the image's centre.
  const [ra, dec] = [Number(f.get("ra")), Number(f.get("dec"))];
  const near = Math.hypot((ra - row.s_ra) * Math.cos((dec * Math.PI) / 180), dec - row.s_dec) < Number(row.s_fov) / 2;
  const circle = near ? `${ra} ${dec} ${r}` : `${row.s_ra} ${row.s_dec} ${r}`;
  const q = (fmt) => `${BASE}/soda/sync?${new URLSearchParams({ ID: row.obs_publisher_did, CIRCLE: circle, ...(fmt ? { RESPONSEFORMAT: fmt } : {}) })}`;
  $("#cutout-img").src = q("image/png");
  $("#cutout-fits").href = q(null);
}
$("#cutout-go").addEventListener("click", makeCutout);

// ---------------------------------------------------------------- account
let me = null;
async function loadAccount() {
  const box = $("#account");
  try {
    const who = await (await fetch(`${BASE}/auth/whoami`)).json();
    me = who.user ? who : null;
  } catch { me = null; }
  const back = encodeURIComponent(location.pathname + location.hash);
  box.replaceChildren(me
    ? el("span", {}, el("span", { id: "account-name" }, me.user), " · ", el("a", { href: `${BASE}/auth/logout` }, "Sign out"))
    : el("a", { id: "sign-in", href: `${BASE}/auth/login?then=${back}` }, "Sign in"));
}

// ---------------------------------------------------------------- history
async function loadHistory() {
  const table = $("#history"), note = $("#history-note");
  const r = await fetch(`${BASE}/tap/history`);
  note.hidden = r.status !== 401;
  if (r.status === 401) { note.textContent = "Your query history is yours alone: sign in to see it."; table.replaceChildren(); return; }
  try {
    if (!r.ok) throw new Error(await errorText(r));
    const entries = await r.json();
    table.replaceChildren(el("tr", {}, el("th", {}, "when"), el("th", {}, "rows"), el("th", {}, "ms"), el("th", {}, "status"), el("th", {}, "query")),
      ...entries.map((h) => el("tr", {}, el("td", {}, h.started), el("td", {}, h.rows ?? ""), el("td", {}, h.duration_ms ?? ""),
        el("td", { class: h.status === "ok" ? "" : "error" }, h.error || h.status),
        el("td", { class: "q", onclick: () => { editor.value = h.query; refreshHighlight(); showTab("query"); } }, h.query))));
  } catch (e) { table.replaceChildren(el("tr", {}, el("td", { class: "error" }, e.message))); }
}

// ---------------------------------------------------------------- my space
let spacePath = null;
function prop(node, name) {
  for (const p of node.getElementsByTagNameNS("http://www.ivoa.net/xml/VOSpace/v2.0", "property"))
    if (p.parentNode.parentNode === node && p.getAttribute("uri").endsWith(`#${name}`)) return p.textContent;
  return "";
}
const encPath = (p) => p.split("/").map(encodeURIComponent).join("/");
async function loadSpace() {
  await loadAccount();
  $("#space-note").hidden = !!me;
  $("#space-body").hidden = !me;
  if (!me) return;
  spacePath = spacePath || me.user;
  $("#space-path").textContent = `/${spacePath}`;
  const r = await fetch(`${BASE}/vospace/nodes/${encPath(spacePath)}`);
  const list = $("#space-list");
  if (!r.ok) { list.replaceChildren(el("tr", {}, el("td", { class: "error" }, await r.text()))); return; }
  const doc = new DOMParser().parseFromString(await r.text(), "text/xml");
  const root = doc.documentElement;
  const quota = prop(root, "quota"), free = prop(root, "availableSpace");
  $("#space-quota").textContent = quota ? `${(free / 2 ** 30).toFixed(1)} of ${(quota / 2 ** 30).toFixed(1)} GiB free.` : "";
  const kids = [...root.getElementsByTagNameNS("http://www.ivoa.net/xml/VOSpace/v2.0", "node")];
  const rows = kids.map((n) => {
    const name = decodeURIComponent(n.getAttribute("uri").split("/").pop());
    const isDir = n.getAttributeNS("http://www.w3.org/2001/XMLSchema-instance", "type").endsWith("ContainerNode");
    const path = `${spacePath}/${name}`;
    const open = isDir
      ? el("a", { href: "#space", onclick: (e) => { e.preventDefault(); spacePath = path; loadSpace(); } }, `${name}/`)
      : el("a", { href: `${BASE}/vospace/data/${encPath(path)}`, download: name }, name);
    const del = el("button", { onclick: async () => {
      if (!confirm(`Delete ${path}?`)) return;
      const d = await fetch(`${BASE}/vospace/nodes/${encPath(path)}`, { method: "DELETE" });
      if (!d.ok) alert(await d.text());
      loadSpace();
    } }, "delete");
    return el("tr", {}, el("td", {}, open), el("td", {}, prop(n, "length")), el("td", {}, prop(n, "date")),
      el("td", {}, prop(n, "publicread") === "true" ? "public" : (prop(n, "groupread") || "private").replace(/ivo:\/\/cadc.nrc.ca\/gms\?/g, "")), el("td", {}, del));
  });
  const up = spacePath.includes("/")
    ? [el("tr", {}, el("td", {}, el("a", { href: "#space", onclick: (e) => { e.preventDefault(); spacePath = spacePath.replace(/\/[^/]*$/, ""); loadSpace(); } }, "..")))]
    : [];
  list.replaceChildren(el("tr", {}, el("th", {}, "name"), el("th", {}, "bytes"), el("th", {}, "changed"), el("th", {}, "readable by"), el("th", {})), ...up, ...rows);
  loadTokens();
}
$("#space-upload").addEventListener("click", async () => {
  const f = $("#space-file").files[0];
  if (!f) return;
  const r = await fetch(`${BASE}/vospace/data/${encPath(`${spacePath}/${f.name}`)}`, { method: "PUT", body: f });
  if (!r.ok) alert(await r.text());
  loadSpace();
});
$("#space-mkdir").addEventListener("click", async () => {
  const name = $("#space-dir").value.trim();
  if (!name) return;
  const body = `<vos:node xmlns:vos="http://www.ivoa.net/xml/VOSpace/v2.0" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="vos:ContainerNode"/>`;
  const r = await fetch(`${BASE}/vospace/nodes/${encPath(`${spacePath}/${name}`)}`, { method: "PUT", body, headers: { "Content-Type": "text/xml" } });
  if (!r.ok) alert(await r.text());
  loadSpace();
});
async function loadTokens() {
  const r = await fetch(`${BASE}/auth/tokens`);
  if (!r.ok) return;
  const tokens = await r.json();
  $("#token-list").replaceChildren(el("tr", {}, el("th", {}, "label"), el("th", {}, "scopes"), el("th", {}, "expires"), el("th", {}, "last used"), el("th", {})),
    ...tokens.map((t) => el("tr", {}, el("td", {}, t.label), el("td", {}, t.scopes.write ? "read write" : "read"), el("td", {}, t.expires),
      el("td", {}, t.last_used || ""), el("td", {}, t.revoked ? "revoked" : el("button", { onclick: async () => {
        await fetch(`${BASE}/auth/tokens/${t.id}`, { method: "DELETE" }); loadTokens();
      } }, "revoke")))));
}
$("#token-make").addEventListener("click", async () => {
  const r = await fetch(`${BASE}/auth/tokens`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ label: $("#token-label").value || "portal", scopes: $("#token-scopes").value, lifetime_days: Number($("#token-days").value) }) });
  const out = $("#token-new");
  out.hidden = false;
  out.textContent = r.ok ? (await r.json()).token : await r.text();
  loadTokens();
});

loadAccount();
loadExamples();
loadSchema();
showTab((location.hash || "#query").slice(1).replace(/[^a-z]/g, "") || "query");
