/**
 * changeflow.js: the browser client of changeflow-channels (RethinkDB changefeeds over websockets).
 *
 * It speaks the browser protocol of docs/protocol.md (JSON text frames on ws/changeflow/).
 * It is an ES module for modern browsers, with no build step and no dependencies.
 *
 * @example
 * import { Changeflow, ChangeflowError } from "/static/changeflow_channels/changeflow.js";
 *
 * // A relative URL resolves against the page: ws(s)://<location.host>/ws/changeflow/.
 * // An absolute ws:// or wss:// URL works too.
 * const flow = new Changeflow("/ws/changeflow/", { minDelay: 250, maxDelay: 10000 });
 *
 * flow.addEventListener("state", (e) => console.log("connection:", e.detail.state));
 * // Error frames that answer no request of ours (and refused subscriptions nobody awaits):
 * flow.addEventListener("error", (e) => console.warn(e.detail.code, e.detail.message, e.detail.id));
 * flow.addEventListener("frame", (e) => console.debug("received", e.detail)); // every frame, batches unpacked
 *
 * const unsubscribe = flow.subscribe("demo.messages", (change) => {
 *   // {event: "change", stream, type: "add" | "change" | "remove" | "initial", old_val, new_val, epoch, seq}
 *   console.log(change.type, change.new_val ?? change.old_val);
 * });
 * await flow.subscribed("demo.messages"); // the server confirmed (this happens again after each reconnect)
 *
 * // With a snapshot: the table's current documents first, then exactly the changes after them.
 * const rows = new Map();
 * flow.subscribe("demo.messages", (change) => {
 *   if (change.old_val) rows.delete(change.old_val.id);
 *   if (change.new_val) rows.set(change.new_val.id, change.new_val);
 * }, {
 *   snapshot: true,
 *   // {event: "snapshot", stream, documents: [...], truncated, epoch, seq}: replaces what you show.
 *   // `epoch` null and `seq` 0: the table is not followed (yet), e.g. it does not exist.
 *   onSnapshot: (snap) => { rows.clear(); for (const doc of snap.documents) rows.set(doc.id, doc); },
 *   // {event: "resync", stream, reason}: changes were lost ("epoch_changed", "history_exceeded",
 *   // "no_position", "unavailable"); with snapshot: true a fresh snapshot follows.
 *   onResync: (frame) => console.warn("resync", frame.reason),
 * });
 * flow.position("demo.messages"); // {epoch, seq, cursor?} of the last change or snapshot delivered, or null
 *
 * try {
 *   const answer = await flow.push("demo.messages", { message: "Hello world" }); // op "insert" by default
 *   const [key] = answer.generated_keys;
 *   await flow.push("demo.messages", { n: 2 }, { op: "update", key, timeout: 10000, retries: 3 });
 * } catch (error) {
 *   // error.code: the server's code ("forbidden", "bad_request", ...), or "timeout" / "unavailable"
 *   // once the retries are spent: then the push may or may not have been written.
 *   if (error instanceof ChangeflowError) console.warn(error.code, error.message);
 * }
 *
 * unsubscribe(); // the stream's last callback gone: the client sends "unsubscribe"
 * flow.state;    // "connecting" | "open" | "reconnecting" | "closed"
 * flow.close();  // closes the socket for good: no more reconnects (so does a close 4001-4003:
 *                // a token that expired or is not valid, an origin not allowed)
 *
 * Resuming: per stream, the client remembers the position {epoch, seq} of the last change (or
 * snapshot) it delivered (with its `cursor`, under a row rule: there `seq` counts only what this
 * subscription was sent, and the opaque cursor says where it stands; docs/protocol.md, "Positions
 * under a row rule"). After a reconnect it subscribes again with `since: position` (and
 * `snapshot: true` when a callback wants snapshots): the server replays the changes missed, or
 * answers `resync` (and a fresh snapshot) when it cannot. Without a position (nothing delivered yet,
 * or a snapshot of a table not followed) it subscribes as the first time. Changes not newer than
 * the position within the same epoch (duplicates) are dropped; a change of another epoch is taken.
 * Several callbacks on one stream share one server subscription: it asks for a snapshot when any of
 * them wants one, and every snapshot goes to every callback's onSnapshot. A callback with
 * `snapshot: true` added to a stream already subscribed makes the client send the subscription
 * again with `snapshot: true` (no `since`), so that callback gets a snapshot too.
 *
 * Pushes: every push carries an `idempotency_key` (a random UUID), so the server writes it once however
 * often it is sent. A push without an answer within `timeout`, refused as `unavailable`, or sent on a
 * connection that dropped before its answer is sent again with the same key, up to `retries` times
 * (backoff as for reconnects); only then is it rejected with "timeout" or "unavailable". A push over
 * the connection's rate (`rate_limited`, with `retry_after`) goes again after `retry_after` seconds
 * (or the backoff, if longer), within the same `retries`.
 *
 * A subscription the server refuses as `unavailable` (e.g. its channel layer is restarting) is asked
 * again with backoff (the reconnect backoff), as long as the connection is open.
 *
 * Flow control: the client acknowledges the frames it has read (`{"action": "ack", "frames": n}`, at
 * least every 32 frames and 50 ms after the last one), as the server requires (docs/protocol.md). A
 * snapshot the server sends in several parts (`part`, `last`) reaches onSnapshot once, whole. An
 * `error` frame `too_large` with a stream and a `seq` (a change too large to send) goes to the "error"
 * event with its stream, epoch and seq; the position moves past it.
 *
 * Options: minDelay/maxDelay (ms, reconnect backoff: full jitter, the ceiling doubles from minDelay up
 * to maxDelay), stableAfter (ms a connection must stay open before the backoff starts over, 5000),
 * timeout (default push timeout in ms, 10000; 0 or Infinity: none), retries (default retries of a
 * push, 3), maxFrameBytes (the largest frame the server's websocket takes, UTF-8 bytes: Daphne's
 * --websocket-max-message-size, 1048576 by default; a push whose frame is larger is rejected
 * "too_large" without being sent, since the server would close the connection, 1009, at every try).
 *
 * Exceptions thrown by subscribe callbacks are caught and logged with console.error. Exceptions in
 * addEventListener listeners are reported by the browser as for any event listener; neither kind
 * disturbs the client.
 */

