// letta_nb run view (anywidget ESM). It only displays: Python (letta_nb/widgets/doc.py) decides
// what a message looks like and when it is sent. Protocol (see doc.py):
//   Python -> here: {t:"d", n, o:[["e",i,item] | ["a",i,text] | ["r"]], h?}, deflated in
//     buffers[0] when z:1; {t:"doc", doc}; the `snapshot` trait holds the deflated document.
//   here -> Python: {t:"sync", n}, {t:"answer", approve, reason}, {t:"cancel"}, {t:"detach"}.
// Safety: model text only ever goes through textContent / createTextNode; links keep
// http(s)/mailto targets only. No innerHTML anywhere.

const CSS_ID = "letta-nb-run-view-css";
const LONG_CHARS = 1500;
const LONG_LINES = 24;
const FIELD_LONG_CHARS = 600;
const FIELD_LONG_LINES = 12;
const STREAMED = new Set(["as", "re", "hr", "us"]);

// ---- pieces of the view ---------------------------------------------------------------------
const countLines = (s) => (s.match(/\n/g) || []).length;

// A box capped in height with a "show all" toggle; `ui` keeps the choice across re-renders.
function capped(content, ui, key, long, live) {
  if (!long) return content;
  const box = h("div", "lnb-capbox");
  const inner = box.appendChild(h("div", "lnb-cap"));
  inner.appendChild(content);
  const open = ui[key] === true;
  if (open) inner.classList.add("lnb-open");
  const btn = box.appendChild(h("button", "lnb-more", open ? "show less" : "show all"));
  btn.type = "button";
  btn.addEventListener("click", () => {
    ui[key] = !inner.classList.contains("lnb-open");
    inner.classList.toggle("lnb-open", ui[key]);
    btn.textContent = ui[key] ? "show less" : "show all";
  });
  if (live && !open) requestAnimationFrame(() => (inner.scrollTop = inner.scrollHeight));
  return box;
}

function collapsible(summary, body, ui, key, openByDefault) {
  const d = h("details", "lnb-details");
  d.open = ui[key] ?? openByDefault;
  const s = d.appendChild(h("summary"));
  if (typeof summary === "string") s.textContent = summary;
  else s.appendChild(summary);
  d.appendChild(body);
  // Setting `open` above fires a "toggle" event too: only a person's toggle is remembered.
  let echo = d.open;
  d.addEventListener("toggle", () => {
    if (echo !== null && d.open === echo) {
      echo = null;
      return;
    }
    echo = null;
    ui[key] = d.open;
  });
  return d;
}

// One line for calls whose arguments are all short: `→ top_n  column: region · n: 5`.
function inlineFields(fields) {
  if (!fields.length) return null;
  const short = fields.every(([, kind, v]) => kind === "text" && v.length <= 60);
  if (!short || fields.reduce((n, [l, , v]) => n + l.length + v.length + 3, 0) > 140) return null;
  const line = h("span", "lnb-inline-args");
  fields.forEach(([label, , value], k) => {
    if (k) line.appendChild(h("span", "lnb-sep", " · "));
    line.appendChild(h("span", "lnb-label", `${label}: `));
    line.appendChild(h("span", "lnb-value", value));
  });
  return line;
}

function fieldsNode(fields, ui, key) {
  const box = h("div", "lnb-fields");
  fields.forEach(([label, kind, value], k) => {
    const row = box.appendChild(h("div", kind === "text" ? "lnb-field lnb-kv" : "lnb-field"));
    row.appendChild(h("div", "lnb-label", label));
    let val;
    if (kind === "md") {
      val = h("div", "lnb-md lnb-fieldmd");
      val.appendChild(markdown(value));
    } else if (kind === "text") val = h("code", "lnb-inline", value);
    else val = h("pre", "lnb-pre", value);
    const long = value.length > FIELD_LONG_CHARS || countLines(value) >= FIELD_LONG_LINES;
    row.appendChild(capped(val, ui, `${key}:f${k}`, long, false));
  });
  return box;
}

function cutNote(item) {
  return item.c
    ? h("div", "lnb-cut", `… ${item.c.toLocaleString()} earlier characters (full text in .transcript)`)
    : null;
}

