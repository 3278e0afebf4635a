// letta_nb views: the safe Markdown subset (the twin of letta_nb/core/markdown.py), shared by
// the run view and the batch view (joined into their modules; it uses their `h()`).
// Model text only ever becomes text nodes; links keep http(s)/mailto targets only.

const SAFE_HREF = /^(https?:\/\/|mailto:)/i;

const RX = {
  fence: /^\s*(```|~~~)/,
  heading: /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/,
  rule: /^\s{0,3}([-*_])(\s*\1){2,}\s*$/,
  bullet: /^\s*[-*+]\s+(.*)$/,
  number: /^\s*\d{1,9}[.)]\s+(.*)$/,
  quote: /^\s{0,3}>\s?(.*)$/,
  sep: /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/,
  inline:
    /(`+)(.+?)\1|\[([^\]\n]+)\]\(([^)\s]+)\)|\*\*(\S(?:.*?\S)?)\*\*|__(\S(?:.*?\S)?)__|\*([^*\s](?:[^*]*?[^*\s])?)\*|(?<![\w])_([^_\s](?:[^_]*?[^_\s])?)_(?![\w])/g,
};
const HEAD_TAG = { 1: "h4", 2: "h5" };

function inline(parent, text) {
  const rx = new RegExp(RX.inline.source, "g");
  let pos = 0;
  for (let m; (m = rx.exec(text)); ) {
    if (m.index > pos) parent.appendChild(document.createTextNode(text.slice(pos, m.index)));
    pos = m.index + m[0].length;
    if (m[1]) parent.appendChild(h("code", null, m[2].trim()));
    else if (m[3] !== undefined) {
      const href = m[4].trim();
      if (SAFE_HREF.test(href)) {
        const a = h("a");
        a.href = href;
        a.target = "_blank";
        a.rel = "noopener noreferrer";
        inline(a, m[3]);
        parent.appendChild(a);
      } else parent.appendChild(document.createTextNode(m[0]));
    } else if (m[5] !== undefined || m[6] !== undefined) {
      inline(parent.appendChild(h("strong")), m[5] ?? m[6]);
    } else inline(parent.appendChild(h("em")), m[7] ?? m[8]);
  }
  if (pos < text.length) parent.appendChild(document.createTextNode(text.slice(pos)));
}

function cells(line) {
  let body = line.trim();
  if (body.startsWith("|")) body = body.slice(1);
  if (body.endsWith("|") && !body.endsWith("\\|")) body = body.slice(0, -1);
  return body.split(/(?<!\\)\|/).map((c) => c.trim());
}

function isTable(line, next) {
  return line.includes("|") && next !== undefined && RX.sep.test(next) && next.includes("-");
}

function startsBlock(line, next) {
  return (
    RX.fence.test(line) || RX.heading.test(line) || RX.rule.test(line) ||
    RX.bullet.test(line) || RX.number.test(line) || RX.quote.test(line) || isTable(line, next)
  );
}

function markdown(text) {
  const frag = document.createDocumentFragment();
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  let i = 0;
  const take = (pred) => {
    const got = [];
    while (i < lines.length && pred(lines[i])) got.push(lines[i++]);
    return got;
  };
  while (i < lines.length) {
    const line = lines[i];
    const next = lines[i + 1];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = RX.fence.exec(line))) {
      i++;
      const mark = m[1];
      const code = take((s) => !s.trim().startsWith(mark));
      i++;
      frag.appendChild(h("pre")).appendChild(h("code", null, code.join("\n")));
    } else if ((m = RX.heading.exec(line))) {
      inline(frag.appendChild(h(HEAD_TAG[m[1].length] || "h6")), m[2]);
      i++;
    } else if (RX.rule.test(line)) {
      frag.appendChild(h("hr"));
      i++;
    } else if (isTable(line, next)) {
      const rows = take((s) => s.trim() && s.includes("|"));
      const aligns = cells(rows[1]).map((c) =>
        c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : "left");
      const table = frag.appendChild(h("table"));
      const row = (parent, cs, tag) => {
        const tr = parent.appendChild(h("tr"));
        cs.forEach((c, k) => {
          const cell = tr.appendChild(h(tag));
          cell.style.textAlign = aligns[k] || "left";
          inline(cell, c);
        });
      };
      row(table.appendChild(h("thead")), cells(rows[0]), "th");
      const body = table.appendChild(h("tbody"));
      rows.slice(2).forEach((r) => row(body, cells(r), "td"));
    } else if (RX.bullet.test(line) || RX.number.test(line)) {
      const rx = RX.bullet.test(line) ? RX.bullet : RX.number;
      const list = frag.appendChild(h(rx === RX.bullet ? "ul" : "ol"));
      for (const s of take((s) => rx.test(s))) inline(list.appendChild(h("li")), rx.exec(s)[1]);
    } else if (RX.quote.test(line)) {
      const quoted = take((s) => RX.quote.test(s)).map((s) => RX.quote.exec(s)[1]);
      frag.appendChild(h("blockquote")).appendChild(markdown(quoted.join("\n")));
    } else {
      const para = [line];
      i++;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) {
        para.push(lines[i++]);
      }
      const p = frag.appendChild(h("p"));
      para.forEach((s, k) => {
        if (k) p.appendChild(h("br"));
        inline(p, s);
      });
    }
  }
  return frag;
}

