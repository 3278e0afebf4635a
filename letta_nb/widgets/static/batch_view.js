// letta_nb batch view (anywidget ESM, after table_common.js). Document (batch_doc.py):
//   {v, n, h: header, rows: [[label, status, answer, tokens, seconds, error, run]...],
//    inbox: [{i, l, s, err?, c: [{nm, id, f?: [[name, kind, value]], x?}]}]}
//   ops: ["i", pos, row] sets a row, ["b", inbox] replaces the inbox.
// here -> Python: {t:"sync", n}, {t:"open", i}, {t:"close"}, {t:"answer", i|null, approve,
//   reason}, {t:"cancel"}, {t:"retry"}.

const BATCH_CSS_ID = "letta-nb-batch-view-css";
const PAGE_ROWS = 20;
const INBOX_SHOWN = 12;
const ORDER = [
  "completed", "failed", "incomplete", "cancelled", "running", "starting",
  "requires_approval", "detached", "pending",
];
const NAMES = { requires_approval: "waiting for approval", pending: "not sent yet" };

function statusName(st) {
  return NAMES[st] || st;
}

function applyBatchOp(doc, op) {
  if (op[0] === "i") {
    while (doc.rows.length <= op[1]) doc.rows.push([]);
    doc.rows[op[1]] = op[2];
  } else if (op[0] === "b") {
    doc.inbox = op[1];
  }
}

function fieldsBox(fields) {
  const box = h("div", "lnb-fields");
  for (const [label, kind, value] of fields) {
    const row = box.appendChild(h("div", kind === "text" ? "lnb-field lnb-kv" : "lnb-field"));
    row.appendChild(h("span", "lnb-label", label));
    // Markdown fields are rendered as in the run view's approval card (static/markdown.js).
    let val;
    if (kind === "md") {
      val = h("div", "lnb-md lnb-fieldmd");
      val.appendChild(markdown(value));
    } else val = kind === "text" ? h("code", "lnb-inline", value) : h("pre", "lnb-pre", value);
    row.appendChild(val);
  }
  return box;
}