function argsNode(item, ui, key) {
  return item.f ? fieldsNode(item.f, ui, key) : h("pre", "lnb-pre", item.x || "");
}

function approvalNode(item, ctx, ui, key) {
  const wrap = h("div", "lnb-approval");
  if (item.o) {
    const line = h("span", item.o.ok ? "lnb-ok" : "lnb-no");
    line.textContent = item.o.ok ? "✓ approved" : "✗ denied";
    const sum = h("span");
    sum.appendChild(line);
    sum.appendChild(document.createTextNode(` · ${item.nm}`));
    if (!item.o.ok && item.o.why) sum.appendChild(h("span", "lnb-why", ` — ${item.o.why}`));
    wrap.classList.add("lnb-ap-done");
    wrap.appendChild(collapsible(sum, argsNode(item, ui, key), ui, key, false));
    return wrap;
  }
  const pending = ctx.pending;
  wrap.classList.add("lnb-card");
  const title = wrap.appendChild(h("div", "lnb-card-title"));
  title.appendChild(h("span", null, pending ? "Approval needed: " : "Approval requested: "));
  title.appendChild(h("b", null, item.nm));
  wrap.appendChild(argsNode(item, ui, key));
  if (pending && ctx.lastAsk === key) {
    const row = wrap.appendChild(h("div", "lnb-actions"));
    const yes = row.appendChild(h("button", "lnb-btn lnb-approve", "Approve"));
    const no = row.appendChild(h("button", "lnb-btn lnb-deny", "Deny"));
    const reason = row.appendChild(h("input", "lnb-reason"));
    reason.placeholder = "reason (sent with Deny)";
    reason.value = ctx.reason || "";
    reason.addEventListener("input", () => (ctx.reason = reason.value));
    const state = row.appendChild(h("span", "lnb-state"));
    const busy = pending.s === "sending" || ctx.sent;
    [yes, no, reason].forEach((b) => (b.disabled = busy));
    yes.type = no.type = "button";
    if (busy) state.textContent = "sending…";
    else if (pending.err) state.textContent = `could not send: ${pending.err}`;
    const answer = (approve) => {
      if (ctx.sent) return;
      ctx.sent = true;
      [yes, no, reason].forEach((b) => (b.disabled = true));
      state.textContent = "sending…";
      ctx.send({ t: "answer", approve, reason: approve ? null : reason.value.trim() || null });
    };
    yes.addEventListener("click", () => answer(true));
    no.addEventListener("click", () => answer(false));
  }
  return wrap;
}

function itemNode(item, i, ctx) {
  const k = item.k;
  if (!k) return null;
  const ui = ctx.ui;
  const key = String(i);
  const node = h("div", `lnb-item lnb-${k}`);
  // After a cut, start at a word boundary (the cut count stays exact in the note).
  const x = item.c ? (item.x || "").replace(/^\S{1,40}(?=\s)/, "") : item.x || "";
  const note = cutNote(item);
  if (k === "as") {
    const md = h("div", "lnb-md");
    if (note) md.appendChild(note);
    md.appendChild(markdown(x));
    const long = x.length > LONG_CHARS || countLines(x) > LONG_LINES;
    node.appendChild(capped(md, ui, key, long, ctx.live));
  } else if (k === "re" || k === "hr") {
    const body = h("div", "lnb-thought");
    if (note) body.appendChild(note);
    body.appendChild(document.createTextNode(x));
    const long = x.length > LONG_CHARS || countLines(x) > LONG_LINES;
    node.appendChild(collapsible("thinking", capped(body, ui, `${key}:c`, long, ctx.live), ui, key, !ctx.fin));
  } else if (k === "tc") {
    const title = node.appendChild(h("div", "lnb-call"));
    title.appendChild(h("span", "lnb-arrow", "→ "));
    title.appendChild(h("b", null, item.nm));
    const line = item.f ? inlineFields(item.f) : null;
    if (line) {
      title.appendChild(document.createTextNode("  "));
      title.appendChild(line);
    } else node.appendChild(argsNode(item, ui, key));
  } else if (k === "ap") {
    node.appendChild(approvalNode(item, ctx, ui, key));
  } else if (k === "tr") {
    const sum = h("span");
    sum.appendChild(h("span", "lnb-arrow", "← "));
    sum.appendChild(h("b", null, item.nm));
    if (item.st) sum.appendChild(h("span", `lnb-st lnb-st-${item.st}`, ` ${item.st}`));
    const body = h("div");
    if (note) body.appendChild(note);
    const pre = body.appendChild(h("pre", "lnb-pre", x));
    const long = x.length > FIELD_LONG_CHARS || countLines(x) >= FIELD_LONG_LINES;
    node.appendChild(collapsible(sum, long ? capped(body, ui, `${key}:c`, true, false) : body, ui, key, false));
    void pre;
  } else if (k === "sr") {
    node.textContent = `■ ${x}`;
  } else if (k === "er") {
    node.textContent = `✖ ${x}`;
  } else if (k === "us") {
    node.textContent = `> ${x}`;
  } else {
    node.textContent = `[${item.nm || "message"}] ${x}`;
  }
  return node;
}

