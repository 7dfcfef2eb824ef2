// The upload page: plain JS against the AIMQ API of this server (no framework, no CDN).
"use strict";

const POLL_MS = 1000;
const POLL_MAX_MS = 5000; // back-off ceiling while the API or its status store does not answer
const REJECTED_SHOWN = 200;
const $ = (id) => document.getElementById(id);
const fmtInt = (n) => Number(n).toLocaleString("en-US");
const fmtPrice = (n) => Number(n).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

let config = { fields: [], example: {}, max_upload_bytes: Infinity, dagster_ui_url: null };
let pollTimer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

// -- errors: the API answers {"detail", "errors": [{field, row, message, allowed}]} -------------
async function readBody(response) {
  const text = await response.text();
  try { return JSON.parse(text); } catch { return { detail: text.trim() || `HTTP ${response.status}` }; }
}

function describe(err) {
  let where = err.field || "request";
  if (err.row !== undefined && err.row !== null) where = `row ${err.row}: ${where}`;
  let text = `${where}: ${err.message}`;
  if (Array.isArray(err.allowed) && err.allowed.length) text += ` (allowed: ${err.allowed.join(", ")})`;
  return text;
}

function showError(box, status, body) {
  box.replaceChildren();
  const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  box.append(el("p", { text: status ? `${detail} (HTTP ${status})` : detail }));
  if (Array.isArray(body.errors) && body.errors.length) {
    box.append(el("ul", {}, ...body.errors.map((e) => el("li", { text: describe(e) }))));
  }
  box.hidden = false;
}

function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}

// -- API key: only when the server requires one (a 401); kept for this tab in sessionStorage ------
const KEY_STORAGE = "aimq.apiKey";
const apiKey = () => sessionStorage.getItem(KEY_STORAGE);
const withKey = (headers = {}) => (apiKey() ? { ...headers, Authorization: `Bearer ${apiKey()}` } : headers);

function askForKey(detail) {
  const form = $("key-form");
  if (apiKey()) sessionStorage.removeItem(KEY_STORAGE); // the stored key was refused
  $("key-message").textContent = `${detail}. The key is kept in this tab only.`;
  form.hidden = false;
  $("api-key").focus();
}

// fetch with the key; a 401 asks for one (the caller still shows the error of its own call).
async function apiFetch(url, options = {}) {
  const response = await fetch(url, { ...options, headers: withKey(options.headers) });
  if (response.status === 401) askForKey((await readBody(response.clone())).detail || "an API key is required");
  return response;
}

function wireKeyForm() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("api-key").value = "";
    $("key-form").hidden = true;
    for (const id of ["upload-error", "predict-error"]) hideError($(id));
    loadRecent();
  });
}

// A download link: a plain link while no key is needed; with a key, fetched with it and saved.
function downloadLink(href, text, attrs = {}) {
  const link = el("a", { ...attrs, href, download: true, text });
  link.addEventListener("click", async (event) => {
    if (!apiKey()) return;
    event.preventDefault();
    const response = await apiFetch(href, { cache: "no-store" });
    if (!response.ok) { showError($("upload-error"), response.status, await readBody(response)); return; }
    const disposition = response.headers.get("Content-Disposition") || "";
    const encoded = /filename\*=utf-8''([^;]+)/i.exec(disposition), plain = /filename="([^"]+)"/.exec(disposition);
    const name = encoded ? decodeURIComponent(encoded[1]) : plain ? plain[1] : "";
    const url = URL.createObjectURL(await response.blob());
    const save = el("a", { href: url, download: name });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  });
  return link;
}

// -- upload and follow -----------------------------------------------------------------------
// An upload opened by its link (#upload=<id>, from the recent uploads): its status, drift and result.
function showLinkedUpload() {
  const match = /^#upload=(.+)$/.exec(window.location.hash);
  if (!match) return;
  const id = decodeURIComponent(match[1]);
  hideError($("upload-error"));
  clearTimeout(pollTimer);
  resetJob(id);
  setState("queued", "Loading");
  pollStatus(`/uploads/${encodeURIComponent(id)}`, POLL_MS);
}

