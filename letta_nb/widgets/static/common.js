// letta_nb views: the helpers every view module starts with (each module is some files of
// static/ joined, see letta_nb/widgets/module.py; the module's own CSS is the `CSS` constant).
// Safety: text goes through textContent only.

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function installCss(id) {
  let style = document.getElementById(id);
  if (!style) {
    style = document.createElement("style");
    style.id = id;
    document.head.appendChild(style);
  }
  if (style.textContent !== CSS) style.textContent = CSS;
}

async function inflate(buf) {
  if (!buf) return null;
  const bytes =
    buf instanceof DataView
      ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
      : new Uint8Array(buf.buffer || buf);
  if (!bytes.length) return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return JSON.parse(await new Response(stream).text());
}

// `< 0.1 s`, `4.2 s`, `3:07`, `1:02:03` (as letta_nb.core.render.format_seconds).
function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s >= 0 && s < 0.1) return "< 0.1 s";
  if (s < 60) return `${s.toFixed(1)} s`;
  const total = Math.floor(s);
  const hours = Math.floor(total / 3600);
  const mm = String(Math.floor((total % 3600) / 60)).padStart(hours ? 2 : 1, "0");
  const ss = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
}