function createBatchView(state, model, el) {
  installCss(BATCH_CSS_ID);
  el.classList.add("lnb-batch");
  const root = el.appendChild(h("div", "lnb-root"));
  const head = root.appendChild(h("div", "lnb-head"));
  const title = head.appendChild(h("div", "lnb-title"));
  const controls = head.appendChild(h("div", "lnb-ctl"));
  const bar = root.appendChild(h("div", "lnb-bar"));
  const chips = root.appendChild(h("div", "lnb-chips"));
  const alerts = root.appendChild(h("div", "lnb-alerts"));
  const inbox = root.appendChild(h("div", "lnb-inbox"));
  const tableBox = root.appendChild(h("div", "lnb-tablebox"));
  const pager = root.appendChild(h("div", "lnb-pager"));
  const detailWrap = root.appendChild(h("div", "lnb-detail lnb-hidden"));
  const detailHead = detailWrap.appendChild(h("div", "lnb-detail-head"));
  const detailBox = detailWrap.appendChild(h("div", "lnb-detail-body"));
  const ui = { page: 0, filter: null, reason: "", inboxKey: null, sent: new Set() };
  const send = (msg) => model.send(msg);
  let clock = null;
  let dead = false;

  function drawHead(hd) {
    title.replaceChildren();
    title.appendChild(h("b", "lnb-agent", hd.ag || "letta"));
    title.appendChild(document.createTextNode(" · "));
    const st = title.appendChild(h("span", `lnb-status lnb-s-${hd.st}`, hd.st || ""));
    st.dataset.status = hd.st || "";
    const parts = [`${fmtCount(hd.done)} / ${fmtCount(hd.tot)} done`];
    if (hd.fl) parts.push(`${hd.fl} in flight`);
    if (hd.rate) parts.push(`${hd.rate < 10 ? hd.rate.toFixed(2) : Math.round(hd.rate)} items/s`);
    if (hd.eta !== undefined && hd.eta !== null && hd.live) parts.push(`ETA ${fmtSeconds(hd.eta)}`);
    if (hd.tok) parts.push(`${fmtCount(hd.tok)} tokens`);
    const time = h("span", "lnb-time");
    if (hd.act !== null && hd.act !== undefined) parts.push(time);
    for (const p of parts) {
      title.appendChild(document.createTextNode(" · "));
      title.appendChild(typeof p === "string" ? h("span", "lnb-part", p) : p);
    }
    title.title = `batch ${hd.key || ""} · concurrency ${hd.conc ?? "?"}`;
    const t0 = state.received || performance.now();
    const tick = () => {
      const extra = hd.live && !dead ? (performance.now() - t0) / 1000 : 0;
      time.textContent = fmtSeconds((hd.act || 0) + extra);
    };
    tick();
    if (clock) clearInterval(clock);
    clock = hd.live && !dead ? setInterval(tick, 1000) : null;

    controls.replaceChildren();
    if (hd.ctl && !dead) {
      controls.appendChild(button("lnb-cancel", "Cancel batch", (b) => {
        b.disabled = true;
        send({ t: "cancel" });
      }, "Cancel every running item on the server; unsent items are never sent"));
    }
    if (hd.retry && !hd.live && !dead) {
      controls.appendChild(button("lnb-retry", `Retry failed (${hd.retry})`, (b) => {
        b.disabled = true;
        send({ t: "retry" });
      }, "Send the failed items again (a new attempt each)"));
    }
    if (hd.note) controls.appendChild(h("span", "lnb-note", hd.note));
  }

  function drawBar(hd) {
    bar.replaceChildren();
    const counts = hd.c || {};
    const total = hd.tot || 0;
    bar.title = `${fmtCount(hd.done)} of ${fmtCount(total)} items done`;
    for (const st of ORDER) {
      const n = counts[st];
      if (!n || !total) continue;
      const seg = bar.appendChild(h("span", `lnb-seg lnb-bg-${st}`));
      seg.style.width = `${(100 * n) / total}%`;
      seg.title = `${fmtCount(n)} ${statusName(st)}`;
    }
    chips.replaceChildren();
    const all = chips.appendChild(button(ui.filter === null ? "lnb-chip lnb-on" : "lnb-chip", `all ${fmtCount(total)}`, () => {
      ui.filter = null;
      ui.page = 0;
      draw();
    }));
    all.dataset.status = "all";
    for (const st of ORDER) {
      const n = counts[st];
      if (!n) continue;
      const chip = chips.appendChild(button(
        ui.filter === st ? "lnb-chip lnb-on" : "lnb-chip",
        "",
        () => {
          ui.filter = ui.filter === st ? null : st;
          ui.page = 0;
          draw();
        },
        `show only the items ${statusName(st)}`,
      ));
      chip.dataset.status = st;
      chip.appendChild(h("span", `lnb-dot lnb-bg-${st}`));
      chip.appendChild(document.createTextNode(`${fmtCount(n)} ${statusName(st)}`));
    }
    alerts.replaceChildren();
    if (hd.pause) alerts.appendChild(h("div", "lnb-warn", `⏸ ${hd.pause} — it continues by itself when the server is back`));
    if (hd.slow) alerts.appendChild(h("div", "lnb-warn", `⚠ ${hd.slow}`));
  }

  function drawInbox(doc) {
    const boxes = doc.inbox || [];
    const key = JSON.stringify(boxes);
    if (key === ui.inboxKey) return;
    ui.inboxKey = key;
    inbox.replaceChildren();
    inbox.classList.toggle("lnb-hidden", !boxes.length);
    if (!boxes.length) return;
    const top = inbox.appendChild(h("div", "lnb-inbox-head"));
    top.appendChild(h("b", null, `Waiting for approval: ${boxes.length} item${boxes.length > 1 ? "s" : ""}`));
    const reason = h("input", "lnb-reason");
    reason.placeholder = "reason (sent with Deny)";
    reason.value = ui.reason;
    reason.addEventListener("input", () => (ui.reason = reason.value));
    const answerAll = (approve) => (b) => {
      if (dead) return;
      top.querySelectorAll("button").forEach((x) => (x.disabled = true));
      boxes.forEach((box) => ui.sent.add(box.i));
      send({ t: "answer", i: null, approve, reason: approve ? null : ui.reason.trim() || null });
      draw();
    };
    if (boxes.length > 1) {
      top.appendChild(button("lnb-approve", "Approve all", answerAll(true)));
      top.appendChild(button("lnb-deny", "Deny all", answerAll(false)));
    }
    top.appendChild(reason);
    for (const box of boxes.slice(0, INBOX_SHOWN)) {
      const card = inbox.appendChild(h("div", "lnb-ask"));
      card.dataset.i = String(box.i);
      const line = card.appendChild(h("div", "lnb-ask-head"));
      line.appendChild(h("b", "lnb-ask-label", box.l));
      for (const call of box.c || []) {
        line.appendChild(document.createTextNode(" · "));
        line.appendChild(h("span", "lnb-ask-tool", call.nm));
      }
      const busy = box.s === "sending" || ui.sent.has(box.i);
      const yes = line.appendChild(button("lnb-approve", "Approve", () => {
        ui.sent.add(box.i);
        send({ t: "answer", i: box.i, approve: true, reason: null });
        yes.disabled = no.disabled = true;
      }));
      const no = line.appendChild(button("lnb-deny", "Deny", () => {
        ui.sent.add(box.i);
        send({ t: "answer", i: box.i, approve: false, reason: ui.reason.trim() || null });
        yes.disabled = no.disabled = true;
      }));
      yes.disabled = no.disabled = busy || dead;
      if (box.err) card.appendChild(h("div", "lnb-err", `could not send: ${box.err}`));
      for (const call of box.c || []) {
        card.appendChild(call.f ? fieldsBox(call.f) : h("pre", "lnb-pre", call.x || ""));
      }
    }
    if (boxes.length > INBOX_SHOWN) {
      inbox.appendChild(h("div", "lnb-hint", `… and ${boxes.length - INBOX_SHOWN} more (Approve all / Deny all answer them too)`));
    }
  }

  function drawTable(doc) {
    const hd = doc.h || {};
    const shown = [];
    doc.rows.forEach((row, i) => {
      if (row && row.length && (ui.filter === null || row[1] === ui.filter)) shown.push(i);
    });
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
    ui.page = Math.min(ui.page, pages - 1);
    const first = ui.page * PAGE_ROWS;
    const table = h("table", "lnb-table");
    const headRow = table.appendChild(h("thead")).appendChild(h("tr"));
    for (const [name, cls] of [["", "lnb-c-label"], ["status", "lnb-c-status"], ["answer", "lnb-c-answer"], ["tokens", "lnb-num"], ["time", "lnb-num"]]) {
      headRow.appendChild(h("th", cls, name));
    }
    const body = table.appendChild(h("tbody"));
    for (const pos of shown.slice(first, first + PAGE_ROWS)) {
      const [label, st, answer, tokens, secs, error, run] = doc.rows[pos];
      const tr = body.appendChild(h("tr", hd.open === pos ? "lnb-row lnb-open" : "lnb-row"));
      tr.dataset.i = String(pos);
      tr.title = run ? `run ${run} · click to open its run view` : "not sent yet";
      tr.appendChild(h("td", "lnb-c-label", label));
      const cell = tr.appendChild(h("td", "lnb-c-status"));
      cell.appendChild(h("span", `lnb-status lnb-s-${st}`, statusName(st)));
      const text = tr.appendChild(h("td", "lnb-c-answer"));
      if (error && st !== "completed") text.appendChild(h("span", "lnb-err-text", error));
      else text.textContent = answer || "";
      tr.appendChild(h("td", "lnb-num", fmtCount(tokens)));
      tr.appendChild(h("td", "lnb-num", secs === null || secs === undefined ? "" : fmtSeconds(secs)));
      if (run) tr.addEventListener("click", () => send({ t: "open", i: pos }));
    }
    tableBox.replaceChildren(table);
    pager.replaceChildren();
    if (shown.length > PAGE_ROWS) {
      pager.appendChild(button("lnb-page", "‹", () => {
        ui.page = Math.max(0, ui.page - 1);
        draw();
      })).disabled = ui.page === 0;
      pager.appendChild(h("span", "lnb-hint", `rows ${first + 1}–${Math.min(shown.length, first + PAGE_ROWS)} of ${fmtCount(shown.length)}`));
      pager.appendChild(button("lnb-page", "›", () => {
        ui.page = Math.min(pages - 1, ui.page + 1);
        draw();
      })).disabled = ui.page >= pages - 1;
    }
  }

  function draw() {
    const doc = state.doc;
    const hd = doc.h || {};
    drawHead(hd);
    drawBar(hd);
    drawInbox(doc);
    drawTable(doc);
    const open = hd.open !== undefined && hd.open !== null ? doc.rows[hd.open] : null;
    detailHead.replaceChildren();
    if (open) {
      detailHead.appendChild(h("b", null, `item ${open[0]}`));
      detailHead.appendChild(button("lnb-close", "close", () => send({ t: "close" })));
    }
    el.dataset.n = String(doc.n);
    el.dataset.status = hd.st || "";
  }

  const stopChild = childView(model, "detail", detailBox, (empty) => detailWrap.classList.toggle("lnb-hidden", empty));
  onDisconnect(model, root, () => {
    dead = true;
    if (clock) clearInterval(clock);
    clock = null;
    ui.inboxKey = null;
    draw();
  });
  state.views.add(draw);
  draw();
  el.dataset.ready = "1";
  return () => {
    state.views.delete(draw);
    if (clock) clearInterval(clock);
    stopChild();
  };
}

export default () => {
  const { state, hooks } = docModel(() => ({ v: 1, n: 0, h: {}, rows: [], inbox: [] }), applyBatchOp);
  return {
    initialize: hooks.initialize,
    async render({ model, el }) {
      await state.ready;
      return createBatchView(state, model, el);
    },
  };
};
