// The demo page: a live RethinkDB table, a push form, a changes-per-second chart, the demo hook's
// change counters and the raw event log, all over one Changeflow connection.
import { Changeflow } from "/static/changeflow_channels/changeflow.js";

const STATS_STREAM = "changeflow_demo.stats";
const STREAM_NAME = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const LOG_LIMIT = 200;
const CHART_SECONDS = 60;
const SNAPSHOT_WAIT = 5000; // ms after "subscribed" before saying the server sent no snapshot
const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d"];

const $ = (id) => document.getElementById(id);
const flow = new Changeflow("/ws/changeflow/");
window.changeflowDemo = { flow }; // handy in the console and for tests

// -- one table, mirrored ----------------------------------------------------------------------

/**
 * The documents of one table, kept up to date: the subscription asks for a snapshot, which the
 * server sends before exactly the changes after it. After a reconnect the client resumes where it
 * was (the server replays the changes missed); when it cannot, the server sends `resync` and a
 * fresh snapshot, which replaces the rows.
 */
class TableMirror {
  constructor(stream, { onReset = () => {}, onChange = () => {}, onStatus = () => {} } = {}) {
    Object.assign(this, { stream, onReset, onChange, onStatus });
    this.primaryKey = "id";
    this.rows = new Map(); // JSON of the primary key -> document, in arrival order
    this.truncated = false;
    this.hasSnapshot = false;
    this.onStatus({ kind: "loading" });
    this.unsubscribe = flow.subscribe(stream, (change) => this.onChange(this.apply(change), change), {
      snapshot: true,
      onSnapshot: (frame) => this.reset(frame),
      onResync: (frame) => this.onStatus({ kind: "resync", reason: frame.reason }),
    });
    this.watchSubscription();
  }

  /** A refused subscription is shown; so is a server that sends no snapshot (an older one). */
  async watchSubscription() {
    try {
      await flow.subscribed(this.stream);
    } catch (error) {
      if (!this.stopped) this.onStatus({ kind: "error", text: `subscription refused: ${error.code}: ${error.message}` });
      return;
    }
    await sleep(SNAPSHOT_WAIT);
    if (!this.stopped && !this.hasSnapshot) this.onStatus({ kind: "no-snapshot" });
  }

  /** A snapshot frame: its documents replace the rows. */
  reset(frame) {
    this.hasSnapshot = true;
    const documents = frame.documents.filter((doc) => doc && typeof doc === "object");
    this.primaryKey = inferPrimaryKey(documents);
    this.truncated = Boolean(frame.truncated);
    this.rows = new Map(documents.map((doc) => [this.keyOf(doc), doc]));
    this.onReset();
    this.onStatus({ kind: "snapshot", followed: frame.epoch != null, mirror: this });
  }

  keyOf(doc) {
    return JSON.stringify(doc?.[this.primaryKey] ?? null);
  }

  /** Apply one change frame; returns {key, doc, type} (doc null: the row is gone), {reset} or null. */
  apply(change) {
    const doc = change.type === "remove" ? change.old_val : change.new_val;
    if (!doc || typeof doc !== "object") return null; // e.g. "state" changes
    let reset = false;
    if (!(this.primaryKey in doc)) {
      // Every document holds its primary key: the guess (made on an empty table?) was wrong.
      const guess = inferPrimaryKey([...this.rows.values(), doc]);
      if (guess !== this.primaryKey && guess in doc) {
        this.primaryKey = guess;
        this.rows = new Map([...this.rows.values()].map((row) => [this.keyOf(row), row]));
        reset = true;
      }
    }
    const key = this.keyOf(doc);
    if (change.type === "remove") this.rows.delete(key);
    else this.rows.set(key, doc);
    return { key, doc: change.type === "remove" ? null : doc, type: change.type, reset };
  }

  stop() {
    this.stopped = true;
    this.unsubscribe();
  }
}

