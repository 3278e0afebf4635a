// letta_nb dashboard (anywidget ESM, after table_common.js). Document (dash_doc.py):
//   {v, n, h: {url, stall, live, stalled, server, err?, at?, note?, open?},
//    rows: {id: {k, ag, st, w, cv?, el?, tok?, idle?, stall?, run?, live?, a: [actions]}},
//    order: [id...]}
//   ops: ["r", id, row] sets a row, ["x", id] removes it, ["o", order] orders them.
// here -> Python: {t:"sync", n}, {t:"attach", id}, {t:"cancel", id}, {t:"close"}.

const DASH_CSS_ID = "letta-nb-dashboard-css";
const KINDS = { run: "cell run", batch: "batch", item: "batch item", server: "server" };

function applyDashOp(doc, op) {
  if (op[0] === "r") doc.rows[op[1]] = op[2];
  else if (op[0] === "x") delete doc.rows[op[1]];
  else if (op[0] === "o") doc.order = op[1];
}

function createDashboard(state, model, el) {
  installCss(DASH_CSS_ID);
  el.classList.add("lnb-dash");
  const root = el.appendChild(h("div", "lnb-root"));
  const head = root.appendChild(h("div", "lnb-head"));
  const title = head.appendChild(h("div", "lnb-title"));
  const note = head.appendChild(h("div", "lnb-ctl"));
  const alerts = root.appendChild(h("div", "lnb-alerts"));
  const tableBox = root.appendChild(h("div", "lnb-tablebox"));
  const detailWrap = root.appendChild(h("div", "lnb-detail lnb-hidden"));
  const detailHead = detailWrap.appendChild(h("div", "lnb-detail-head"));
  const detailBox = detailWrap.appendChild(h("div", "lnb-detail-body"));
  const send = (msg) => model.send(msg);
  let ticker = null;
  let dead = false;

  function draw() {
    const doc = state.doc;
    const hd = doc.h || {};
    title.replaceChildren();
    title.appendChild(h("b", "lnb-agent", "letta_nb dashboard"));
    const parts = [hd.url || "", `${hd.live || 0} live`];
    if (hd.server) parts.push(`${hd.server} on the server only`);
    for (const p of parts) {
      title.appendChild(document.createTextNode(" · "));
      title.appendChild(h("span", "lnb-part", p));
    }
    if (hd.stalled) {
      title.appendChild(document.createTextNode(" · "));
      title.appendChild(h("span", "lnb-stalled", `${hd.stalled} stalled`));
    }
    title.title = `a running row is flagged as stalled after ${hd.stall ?? 30} s without a frame`;
    note.replaceChildren();
    if (hd.note) note.appendChild(h("span", "lnb-note", hd.note));
    alerts.replaceChildren();
    if (hd.err) alerts.appendChild(h("div", "lnb-warn", `⚠ server: ${hd.err}`));

    const table = h("table", "lnb-table");
    const tr0 = table.appendChild(h("thead")).appendChild(h("tr"));
    for (const [name, cls] of [["", ""], ["agent", ""], ["what", ""], ["conversation", ""], ["status", ""], ["elapsed", "lnb-num"], ["tokens", "lnb-num"], ["last frame", "lnb-num"], ["", ""]]) {
      tr0.appendChild(h("th", cls, name));
    }
    const body = table.appendChild(h("tbody"));
    const t0 = state.received || performance.now();
    const ticks = [];
    for (const id of doc.order || []) {
      const r = doc.rows[id];
      if (!r) continue;
      const tr = body.appendChild(h("tr", `lnb-row lnb-k-${r.k}${hd.open === id ? " lnb-open" : ""}${r.stall ? " lnb-stall" : ""}`));
      tr.dataset.id = id;
      tr.title = r.run ? `run ${r.run}` : "";
      tr.appendChild(h("td", "lnb-kind", KINDS[r.k] || r.k));
      tr.appendChild(h("td", null, r.ag));
      tr.appendChild(h("td", "lnb-what", r.w || ""));
      tr.appendChild(h("td", "lnb-conv", r.cv ? String(r.cv).slice(0, 13) : ""));
      const st = tr.appendChild(h("td")).appendChild(h("span", `lnb-status lnb-s-${r.st}`, r.st === "requires_approval" ? "waiting for approval" : r.st));
      st.dataset.status = r.st;
      const el1 = tr.appendChild(h("td", "lnb-num"));
      tr.appendChild(h("td", "lnb-num", fmtCount(r.tok)));
      const idleCell = tr.appendChild(h("td", "lnb-num lnb-idle"));
      const idle = idleCell.appendChild(h("span"));
      ticks.push(() => {
        const extra = !dead ? (performance.now() - t0) / 1000 : 0;
        el1.textContent = r.el === undefined ? "" : fmtSeconds(r.el + (r.live ? extra : 0));
        if (r.idle === undefined) idle.textContent = r.k === "server" ? "–" : "";
        else idle.textContent = `${fmtSeconds(r.idle + extra)} ago`;
      });
      if (r.stall) idleCell.appendChild(h("span", "lnb-stall-flag", " stalled"));
      const acts = tr.appendChild(h("td", "lnb-acts"));
      for (const a of r.a || []) {
        acts.appendChild(button(a === "cancel" ? "lnb-cancel" : "lnb-attach", a === "attach" ? "attach" : "cancel", (b) => {
          if (a === "cancel") b.disabled = true;
          send({ t: a, id });
        }, a === "attach" ? "show its live view below" : "cancel it on the server"));
      }
    }
    if (!(doc.order || []).length) {
      const empty = body.appendChild(h("tr")).appendChild(h("td", "lnb-hint", "no runs in this kernel and none active on the server"));
      empty.colSpan = 9;
    }
    tableBox.replaceChildren(table);
    const tick = () => ticks.forEach((f) => f());
    tick();
    if (ticker) clearInterval(ticker);
    ticker = dead ? null : setInterval(tick, 1000);
    detailHead.replaceChildren();
    if (hd.open && doc.rows[hd.open]) {
      const r = doc.rows[hd.open];
      detailHead.appendChild(h("b", null, `${KINDS[r.k] || r.k} · ${r.w || r.run || ""}`));
      detailHead.appendChild(button("lnb-close", "close", () => send({ t: "close" })));
    }
    el.dataset.n = String(doc.n);
  }

  const stopChild = childView(model, "detail", detailBox, (empty) => detailWrap.classList.toggle("lnb-hidden", empty));
  onDisconnect(model, root, () => {
    dead = true;
    draw();
  });
  state.views.add(draw);
  draw();
  el.dataset.ready = "1";
  return () => {
    state.views.delete(draw);
    if (ticker) clearInterval(ticker);
    stopChild();
  };
}

export default () => {
  const { state, hooks } = docModel(() => ({ v: 1, n: 0, h: {}, rows: {}, order: [] }), applyDashOp);
  return {
    initialize: hooks.initialize,
    async render({ model, el }) {
      await state.ready;
      return createDashboard(state, model, el);
    },
  };
};