// ---- one view -------------------------------------------------------------------------------
function createView(state, model, el) {
  installCss(CSS_ID);
  el.classList.add("lnb-run");
  const root = el.appendChild(h("div", "lnb-root"));
  const head = root.appendChild(h("div", "lnb-head"));
  const title = head.appendChild(h("div", "lnb-title"));
  const controls = head.appendChild(h("div", "lnb-ctl"));
  const alerts = root.appendChild(h("div", "lnb-alerts"));
  const body = root.appendChild(h("div", "lnb-body"));
  const nodes = [];
  const ctx = { ui: {}, send: (m) => model.send(m), sent: false, reason: "" };
  let clock = null;
  let lastAp = null;

  // After a kernel restart the front end marks the model as no longer live
  // ("comm_live_update"): the view keeps its last state, without controls or a ticking clock.
  let dead = false;
  let frozen = null; // the moment the kernel went away: the clock stops there

  function drawHeader(hd) {
    title.replaceChildren();
    title.appendChild(h("b", "lnb-agent", hd.ag || "letta"));
    if (hd.cv) {
      const conv = h("span", "lnb-conv", hd.cv);
      conv.title = `conversation ${hd.cid || hd.cv}`;
      title.appendChild(document.createTextNode(" · "));
      title.appendChild(conv);
    }
    const parts = [];
    const status = h("span", `lnb-status lnb-s-${hd.st}`, hd.st === "requires_approval" ? "waiting for approval" : hd.st);
    status.dataset.status = hd.st || "";
    title.appendChild(document.createTextNode(" · "));
    title.appendChild(status);
    if (hd.det !== undefined) parts.push(`detached at seq ${hd.det}`);
    const time = h("span", "lnb-time");
    if (hd.live || hd.act >= 0.05) parts.push(time);
    if (hd.tok !== null && hd.tok !== undefined) parts.push(`${hd.tok.toLocaleString()} tokens`);
    for (const p of parts) {
      title.appendChild(document.createTextNode(" · "));
      title.appendChild(typeof p === "string" ? document.createTextNode(p) : p);
    }
    const runs = hd.nr > 1 ? ` (${hd.nr} runs in this chain)` : "";
    const rate = hd.fps !== undefined ? ` · ${hd.fps} frames/s` : "";
    title.title = `run ${hd.run || "(starting)"}${runs} · seq ${hd.seq ?? 0}${rate}`;
    const t0 = state.received || performance.now(); // when this header's `act` was measured
    const tick = () => {
      const extra = hd.live ? ((frozen ?? performance.now()) - t0) / 1000 : 0;
      time.textContent = fmtSeconds((hd.act || 0) + extra);
    };
    tick();
    if (clock) clearInterval(clock);
    clock = hd.live && !dead ? setInterval(tick, 500) : null;

    controls.replaceChildren();
    if (hd.ctl) {
      const cancel = controls.appendChild(h("button", "lnb-btn lnb-cancel", "Cancel"));
      cancel.title = "Cancel the run on the server";
      const detach = controls.appendChild(h("button", "lnb-btn lnb-detach", "Detach"));
      detach.title = "Stop following here; the run continues on the server";
      cancel.type = detach.type = "button";
      cancel.addEventListener("click", () => {
        cancel.disabled = true;
        model.send({ t: "cancel" });
      });
      detach.addEventListener("click", () => {
        detach.disabled = cancel.disabled = true;
        model.send({ t: "detach" });
      });
    }
    if (hd.note) controls.appendChild(h("span", "lnb-note", hd.note));

    alerts.replaceChildren();
    if (hd.warn) alerts.appendChild(h("div", "lnb-warn", `⚠ ${hd.warn}`));
    if (hd.err) alerts.appendChild(h("div", "lnb-err", `✖ ${hd.err}`));
    if (hd.det !== undefined) {
      alerts.appendChild(h("div", "lnb-hint", "The run goes on on the server: re-run the cell (or %letta attach RUN_ID) to follow it again."));
    }
  }

  // Smooth streaming: text that arrives in one batch (about a second of it) is revealed over
  // about the time the batch took to arrive, so a batched stream still reads as a stream.
  // History (the first draw, a settled run) shows at once.
  const reveal = new Map(); // item index -> {shown, span, at, cut}
  const painted = new Map(); // item index -> characters of its text on screen
  let first = true;
  let timer = null;

  function note(i, item, now, instant) {
    const len = (item.x || "").length;
    const r = reveal.get(i);
    if (instant) {
      reveal.delete(i);
      return;
    }
    if (!r) {
      const before = painted.get(i) ?? 0; // what this view already shows of it
      reveal.set(i, { shown: Math.min(before, len), span: 500, at: now, cut: item.c || 0 });
      return;
    }
    r.shown = Math.max(0, r.shown - ((item.c || 0) - r.cut)); // text trimmed to the tail
    r.cut = item.c || 0;
    r.span = Math.min(1500, Math.max(100, 0.6 * r.span + 0.4 * (now - r.at)));
    r.at = now;
    if (r.shown >= len) r.shown = len;
  }

  function paint(i) {
    const item = state.doc.e[i];
    const r = reveal.get(i);
    const shown = r && item && r.shown < (item.x || "").length ? { ...item, x: item.x.slice(0, r.shown) } : item;
    painted.set(i, shown ? (shown.x || "").length : 0);
    const node = (shown && itemNode(shown, i, ctx)) || h("div", "lnb-hidden");
    if (nodes[i]) nodes[i].replaceWith(node);
    else body.appendChild(node);
    nodes[i] = node;
  }

  function animate() {
    if (timer || ![...reveal].some(([i, r]) => r.shown < (state.doc.e[i]?.x || "").length)) return;
    timer = setInterval(() => {
      let busy = false;
      for (const [i, r] of reveal) {
        const len = (state.doc.e[i]?.x || "").length;
        if (r.shown >= len) continue;
        r.shown = Math.min(len, r.shown + Math.ceil(((len - r.shown) * 50) / r.span));
        paint(i);
        busy = busy || r.shown < len;
      }
      if (!busy) {
        clearInterval(timer);
        timer = null;
      }
    }, 50);
  }

  function draw(changed) {
    const doc = state.doc;
    const hd = doc.h || {};
    const apKey = JSON.stringify(hd.ap || null);
    if (apKey !== lastAp) {
      lastAp = apKey;
      ctx.sent = false;
      changed = null; // the approval card moves or closes: redraw every item
    }
    ctx.pending = hd.ap || null;
    ctx.live = !!hd.live;
    const finChanged = ctx.fin !== !!hd.fin;
    ctx.fin = !!hd.fin;
    ctx.lastAsk = null;
    if (ctx.pending) {
      for (let i = doc.e.length - 1; i >= 0; i--) {
        const it = doc.e[i];
        if (it && it.k === "ap" && !it.o && ctx.pending.ids.includes(it.id)) {
          ctx.lastAsk = String(i);
          break;
        }
      }
    }
    drawHeader(hd);
    if (changed === "reset") {
      body.replaceChildren();
      nodes.length = 0;
      changed = null;
    }
    const now = performance.now();
    for (let i = 0; i < doc.e.length; i++) {
      const item = doc.e[i];
      const kind = item && item.k;
      const redo =
        changed === null || changed.has(i) || i >= nodes.length ||
        (finChanged && (kind === "re" || kind === "hr" || kind === "as"));
      if (!redo) continue;
      if (STREAMED.has(kind)) note(i, item, now, first || !ctx.live);
      paint(i);
    }
    first = false;
    if (!ctx.live && reveal.size) {
      const partial = [...reveal.keys()];
      reveal.clear();
      partial.forEach(paint); // the run stopped streaming: show everything now
    }
    animate();
    while (nodes.length > doc.e.length) nodes.pop().remove();
    el.dataset.n = String(doc.n);
    el.dataset.status = hd.st || "";
  }

  model.on("comm_live_update", () => {
    if (dead) return;
    dead = true;
    frozen = performance.now();
    if (clock) clearInterval(clock);
    clock = null;
    root.classList.add("lnb-offline");
    if (!(state.doc.h || {}).ctl) return; // a finished run: its view is complete as it is
    const note = h("div", "lnb-hint lnb-offline-note");
    note.textContent = "The kernel restarted: this is the view's last state. Re-run the cell to follow the run again.";
    root.insertBefore(note, body);
  });
  state.views.add(draw);
  draw(null);
  el.dataset.ready = "1";
  return () => {
    state.views.delete(draw);
    if (clock) clearInterval(clock);
    if (timer) clearInterval(timer);
  };
}