function startUpload(file) {
  const errorBox = $("upload-error");
  hideError(errorBox);
  clearTimeout(pollTimer);
  if (file.size > config.max_upload_bytes) {
    showError(errorBox, 0, { detail: `${file.name} is ${fmtInt(file.size)} bytes; the limit is ${fmtInt(config.max_upload_bytes)} bytes` });
    return;
  }
  resetJob(file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/upload");
  if (apiKey()) xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
  xhr.responseType = "text";
  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    setProgress(event.loaded / event.total, `${(event.loaded / 1e6).toFixed(1)} / ${(event.total / 1e6).toFixed(1)} MB`);
  });
  xhr.addEventListener("load", () => {
    let body;
    try { body = JSON.parse(xhr.responseText); } catch { body = { detail: xhr.responseText || `HTTP ${xhr.status}` }; }
    if (xhr.status === 202) {
      setState("queued", "Queued");
      pollStatus(body.status_url, POLL_MS);
    } else {
      setState("refused", "Not accepted");
      setProgress(0, "");
      showError(errorBox, xhr.status, body);
      if (xhr.status === 401) askForKey(body.detail);
    }
  });
  xhr.addEventListener("error", () => {
    setState("refused", "Not sent");
    showError(errorBox, 0, { detail: "the upload did not reach the server (network error or server down)" });
  });
  const form = new FormData();
  form.append("file", file, file.name);
  xhr.send(form);
}

function resetJob(name) {
  $("job").hidden = false;
  $("job-name").textContent = name;
  $("job-details").replaceChildren();
  $("job-links").replaceChildren();
  $("rejected").hidden = true;
  $("rejected-rows").replaceChildren();
  $("drift").hidden = true;
  $("drift-charts").replaceChildren();
  setState("uploading", "Uploading");
  setProgress(0, "");
}

function setState(state, phase) {
  const badge = $("job-state");
  badge.textContent = state;
  badge.dataset.state = state;
  $("job-phase").textContent = phase;
}

function setProgress(fraction, text) {
  const bar = $("job-progress");
  if (fraction === null) bar.removeAttribute("value"); // indeterminate
  else bar.value = Math.min(Math.max(fraction, 0), 1);
  $("job-count").textContent = text;
}

async function pollStatus(url, delay) {
  let next = POLL_MS;
  try {
    const response = await apiFetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await readBody(response);
    if (response.ok) {
      hideError($("upload-error"));
      renderRecord(body);
      if (body.state === "succeeded" || body.state === "failed") {
        loadRecent();
        return;
      }
    } else if (response.status === 503 || response.status === 429) {
      showError($("upload-error"), response.status, { detail: `${body.detail}; retrying` });
      next = Math.min(delay * 2, POLL_MAX_MS);
    } else {
      showError($("upload-error"), response.status, body);
      return;
    }
  } catch (exc) {
    showError($("upload-error"), 0, { detail: "the server does not answer; retrying" });
    next = Math.min(delay * 2, POLL_MAX_MS);
  }
  pollTimer = setTimeout(() => pollStatus(url, next), next);
}

// The row count a run's progress is measured against: the final count once finished, else the
// file's own estimate, which is dropped once the rows done pass it (never more than 100 %).
function rowsOf(record) {
  const total = record.rows_total || record.rows_expected;
  return total && record.rows_done <= total ? total : null;
}

function rowsText(record) {
  const total = rowsOf(record);
  if (total) return `${fmtInt(record.rows_done)} / ${fmtInt(total)} rows`;
  return `${fmtInt(record.rows_done)} rows`;
}

