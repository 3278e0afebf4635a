// letta_nb table views (batch view, dashboard): shared helpers. They only display; Python
// (letta_nb/widgets/batch_doc.py, dash_doc.py) decides what a message holds and when it goes.
// Protocol (as the run view's): Python -> here {t:"d", n, o:[ops], h?} (deflated in
// buffers[0] when z:1), {t:"doc", doc}; the `snapshot` trait holds the deflated document;
// after a gap in n this asks {t:"sync", n}.
// Safety: every text goes through textContent / createTextNode. No innerHTML anywhere.

function fmtCount(n) {
  return n === null || n === undefined ? "" : Number(n).toLocaleString();
}

function button(cls, text, onClick, title) {
  const b = h("button", `lnb-btn ${cls || ""}`.trim(), text);
  b.type = "button";
  if (title) b.title = title;
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    onClick(b, ev);
  });
  return b;
}

// One document per model, shared by every view of it; `applyOps(doc, op)` changes it.
function docModel(empty, applyOp) {
  const state = { doc: empty(), views: new Set(), ready: null, model: null };
  let queue = Promise.resolve();
  let waiting = [];
  let asked = 0;
  const notify = () => state.views.forEach((draw) => draw());

  function replace(doc) {
    if (!doc || doc.n < state.doc.n) return false;
    state.doc = doc;
    state.received = performance.now();
    const later = waiting.filter((m) => m.n > doc.n).sort((a, b) => a.n - b.n);
    waiting = [];
    for (const m of later) apply(m, true);
    notify();
    return true;
  }

  function apply(msg, quiet) {
    const doc = state.doc;
    if (msg.n <= doc.n) return;
    if (msg.n !== doc.n + 1) {
      waiting.push(msg);
      const now = Date.now();
      if (now - asked > 2000) {
        asked = now;
        state.model.send({ t: "sync", n: doc.n });
      }
      return;
    }
    for (const op of msg.o || []) applyOp(doc, op);
    if (msg.h) {
      doc.h = msg.h;
      state.received = performance.now();
    }
    doc.n = msg.n;
    if (waiting.length) {
      const next = waiting.filter((m) => m.n > doc.n).sort((a, b) => a.n - b.n);
      waiting = [];
      next.forEach((m) => apply(m, true));
    }
    if (!quiet) notify();
  }

  const run = (job) => (queue = queue.then(job).catch((err) => console.error("[letta_nb]", err)));
  const hooks = {
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
        if (!content || (content.t !== "d" && content.t !== "doc")) return;
        run(async () => {
          const msg = content.z ? await inflate(buffers[0]) : content;
          if (msg.t === "doc") replace(msg.doc);
          else apply(msg, false);
        });
      });
    },
  };
  return { state, hooks };
}

// A child widget (e.g. an item's run view) rendered inside `box` from a widget trait.
function childView(model, trait, box, onEmpty) {
  let current = null;
  let token = 0;
  async function show() {
    const mine = ++token;
    if (current) {
      current.remove();
      current = null;
    }
    box.replaceChildren();
    const ref = model.get(trait);
    onEmpty(!ref);
    if (!ref) return;
    const wm = model.widget_manager;
    if (!wm || typeof wm.create_view !== "function") {
      box.appendChild(h("div", "lnb-hint", "This front end cannot show a nested view here."));
      return;
    }
    const child = await wm.get_model(String(ref).replace(/^IPY_MODEL_/, ""));
    const view = await wm.create_view(child);
    if (mine !== token) {
      view.remove();
      return;
    }
    current = view;
    box.appendChild(view.el);
    if (typeof view.trigger === "function") view.trigger("displayed");
  }
  model.on(`change:${trait}`, show);
  show();
  return () => {
    token++;
    if (current) current.remove();
  };
}

// "The kernel went away": the view keeps its last state, without buttons.
function onDisconnect(model, root, stop) {
  let dead = false;
  model.on("comm_live_update", () => {
    if (dead) return;
    dead = true;
    root.classList.add("lnb-offline");
    stop();
  });
}