/**
 * The primary key of a table, from its documents (a snapshot frame does not name it): "id", the
 * default, unless some document lacks "id"; then a field every document has, with distinct scalar
 * values, preferring names that end in "id" or "key".
 */
function inferPrimaryKey(documents) {
  if (documents.every((doc) => "id" in doc)) return "id";
  const candidates = Object.keys(documents[0]).filter((name) => {
    const values = documents.map((doc) => doc[name]);
    const scalar = values.every((v) => ["string", "number"].includes(typeof v));
    return scalar && new Set(values).size === values.length;
  });
  return candidates.find((name) => /(^|_)(id|key)$/i.test(name)) ?? candidates[0] ?? "id";
}

// -- the document table -------------------------------------------------------------------------

let mirror = null;
// Whether the status line is showWatching's (kept up to date by each change), not a
// resync or an error (which stay until the next snapshot).
let statusShowsCount = false;
let columns = [];
const rowElements = new Map(); // key -> <tr>

function watch(stream) {
  if (!STREAM_NAME.test(stream)) return setStatus(`not a stream name: "${stream}" (db.table)`, true);
  mirror?.stop();
  $("push-stream").textContent = stream;
  rowElements.clear();
  mirror = new TableMirror(stream, {
    onReset: renderTable,
    onChange: (result) => {
      updateRow(result);
      // The count moves with every change (and a table not followed at the snapshot is now).
      if (statusShowsCount) showWatching(mirror, false);
    },
    onStatus: (status) => showMirrorStatus(stream, status),
  });
  renderTable();
}

/** The status line of the watched table. */
function showMirrorStatus(stream, status) {
  switch (status.kind) {
    case "loading":
      return setStatus(`loading ${stream}…`);
    case "snapshot":
      return showWatching(status.mirror, !status.followed && status.mirror.rows.size === 0);
    case "resync":
      // The changes of a gap were lost; a fresh snapshot follows (the subscription asks for one).
      return setStatus(`${stream}: resync (${status.reason}), a fresh snapshot follows…`);
    case "no-snapshot":
      return setStatus(`watching ${stream}: live (the server sent no snapshot: changes only)`);
    case "error":
      return setStatus(status.text, true);
  }
}

const NOT_YET = "no such table yet";

/** "watching db.t: 3 documents, live"; `missing`: the snapshot was of a table not followed (yet). */
function showWatching(mirror, missing) {
  const count = mirror.rows.size;
  const documents = `${count} document${count === 1 ? "" : "s"}${mirror.truncated ? " (truncated)" : ""}`;
  const note = missing ? ` (${NOT_YET}: it appears with its first document)` : "";
  setStatus(`watching ${mirror.stream}: ${documents}, live${note}`);
  statusShowsCount = true;
}

function setStatus(text, isError = false) {
  statusShowsCount = false;
  $("watch-status").textContent = text;
  $("watch-status").classList.toggle("error", isError);
}

function columnsOf(docs, primaryKey) {
  const keys = new Set([primaryKey]);
  for (const doc of docs) for (const key of Object.keys(doc)) keys.add(key);
  return [...keys];
}

function renderTable() {
  const docs = [...mirror.rows.values()];
  columns = columnsOf(docs, mirror.primaryKey);
  const head = $("documents").tHead.rows[0];
  head.replaceChildren(...columns.map((name) => Object.assign(document.createElement("th"), { textContent: name })));
  rowElements.clear();
  const rows = [...mirror.rows].map(([key, doc]) => buildRow(key, doc));
  $("documents").tBodies[0].replaceChildren(...rows);
  $("truncated").hidden = !mirror.truncated;
  updateCount();
}

function buildRow(key, doc) {
  const tr = document.createElement("tr");
  tr.dataset.key = key;
  fillRow(tr, doc);
  rowElements.set(key, tr);
  return tr;
}

function fillRow(tr, doc) {
  tr.replaceChildren(
    ...columns.map((name) => {
      const td = document.createElement("td");
      const value = doc[name];
      const text = value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value);
      td.textContent = text.length > 120 ? `${text.slice(0, 119)}…` : text;
      if (text.length > 120) td.title = text;
      return td;
    }),
  );
}