function renderRecord(record) {
  if (record.original_name) $("job-name").textContent = record.original_name;
  const phases = { queued: "Queued: waiting for its scoring run", running: "Scoring", succeeded: "Done", failed: "Failed" };
  setState(record.state, phases[record.state] || record.state);
  if (record.state === "queued") setProgress(null, "");
  else if (record.state === "running") setProgress(rowsOf(record) ? record.rows_done / rowsOf(record) : null, rowsText(record));
  else if (record.state === "succeeded") setProgress(1, rowsText(record));
  else setProgress(0, rowsText(record));

  const details = $("job-details");
  details.replaceChildren();
  const add = (term, value) => details.append(el("dt", { text: term }), el("dd", {}, value));
  if (record.state === "succeeded") {
    add("Rows scored", fmtInt(record.rows_total - record.rows_rejected));
    add("Rows rejected", fmtInt(record.rows_rejected));
  } else if (record.rows_done) {
    add("Rows done", fmtInt(record.rows_done));
  }
  const versions = Object.entries(record.model_versions || {});
  if (versions.length) add("Model versions", versions.map(([g, v]) => `${g} v${v}`).join(", "));
  add("Upload id", el("code", { text: record.upload_id }));
  if (record.run_url) add("Dagster run", el("a", { href: record.run_url, text: record.run_id ? record.run_id.slice(0, 8) : "run" }));

  const links = $("job-links");
  links.replaceChildren();
  if (record.state === "failed") {
    showError($("upload-error"), 0, { detail: `Scoring failed: ${record.error || "no reason recorded"}` });
  }
  if (record.state === "succeeded") renderDrift(record.drift);
  if (record.state === "succeeded") {
    links.append(downloadLink(record.result_url, "Download result", { class: "button" }));
    if (record.rows_rejected) {
      links.append(" ", downloadLink(record.rejected_url, "Download rejected rows (CSV)"));
      loadRejected(record);
    }
  }
}

// -- drift: the verdict, and per drifted feature its cells, upload against training data ------------
const VERDICTS = { drift: "Drift", no_drift: "No drift", not_judged: "Not judged" };
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

function driftText(drift) {
  if (drift.verdict === "not_judged") return `Not judged: ${drift.reason}`;
  if (drift.verdict === "no_drift") return `No drift: ${fmtInt(drift.rows_judged)} rows judged look like the training data.`;
  const parts = Object.entries(drift.groups)
    .filter(([, g]) => g.verdict === "drift")
    .map(([name, g]) => `group ${name} (v${g.model_version}): ${g.features.filter((f) => f.drifted).map((f) => f.name).join(", ")}`);
  return `Drift in ${parts.join("; ")} (${fmtInt(drift.rows_judged)} rows judged).`;
}

function renderDrift(drift) {
  const box = $("drift");
  const charts = $("drift-charts");
  charts.replaceChildren();
  if (!drift) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const verdict = $("drift-verdict");
  verdict.dataset.verdict = drift.verdict;
  verdict.textContent = driftText(drift);
  for (const [group, judged] of Object.entries(drift.groups || {})) {
    if (judged.verdict === "not_judged" && drift.verdict !== "not_judged") {
      charts.append(el("p", { class: "hint", text: `Group ${group} not judged: ${judged.reason}` }));
    }
    for (const feature of judged.features || []) {
      if (feature.drifted) charts.append(driftChart(group, feature));
    }
  }
}

// A bar pair per cell (a bin, a category, unseen, missing) with any share: training data, upload.
function driftChart(group, feature) {
  const chart = feature.chart || { cells: [], reference: [], upload: [] };
  const cells = chart.cells.map((name, i) => ({ name, ref: chart.reference[i], up: chart.upload[i] }))
    .filter((c) => c.ref > 0 || c.up > 0);
  const width = 520, rowH = 22, left = 170, top = 24;
  const height = top + rowH * cells.length + 8;
  const top_share = Math.max(...cells.map((c) => Math.max(c.ref, c.up)), 0.01);
  const scale = (share) => (share / top_share) * (width - left - 60);
  const pct = (share) => `${(share * 100).toFixed(1)} %`;
  const label = `group ${group}, ${feature.name}: share of rows per ${feature.kind === "numeric" ? "range" : "value"}, upload against training data`;
  const image = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "drift-chart" });
  image.append(svg("rect", { x: left, y: 6, width: 12, height: 10, class: "bar-reference" }));
  image.append(svg("text", { x: left + 16, y: 15 }, "training data"));
  image.append(svg("rect", { x: left + 120, y: 6, width: 12, height: 10, class: "bar-upload" }));
  image.append(svg("text", { x: left + 136, y: 15 }, "this upload"));
  cells.forEach((c, i) => {
    const y = top + i * rowH;
    image.append(svg("text", { x: left - 6, y: y + 14, "text-anchor": "end" }, c.name));
    const ref = svg("rect", { x: left, y: y + 2, width: scale(c.ref), height: 8, class: "bar-reference" });
    ref.append(svg("title", {}, `training data: ${pct(c.ref)}`));
    const up = svg("rect", { x: left, y: y + 10, width: scale(c.up), height: 8, class: "bar-upload" });
    up.append(svg("title", {}, `this upload: ${pct(c.up)}`));
    image.append(ref, up, svg("text", { x: left + Math.max(scale(c.ref), scale(c.up)) + 4, y: y + 16, class: "bar-value" }, pct(c.up)));
  });
  const caption = el("figcaption", {
    text: `Group ${group} · ${feature.name} (importance ${(feature.importance * 100).toFixed(0)} %): p = ${feature.value.toPrecision(2)}, drift at p ≤ ${feature.threshold.toPrecision(2)}`
      + (feature.unseen_share ? ` · unseen ${pct(feature.unseen_share)}` : "")
      + (feature.out_of_range_share ? ` · outside training range ${pct(feature.out_of_range_share)}` : "")
      + (feature.missing_rate ? ` · missing ${pct(feature.missing_rate)}` : ""),
  });
  return el("figure", { class: "drift-figure", "data-feature": feature.name, "data-group": group }, caption, image);
}