// ---- the model: one document shared by every view of it ------------------------------------
export default () => {
  const state = { doc: { v: 1, n: 0, tl: null, h: {}, e: [] }, views: new Set(), ready: null };
  let queue = Promise.resolve();
  let waiting = []; // messages after a gap, until the document arrives
  let asked = 0;

  const notify = (changed) => state.views.forEach((draw) => draw(changed));

  function replace(doc) {
    if (!doc || doc.n < state.doc.n) return false;
    state.doc = doc;
    state.received = performance.now();
    const later = waiting.filter((m) => m.n > doc.n).sort((a, b) => a.n - b.n);
    waiting = [];
    notify("reset");
    for (const m of later) apply(m);
    return true;
  }

  function apply(msg) {
    const doc = state.doc;
    if (msg.n <= doc.n) return; // already have it (every view sees every message)
    if (msg.n !== doc.n + 1) {
      waiting.push(msg);
      const now = Date.now();
      if (now - asked > 2000) {
        asked = now;
        state.model.send({ t: "sync", n: doc.n });
      }
      return;
    }
    const changed = new Set();
    let reset = false;
    for (const op of msg.o || []) {
      if (op[0] === "r") {
        doc.e = [];
        reset = true;
      } else if (op[0] === "e") {
        doc.e[op[1]] = op[2];
        changed.add(op[1]);
      } else if (op[0] === "a") {
        const it = doc.e[op[1]];
        if (!it) continue;
        let x = (it.x || "") + op[2];
        if (doc.tl && x.length > doc.tl) {
          it.c = (it.c || 0) + x.length - doc.tl;
          x = x.slice(-doc.tl);
        }
        it.x = x;
        changed.add(op[1]);
      }
    }
    if (msg.h) {
      doc.h = msg.h;
      state.received = performance.now();
    }
    doc.n = msg.n;
    notify(reset ? "reset" : changed);
    if (waiting.length) {
      const next = waiting.filter((m) => m.n > doc.n);
      waiting = [];
      next.sort((a, b) => a.n - b.n).forEach(apply);
    }
  }

  const run = (job) => (queue = queue.then(job).catch((err) => console.error("[letta_nb]", err)));

  return {
    initialize({ model }) {
      state.model = model;
      state.ready = run(async () => {
        replace(await inflate(model.get("snapshot")));
      });
      model.on("change:snapshot", () =>
        run(async () => {
          const doc = await inflate(model.get("snapshot"));
          if (doc && doc.n > state.doc.n) replace(doc);
        }));
      model.on("msg:custom", (content, buffers) => {
        if (!content || (content.t !== "d" && content.t !== "doc")) return; // e.g. anywidget's own
        run(async () => {
          const msg = content.z ? await inflate(buffers[0]) : content;
          if (msg.t === "doc") replace(msg.doc);
          else apply(msg);
        });
      });
    },
    async render({ model, el }) {
      await state.ready;
      return createView(state, model, el);
    },
  };
};