const DEFAULTS = {
  minDelay: 250, maxDelay: 10000, stableAfter: 5000, timeout: 10000, retries: 3, maxFrameBytes: 1048576,
};
// Close codes after which connecting again cannot help (docs/protocol.md, "Close codes"): the
// token expired (4001) or is not valid (4002), or this page's origin is not allowed (4003).
const FINAL_CLOSE_CODES = [4001, 4002, 4003];
// Codes of the error frame (no id, no stream) that comes before such a close.
const REFUSED_CODES = ["unauthorized"];
// Acknowledge at least every ACK_EVERY frames, and ACK_AFTER ms after a frame not yet acknowledged.
const ACK_EVERY = 32;
const ACK_AFTER = 50;

/** A refused or failed request: `code` is the server's error code, or "timeout" / "unavailable". */
export class ChangeflowError extends Error {
  constructor(code, message, frame = null) {
    super(message);
    this.name = "ChangeflowError";
    this.code = code;
    this.frame = frame; // the error frame, when the server sent one
  }
}

export class Changeflow extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = resolveUrl(url);
    this.options = { ...DEFAULTS, ...options };
    this._state = "connecting";
    this._ws = null;
    this._connected = false; // our own flag: readyState turns OPEN before our open handler has run
    this._refused = false; // the server refused the connection (an "unauthorized" error frame)
    this._nextId = 1;
    this._attempt = 0; // connections that failed in a row: the backoff's exponent
    this._timer = null;
    this._openedAt = 0;
    this._streams = new Map(); // stream -> {callbacks, requestId, confirmed, error, waiters}
    this._pending = new Map(); // request id -> {kind: "subscribe" | "unsubscribe" | "push", ...}
    this._queue = []; // pushes issued while disconnected, sent in order on the next open
    this._received = 0; // frames received on this connection (a batch counts once)
    this._acked = 0; // the count last acknowledged
    this._ackTimer = null;
    this._connect();
  }

  get state() {
    return this._state;
  }

  /**
   * Call `callback(changeFrame)` for each change of `stream`; returns the function that stops it.
   * Options: `snapshot` (true: ask the server for the current documents first), `onSnapshot(frame)`
   * (each snapshot frame), `onResync(frame)` (each resync frame: changes were lost).
   */
  subscribe(stream, callback, { snapshot = false, onSnapshot = null, onResync = null } = {}) {
    if (typeof stream !== "string" || !stream) throw new TypeError("stream must be a 'db.table' string");
    if (typeof callback !== "function") throw new TypeError("callback must be a function");
    for (const [name, value] of [["onSnapshot", onSnapshot], ["onResync", onResync]]) {
      if (value != null && typeof value !== "function") throw new TypeError(`${name} must be a function`);
    }
    // A token per call, so the same function subscribed twice needs (and gets) two unsubscribes.
    const token = { callback, snapshot: Boolean(snapshot), onSnapshot, onResync, hadSnapshot: false };
    let entry = this._streams.get(stream);
    if (!entry) {
      // One server subscription per stream, however many callbacks share it.
      entry = {
        callbacks: [token],
        requestId: null,
        confirmed: null,
        error: null,
        waiters: [],
        position: null, // {epoch, seq, cursor?} of the last change or snapshot delivered
        snapshotPending: false, // a subscribe asking for a snapshot is under way on this connection
        parts: null, // the documents of a snapshot whose parts are still arriving
        refusals: 0, // subscribes refused as "unavailable" in a row: the retry backoff's exponent
        retryTimer: null,
      };
      this._streams.set(stream, entry);
      this._sendSubscribe(stream, entry);
    } else {
      entry.callbacks.push(token);
      this._ensureSnapshot(stream, entry);
    }
    return () => this._unsubscribe(stream, entry, token);
  }

  /** The position {epoch, seq} of the last change (or snapshot) of `stream` delivered, or null. */
  position(stream) {
    const position = this._streams.get(stream)?.position;
    return position ? { ...position } : null;
  }

  /** Resolves with the "subscribed" frame once the server confirmed `stream` on this connection. */
  subscribed(stream) {
    const entry = this._streams.get(stream);
    if (this._state === "closed") return Promise.reject(closedError());
    if (!entry) return Promise.reject(new ChangeflowError("not_found", `not subscribed to ${stream}`));
    if (entry.confirmed) return Promise.resolve(entry.confirmed);
    if (entry.error) return Promise.reject(entry.error);
    return new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
  }

  /** Write `data` into `stream`; resolves with the "pushed" frame, rejects with a ChangeflowError. */
  push(stream, data, { op, key, timeout = this.options.timeout, retries = this.options.retries } = {}) {
    return new Promise((resolve, reject) => {
      if (this._state === "closed") return reject(closedError());
      const id = this._nextId++;
      // The same key on every attempt: the server writes the push once, however often it comes.
      const frame = { action: "push", stream, data, id, idempotency_key: newKey() };
      if (op != null) frame.op = op;
      if (key != null) frame.key = key;
      let text;
      try {
        text = JSON.stringify(frame);
      } catch (error) {
        return reject(new ChangeflowError("bad_request", `data is not JSON-serializable: ${error.message}`));
      }
      const size = new TextEncoder().encode(text).length;
      if (size > this.options.maxFrameBytes) {
        const message = `push frame of ${size} bytes; the server takes at most ${this.options.maxFrameBytes}`;
        return reject(new ChangeflowError("too_large", message));
      }
      const request = {
        kind: "push", id, text, size, resolve, reject, sent: false, timer: null, timeout,
        retriesLeft: Math.max(0, Number(retries) || 0), attempt: 0, idempotencyKey: frame.idempotency_key,
      };
      this._pending.set(id, request);
      this._attemptPush(request);
    });
  }

  /** Send (or queue) one attempt of a push, with its own timeout. */
  _attemptPush(request) {
    clearTimeout(request.timer);
    request.timer = null;
    if (this._pending.get(request.id) !== request) return; // settled meanwhile
    const { timeout } = request;
    if (timeout > 0 && Number.isFinite(timeout)) {
      request.timer = setTimeout(() => {
        const error = new ChangeflowError("timeout", `no answer to push ${request.id} within ${timeout} ms`);
        this._retryOrFail(request, error);
      }, timeout);
    }
    if (this._connected) this._sendPush(request);
    else if (!this._queue.includes(request)) this._queue.push(request);
  }

  /** Try `request` again (same id, same idempotency key) after a backoff (at least `atLeast` ms),
   * or reject it with `error`. */
  _retryOrFail(request, error, atLeast = 0) {
    if (this._state === "closed" || request.retriesLeft <= 0) return this._fail(request, error);
    request.retriesLeft -= 1;
    request.attempt += 1;
    request.sent = false;
    clearTimeout(request.timer);
    const delay = Math.max(this._backoff(request.attempt - 1), atLeast);
    request.timer = setTimeout(() => this._attemptPush(request), delay);
  }

  /** A delay in ms: full jitter below a ceiling that doubles from minDelay up to maxDelay. */
  _backoff(attempt) {
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** Math.min(attempt, 30));
    return Math.random() * ceiling;
  }

  /** Close the connection for good. Pending and queued pushes are rejected ("unavailable"). */
  close() {
    if (this._state === "closed") return;
    clearTimeout(this._timer);
    clearTimeout(this._ackTimer);
    this._setState("closed"); // first: the socket's close handler then knows not to reconnect
    const ws = this._ws;
    this._ws = null;
    this._connected = false;
    if (ws) {
      try {
        ws.close(1000, "closed by the client");
      } catch (error) {
        console.warn("changeflow: closing the socket failed", error);
      }
    }
    const error = closedError();
    for (const request of [...this._pending.values()]) if (request.kind === "push") this._fail(request, error);
    this._pending.clear();
    this._queue = [];
    for (const entry of this._streams.values()) {
      clearTimeout(entry.retryTimer);
      settle(entry, null, error);
    }
  }

  // -- connection ---------------------------------------------------------------------------

  _connect() {
    this._timer = null;
    if (this._state === "closed") return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      console.error("changeflow: cannot open a websocket", error);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    // Events of a socket we already gave up on (after close()) must change nothing.
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (event) => ws === this._ws && this._onMessage(event);
    ws.onclose = (event) => ws === this._ws && this._onClose(event.code);
    ws.onerror = () => {}; // always followed by a close event, which does the work
  }

  _onOpen() {
    this._connected = true;
    this._openedAt = Date.now();
    this._received = this._acked = 0; // acknowledgements count per connection
    // The server knows nothing of this client yet: subscribe again (resuming from the position
    // delivered last, when there is one), then send the queued pushes (subscriptions first, so
    // changes caused by those pushes reach the callbacks).
    for (const [stream, entry] of this._streams) {
      this._sendSubscribe(stream, entry);
      this._ensureSnapshot(stream, entry); // a callback that never had its snapshot gets one
    }
    const queue = this._queue;
    this._queue = [];
    for (const request of queue) this._sendPush(request);
    this._setState("open");
  }

  _onClose(code) {
    if (FINAL_CLOSE_CODES.includes(code) || this._refused) {
      // The server said why in an error frame (the "error" event); connecting again cannot help.
      this._ws = null;
      this._connected = false;
      this.close();
      return;
    }
    this._ws = null;
    const wasOpen = this._connected;
    this._connected = false;
    // Only a connection that stayed up for a while resets the backoff: a server that accepts and
    // then drops at once must not be hammered in a tight loop.
    if (wasOpen && Date.now() - this._openedAt >= this.options.stableAfter) this._attempt = 0;
    // The server forgot our subscriptions with the connection; waiters wait for the next one.
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    for (const entry of this._streams.values()) {
      entry.confirmed = entry.error = entry.requestId = null;
      entry.snapshotPending = false;
      entry.parts = null; // a snapshot cut short: the next connection sends a whole one
      clearTimeout(entry.retryTimer);
      entry.retryTimer = null;
    }
    // A push already sent may or may not have been written: it is sent again, with the same
    // idempotency key, while it has retries left. Pushes not sent yet stay queued.
    const lost = new ChangeflowError("unavailable", "the connection dropped before the answer");
    for (const request of [...this._pending.values()]) {
      if (request.kind !== "push") this._pending.delete(request.id);
      else if (request.sent) this._retryOrFail(request, lost);
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._state === "closed") return;
    // Full jitter (a uniform delay below a doubling ceiling) spreads the reconnects of many
    // browsers after a server restart instead of having them arrive in waves.
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** Math.min(this._attempt, 30));
    this._attempt += 1;
    this._setState("reconnecting");
    this._timer = setTimeout(() => this._connect(), Math.random() * ceiling);
  }

  _setState(state) {
    if (state === this._state) return;
    this._state = state;
    this._emit("state", { state });
  }

  // -- sending ------------------------------------------------------------------------------

  /** Subscribe `stream` on this connection; `resume`: with `since` when there is a position. */
  _sendSubscribe(stream, entry, { resume = true } = {}) {
    entry.confirmed = entry.error = null;
    clearTimeout(entry.retryTimer);
    entry.retryTimer = null;
    if (!this._connected) return; // sent by _onOpen
    const id = this._nextId++;
    entry.requestId = id;
    this._pending.set(id, { kind: "subscribe", id, stream, entry });
    const frame = { action: "subscribe", stream, id };
    const wantsSnapshot = entry.callbacks.some((token) => token.snapshot);
    if (resume && entry.position) frame.since = { ...entry.position };
    if (wantsSnapshot) frame.snapshot = true;
    // Without `since` a snapshot comes for sure; with it, only after a resync.
    entry.snapshotPending = wantsSnapshot && !frame.since;
    this._sendText(JSON.stringify(frame));
  }

  /** A callback wants a snapshot it never had, and none is coming: subscribe again for one. */
  _ensureSnapshot(stream, entry) {
    if (!this._connected || entry.snapshotPending) return;
    if (entry.callbacks.some((token) => token.snapshot && !token.hadSnapshot)) {
      this._sendSubscribe(stream, entry, { resume: false });
    }
  }

  _unsubscribe(stream, entry, token) {
    const index = entry.callbacks.indexOf(token);
    if (index < 0) return; // already done: calling it twice is harmless
    entry.callbacks.splice(index, 1);
    if (entry.callbacks.length || this._streams.get(stream) !== entry) return;
    this._streams.delete(stream);
    clearTimeout(entry.retryTimer);
    settle(entry, null, new ChangeflowError("not_found", `unsubscribed from ${stream}`));
    if (!this._connected) return; // the server forgot it with the last connection
    const id = this._nextId++;
    this._pending.set(id, { kind: "unsubscribe", id, stream });
    this._sendText(JSON.stringify({ action: "unsubscribe", stream, id }));
  }

  _sendPush(request) {
    request.sent = true;
    this._sendText(request.text);
  }

  _sendText(text) {
    try {
      this._ws.send(text);
    } catch (error) {
      // Only possible in a closing race; the close event settles what was pending.
      console.warn("changeflow: send failed", error);
    }
  }

  /** Acknowledge what was read: at once every ACK_EVERY frames, else shortly after the last one. */
  _scheduleAck() {
    if (this._received - this._acked >= ACK_EVERY) return this._ack();
    if (this._ackTimer === null) this._ackTimer = setTimeout(() => this._ack(), ACK_AFTER);
  }

  _ack() {
    clearTimeout(this._ackTimer);
    this._ackTimer = null;
    if (!this._connected || this._received === this._acked) return;
    this._acked = this._received;
    this._sendText(JSON.stringify({ action: "ack", frames: this._received }));
  }

  _fail(request, error) {
    clearTimeout(request.timer);
    this._pending.delete(request.id);
    const queued = this._queue.indexOf(request);
    if (queued >= 0) this._queue.splice(queued, 1);
    request.reject(error);
  }

  // -- receiving ----------------------------------------------------------------------------

  _onMessage(event) {
    this._received += 1;
    this._scheduleAck();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      console.warn("changeflow: ignoring a frame that is not JSON text", event.data);
      return;
    }
    if (frame && frame.event === "batch") {
      if (!Array.isArray(frame.events)) console.warn("changeflow: ignoring a malformed batch", frame);
      else for (const inner of frame.events) this._handle(inner);
    } else {
      this._handle(frame);
    }
  }

  _handle(frame) {
    if (!frame || typeof frame !== "object" || typeof frame.event !== "string") {
      console.warn("changeflow: ignoring a malformed frame", frame);
      return;
    }
    this._emit("frame", frame);
    const request = frame.id != null ? this._pending.get(frame.id) : this._unreadPush(frame);
    switch (frame.event) {
      case "change": {
        const entry = typeof frame.stream === "string" && this._streams.get(frame.stream);
        if (!entry) return; // a change still in flight after an unsubscribe
        const position = positionOf(frame);
        if (position) {
          const last = entry.position;
          // The server never repeats a change; should it happen anyway, callbacks see it once.
          if (last && last.epoch === position.epoch && position.seq <= last.seq) return;
          entry.position = position;
        }
        return this._call(entry, "callback", frame);
      }
      case "snapshot": {
        const entry = typeof frame.stream === "string" && this._streams.get(frame.stream);
        if (!entry) return;
        if (!Array.isArray(frame.documents)) return console.warn("changeflow: ignoring a malformed snapshot", frame);
        if (frame.last === false || (frame.last === true && entry.parts)) {
          // A snapshot in parts: collected until the part with `last: true`, then delivered whole.
          if (frame.part === 0 || !entry.parts) entry.parts = [];
          entry.parts.push(...frame.documents);
          if (frame.last === false) return;
          frame = { ...frame, documents: entry.parts };
          delete frame.part;
          delete frame.last;
          entry.parts = null;
        }
        entry.snapshotPending = false;
        // A snapshot of a table not followed (epoch null) is no position to resume from.
        entry.position = positionOf(frame);
        for (const token of entry.callbacks) token.hadSnapshot = true;
        return this._call(entry, "onSnapshot", frame);
      }
      case "resync": {
        // Changes were lost: the callbacks decide what to reload (a snapshot follows if asked).
        // The position stays: it still tells duplicates of the same epoch apart.
        const entry = typeof frame.stream === "string" && this._streams.get(frame.stream);
        if (entry) this._call(entry, "onResync", frame);
        return;
      }
      case "subscribed":
        if (request?.kind !== "subscribe") return;
        this._pending.delete(frame.id);
        if (this._isCurrent(request)) {
          request.entry.refusals = 0;
          request.entry.confirmed = frame;
          settle(request.entry, frame, null);
        }
        return;
      case "unsubscribed":
        if (request?.kind === "unsubscribe") this._pending.delete(frame.id);
        return;
      case "pushed":
        // An answer after its timeout finds nothing pending and is dropped.
        if (request?.kind !== "push") return;
        clearTimeout(request.timer);
        this._pending.delete(frame.id);
        request.resolve(frame);
        return;
      case "error":
        return this._onError(frame, request);
      default:
        console.warn("changeflow: ignoring a frame of unknown event", frame);
    }
  }

  /** The push a `too_large` error without `id` answers: a frame the server refused unread
   * (over CHANGEFLOW_MAX_FRAME_BYTES) carries its `size` instead, the bytes of that push's frame. */
  _unreadPush(frame) {
    if (frame.event !== "error" || frame.code !== "too_large" || typeof frame.size !== "number") return undefined;
    for (const request of this._pending.values()) {
      if (request.kind === "push" && request.sent && request.size === frame.size) return request;
    }
    return undefined;
  }

  _onError(frame, request) {
    const code = String(frame.code ?? "error");
    const error = new ChangeflowError(code, String(frame.message ?? code), frame);
    const detail = { code, message: error.message, id: frame.id ?? null };
    if (request?.kind === "push") {
      // Not written for now: try again, with the same idempotency key; a push over the
      // connection's rate, not before the server's retry_after.
      if (code === "unavailable") return this._retryOrFail(request, error);
      const retryAfter = code === "rate_limited" ? Number(frame.retry_after) : NaN;
      if (retryAfter >= 0) return this._retryOrFail(request, error, retryAfter * 1000);
      return this._fail(request, error);
    }
    if (request) this._pending.delete(frame.id);
    if (request?.kind === "unsubscribe") return; // e.g. not_found after a reconnect race: harmless
    if (request?.kind === "subscribe") {
      if (!this._isCurrent(request)) return;
      const retryAfter = code === "rate_limited" ? Number(frame.retry_after) : NaN;
      if (code === "unavailable" || retryAfter >= 0) {
        // The server cannot take the subscription for now (its channel layer), or not so soon
        // (too many subscribes, snapshots or resumes at once): ask again, backing off.
        const { entry, stream } = request;
        const delay = Math.max(this._backoff(entry.refusals), retryAfter >= 0 ? retryAfter * 1000 : 0);
        entry.refusals += 1;
        entry.retryTimer = setTimeout(() => {
          entry.retryTimer = null;
          if (this._streams.get(stream) === entry && this._connected) this._sendSubscribe(stream, entry);
        }, delay);
        return;
      }
      request.entry.error = error;
      // A refused subscription must not go unnoticed: without waiters, it goes to "error".
      if (request.entry.waiters.length) return settle(request.entry, null, error);
      return this._emit("error", { ...detail, stream: request.stream });
    }
    if (typeof frame.stream === "string" && frame.stream) {
      // About a subscription: e.g. "too_large", a change (at epoch, seq) too large to send. The
      // position moves past it: it will not come, and resuming must not ask for it again.
      const entry = this._streams.get(frame.stream);
      const position = positionOf(frame);
      if (entry && position) entry.position = position;
      return this._emit("error", { ...detail, stream: frame.stream, epoch: frame.epoch ?? null, seq: frame.seq ?? null });
    }
    // The server refused this connection (a token expired or not valid): its close (4001-4003)
    // ends the client for good, and so does any other close code, in case it is lost on the way.
    if (REFUSED_CODES.includes(code)) this._refused = true;
    this._emit("error", detail);
  }

  /** Call `token[name](frame)` of every callback of `entry` that has one; exceptions are logged. */
  _call(entry, name, frame) {
    for (const token of [...entry.callbacks]) {
      if (typeof token[name] !== "function") continue;
      try {
        token[name](frame);
      } catch (error) {
        console.error(`changeflow: a callback (${name}) of ${frame.stream} threw`, error);
      }
    }
  }

  _isCurrent(request) {
    const entry = this._streams.get(request.stream);
    return entry === request.entry && entry.requestId === request.id;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Resolve or reject (when `error`) the promises of `subscribed()` waiting on a stream. */
function settle(entry, frame, error) {
  const waiters = entry.waiters;
  entry.waiters = [];
  for (const { resolve, reject } of waiters) error ? reject(error) : resolve(frame);
}

/**
 * {epoch, seq} of a change or snapshot frame, or null when it has none (or epoch is null). Under a
 * row rule frames also carry an opaque `cursor`: it is kept, and sent back in `since` to resume.
 */
function positionOf(frame) {
  const { epoch, seq, cursor } = frame;
  if (epoch == null || typeof seq !== "number" || !Number.isFinite(seq)) return null;
  return typeof cursor === "string" ? { epoch, seq, cursor } : { epoch, seq };
}

/** A random idempotency key (a UUID; at most 128 characters, as the server requires). */
function newKey() {
  const cryptoApi = globalThis.crypto;
  if (cryptoApi?.randomUUID) return cryptoApi.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoApi?.getRandomValues) cryptoApi.getRandomValues(bytes);
  else for (let i = 0; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function closedError() {
  return new ChangeflowError("unavailable", "the connection is closed");
}

/** "/ws/changeflow/" -> ws(s)://<page host>/ws/changeflow/; ws:// and wss:// URLs stay as they are. */
function resolveUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const resolved = new URL(url, base); // throws a TypeError for a relative URL without a page
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  else if (resolved.protocol !== "ws:" && resolved.protocol !== "wss:") {
    throw new TypeError(`not a websocket URL: ${url}`);
  }
  return resolved.href;
}