// -- rejected rows -----------------------------------------------------------------------------
function parseCsv(text) {
  // RFC 4180: quoted fields may hold commas, quotes ("") and line breaks.
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  return rows;
}

async function loadRejected(record) {
  const section = $("rejected");
  try {
    const response = await apiFetch(record.rejected_url, { cache: "no-store" });
    if (!response.ok) {
      showError($("upload-error"), response.status, await readBody(response));
      return;
    }
    const [header, ...rows] = parseCsv(await response.text());
    const rowAt = header.indexOf("row"), whyAt = header.indexOf("errors");
    const body = $("rejected-rows");
    body.replaceChildren(...rows.slice(0, REJECTED_SHOWN).map((r) =>
      el("tr", {}, el("td", { text: r[rowAt] }), el("td", {}, el("ul", {}, ...r[whyAt].split("; ").map((why) => el("li", { text: why })))))));
    const more = rows.length > REJECTED_SHOWN ? ` The first ${REJECTED_SHOWN} are shown; download the CSV for all of them.` : "";
    const where = record.format === "xlsx" ? " The result's 'rejected' sheet lists them too." : "";
    $("rejected-note").textContent =
      `${fmtInt(rows.length)} row(s) could not be priced and have an empty prediction. Rows are numbered as in the spreadsheet (header = row 1).${where}${more}`;
    section.hidden = false;
  } catch (exc) {
    showError($("upload-error"), 0, { detail: `could not load the rejected rows: ${exc}` });
  }
}

// -- recent uploads ----------------------------------------------------------------------------
async function loadRecent() {
  const errorBox = $("recent-error");
  try {
    const response = await apiFetch("/uploads?limit=10", { cache: "no-store" });
    const body = await readBody(response);
    if (!response.ok) { showError(errorBox, response.status, body); return; }
    hideError(errorBox);
    const rows = body.uploads.map((u) => {
      const downloads = el("td");
      if (u.result_url) downloads.append(downloadLink(u.result_url, "result"));
      if (u.result_url && u.rows_rejected) downloads.append(" ", downloadLink(u.rejected_url, "rejected"));
      if (u.run_url) downloads.append(" ", el("a", { href: u.run_url, text: "run" }));
      return el("tr", {},
        el("td", {}, el("a", { href: `#upload=${encodeURIComponent(u.upload_id)}`, text: u.original_name })),
        el("td", {}, el("span", { class: "state", "data-state": u.state, text: u.state })),
        el("td", { class: "num", text: u.rows_total !== null && u.rows_total !== undefined ? fmtInt(u.rows_total) : fmtInt(u.rows_done) }),
        el("td", { class: "num", text: fmtInt(u.rows_rejected) }),
        el("td", { text: new Date(u.created_at * 1000).toLocaleString() }),
        downloads);
    });
    $("recent-rows").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 6, text: "No uploads yet." }))]));
  } catch (exc) {
    showError(errorBox, 0, { detail: "could not load the recent uploads: the server does not answer" });
  }
}