function updateRow(result) {
  if (!result) return;
  const { key, doc, type } = result;
  if (result.reset) {
    renderTable(); // the primary key changed: every row has a new key
    flash(rowElements.get(key), type);
    return;
  }
  let tr = rowElements.get(key);
  if (doc === null) {
    tr?.remove();
    rowElements.delete(key);
    // The columns are those of the documents shown: a removal may take one away.
    if (columnsOf(mirror.rows.values(), mirror.primaryKey).length !== columns.length) renderTable();
  } else if (Object.keys(doc).some((name) => !columns.includes(name))) {
    renderTable(); // a new column: simplest to redraw everything
    flash(rowElements.get(key), type);
  } else {
    if (tr) fillRow(tr, doc);
    else $("documents").tBodies[0].append((tr = buildRow(key, doc)));
    flash(tr, type);
  }
  updateCount();
}

function flash(tr, type) {
  if (!tr) return;
  const name = type === "change" ? "flash-change" : "flash-add";
  tr.classList.remove("flash-change", "flash-add");
  void tr.offsetWidth; // restart the animation when the same row changes again
  tr.classList.add(name);
}

function updateCount() {
  $("doc-count").textContent = String(mirror.rows.size);
}

// -- the demo hook's counters (changeflow_demo.stats) ------------------------------------------

const stats = new TableMirror(STATS_STREAM, {
  onReset: renderStats,
  onChange: renderStats,
  onStatus: (status) => {
    if (status.kind === "error") $("stats-empty").textContent = status.text;
  },
});

function renderStats() {
  const docs = [...stats.rows.values()].sort((a, b) => String(a.id).localeCompare(String(b.id)));
  $("stats").replaceChildren(
    ...docs.map((doc) => {
      const li = document.createElement("li");
      li.dataset.stream = String(doc.id);
      li.textContent = `${doc.id}: ${doc.changes}`;
      return li;
    }),
  );
  $("stats-empty").hidden = docs.length > 0;
}

// -- changes per second ------------------------------------------------------------------------

const rates = new Map(); // stream -> Map(second -> number of changes)
const colors = new Map(); // stream -> color, stable while the page lives

function countChange(stream) {
  const second = Math.floor(Date.now() / 1000);
  if (!rates.has(stream)) rates.set(stream, new Map());
  if (!colors.has(stream)) colors.set(stream, PALETTE[colors.size % PALETTE.length]);
  const perSecond = rates.get(stream);
  perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
}

function drawChart() {
  const canvas = $("rate-chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  // The last CHART_SECONDS complete seconds: the current one is still counting.
  const last = Math.floor(Date.now() / 1000) - 1;
  const first = last - CHART_SECONDS + 1;
  const series = [];
  for (const [stream, perSecond] of rates) {
    for (const second of perSecond.keys()) if (second < first) perSecond.delete(second);
    if (!perSecond.size) rates.delete(stream);
    else series.push([stream, Array.from({ length: CHART_SECONDS }, (_, i) => perSecond.get(first + i) ?? 0)]);
  }
  const peak = Math.max(1, ...series.flatMap(([, values]) => values));
  const top = niceCeiling(peak);
  const box = { left: 34, right: width - 8, top: 8, bottom: height - 18 };
  const x = (i) => box.left + ((box.right - box.left) * i) / (CHART_SECONDS - 1);
  const y = (v) => box.bottom - ((box.bottom - box.top) * v) / top;

  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of [0, top / 2, top]) {
    ctx.beginPath();
    ctx.moveTo(box.left, y(v));
    ctx.lineTo(box.right, y(v));
    ctx.stroke();
    ctx.fillText(String(Math.round(v * 10) / 10), box.left - 4, y(v));
  }
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(`-${CHART_SECONDS} s`, box.left, box.bottom + 4);
  ctx.textAlign = "right";
  ctx.fillText("now", box.right, box.bottom + 4);

  if (!series.length) {
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("no changes in the last minute", (box.left + box.right) / 2, (box.top + box.bottom) / 2);
    return;
  }
  ctx.lineWidth = 1.5;
  for (const [stream, values] of series) {
    ctx.strokeStyle = colors.get(stream);
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    ctx.stroke();
  }
  // The legend: one line per stream with its latest rate.
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  series.forEach(([stream, values], i) => {
    const ly = box.top + 8 + i * 15;
    ctx.fillStyle = colors.get(stream);
    ctx.fillRect(box.left + 8, ly - 4, 10, 8);
    ctx.fillStyle = "#111827";
    ctx.fillText(`${stream}  ${values[values.length - 1]}/s`, box.left + 22, ly);
  });
}