// -- single prediction -------------------------------------------------------------------------
function buildForm() {
  const container = $("predict-fields");
  container.replaceChildren();
  for (const field of config.fields) {
    const id = `f-${field.name}`;
    let input;
    if (field.kind === "choice") {
      input = el("select", { id, name: field.name });
      field.values.forEach((value, index) => {
        const option = el("option", { value: String(index), text: String(value) });
        if (value === config.example[field.name]) option.selected = true;
        input.append(option);
      });
    } else {
      input = el("input", { id, name: field.name, type: "number", step: 1, min: field.minimum, max: field.maximum,
        inputmode: "numeric", value: config.example[field.name] });
    }
    input.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    container.append(el("div", { class: "field" },
      el("label", { for: id, text: field.name }),
      input,
      el("small", { id: `${id}-hint`, class: "hint", text: field.kind === "integer"
        ? `${field.description} (${fmtInt(field.minimum)} to ${fmtInt(field.maximum)})` : field.description }),
      el("small", { id: `${id}-error`, class: "field-error" })));
  }
}

function formRecord() {
  const record = {};
  for (const field of config.fields) {
    const input = $(`f-${field.name}`);
    if (field.kind === "choice") record[field.name] = field.values[Number(input.value)];
    else if (input.value.trim() !== "") {
      // Sent as typed when it is not a whole number, so the API says what is wrong with it.
      record[field.name] = /^-?\d+$/.test(input.value.trim()) ? Number(input.value) : input.value;
    }
  }
  return record;
}

function clearFieldErrors() {
  for (const field of config.fields) {
    $(`f-${field.name}`).removeAttribute("aria-invalid");
    $(`f-${field.name}-error`).textContent = "";
  }
}

async function predict(event) {
  event.preventDefault();
  const errorBox = $("predict-error"), result = $("predict-result");
  hideError(errorBox);
  clearFieldErrors();
  result.textContent = "";
  const engine = $("engine").value;
  try {
    const response = await apiFetch(`/predict/${engine}`, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(formRecord()),
    });
    const body = await readBody(response);
    if (!response.ok) {
      showError(errorBox, response.status, body);
      for (const err of body.errors || []) {
        const input = err.field && $(`f-${err.field}`);
        if (!input) continue;
        input.setAttribute("aria-invalid", "true");
        $(`f-${err.field}-error`).textContent = describe({ ...err, field: null, row: null }).replace(/^request: /, "");
      }
      return;
    }
    const parts = [
      "Predicted price: ", el("strong", { id: "predicted-price", text: fmtPrice(body.predicted_price) }),
      ` (group ${body.model_group}, model version ${body.model_version}, ${engine})`,
    ];
    if (body.price_low !== null && body.price_high !== null) {
      parts.push(el("div", {
        id: "predicted-range",
        text: `${Math.round(body.coverage * 100)}% range: ${fmtPrice(body.price_low)} – ${fmtPrice(body.price_high)}`,
      }));
    } else if (body.range_note) {
      parts.push(el("div", { id: "predicted-range", text: `No range: ${body.range_note}` }));
    }
    if (body.out_of_range && body.out_of_range.length) {
      parts.push(el("div", {
        id: "predicted-out-of-range", class: "warning",
        text: `Outside the range of the data the model was trained on: ${body.out_of_range.join(", ")}. The price is a guess there.`,
      }));
    }
    result.replaceChildren(...parts);
  } catch (exc) {
    showError(errorBox, 0, { detail: "the server does not answer" });
  }
}

// -- start ---------------------------------------------------------------------------------------
function wireDrop() {
  const drop = $("drop"), input = $("file-input");
  input.addEventListener("change", () => {
    if (input.files.length) startUpload(input.files[0]);
    input.value = ""; // choosing the same file again uploads it again
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer.files;
    if (files.length !== 1) {
      showError($("upload-error"), 0, { detail: "drop exactly one file" });
      return;
    }
    startUpload(files[0]);
  });
}

async function start() {
  wireDrop();
  wireKeyForm();
  $("predict-form").addEventListener("submit", predict);
  try {
    const response = await fetch("/ui/config", { cache: "no-store" });
    config = await response.json();
    buildForm();
    if (config.dagster_ui_url) {
      const link = $("dagster-link");
      link.href = config.dagster_ui_url;
      link.hidden = false;
    }
  } catch (exc) {
    showError($("predict-error"), 0, { detail: "could not load the form: the server does not answer" });
  }
  loadRecent();
  window.addEventListener("hashchange", showLinkedUpload);
  showLinkedUpload();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