function niceCeiling(value) {
  const magnitude = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * magnitude).find((v) => v >= value);
}

// -- the event log -------------------------------------------------------------------------------

function logFrame(frame) {
  const li = document.createElement("li");
  li.dataset.event = frame.event;
  const time = document.createElement("time");
  time.textContent = new Date().toISOString().slice(11, 23);
  const code = document.createElement("code");
  code.textContent = JSON.stringify(frame);
  li.append(time, " ", code);
  const log = $("event-log");
  log.prepend(li);
  while (log.childElementCount > LOG_LIMIT) log.lastElementChild.remove();
}

// -- the push form -----------------------------------------------------------------------------

let pushNumber = 0; // only the latest push's answer is shown

async function submitPush(event) {
  event.preventDefault();
  const number = ++pushNumber;
  const stream = mirror?.stream ?? $("stream-input").value.trim();
  let data;
  try {
    data = JSON.parse($("push-data").value);
  } catch (error) {
    return showResult(`invalid JSON document: ${error.message}`, "error");
  }
  const keyText = $("push-key").value.trim();
  let key;
  if (keyText) {
    try {
      key = JSON.parse(keyText);
    } catch {
      key = keyText; // bare text: a string key, so a pasted UUID needs no quotes
    }
  }
  showResult(`pushing into ${stream}…`, "pending");
  try {
    const answer = await flow.push(stream, data, { op: $("push-op").value, key });
    if (number === pushNumber) showResult(`${summary(answer)}\n${JSON.stringify(answer, null, 2)}`, "ok");
  } catch (error) {
    if (number === pushNumber) showResult(`${error.code ?? "error"}: ${error.message}`, "error");
  }
}

const COUNTS = ["inserted", "replaced", "unchanged", "deleted", "skipped", "errors"];

/** The counts of a push's answer on one line, above its JSON (which the box may cut). */
function summary(answer) {
  return COUNTS.map((name) => `${name} ${answer[name] ?? 0}`).join(" · ");
}

function showResult(text, status) {
  const result = $("push-result");
  result.textContent = text;
  result.className = `result ${status}`;
}

// -- wiring ------------------------------------------------------------------------------------

function showState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
}

// After a reconnect the client resumes each subscription where it was: nothing to reload here.
flow.addEventListener("state", ({ detail: { state } }) => showState(state));
flow.addEventListener("frame", ({ detail: frame }) => {
  logFrame(frame);
  if (frame.event === "change" && typeof frame.stream === "string") countChange(frame.stream);
});
flow.addEventListener("error", ({ detail }) => {
  console.warn("changeflow error:", detail);
  // A subscription refused again after a reconnect (nobody awaits it any more).
  if (detail.stream && detail.stream === mirror?.stream) {
    setStatus(`subscription refused: ${detail.code}: ${detail.message}`, true);
  }
});

$("stream-form").addEventListener("submit", (event) => {
  event.preventDefault();
  watch($("stream-input").value.trim());
});
$("push-form").addEventListener("submit", submitPush);

showState(flow.state);
watch($("stream-input").value.trim());
drawChart();
setInterval(drawChart, 1000);
window.addEventListener("resize", drawChart);

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
