// Safe DOM building. User text only ever reaches the page through text nodes
// (textContent / createTextNode) — never through innerHTML.

/** Escape a string for an HTML text or attribute context (for the rare string templates). */
export function escapeHtml(value) {
  return String(value ?? "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/**
 * h("div", {class: "x", testid: "thread", data: {ticketId: "t1"}, on: {click: fn}}, "text", child)
 * Strings and numbers become text nodes; null/undefined/false children are skipped;
 * arrays are flattened.
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "testid") node.dataset.testid = value;
      else if (key === "data") {
        for (const [k, v] of Object.entries(value)) {
          if (v !== undefined && v !== null) node.dataset[k] = String(v);
        }
      } else if (key === "on") {
        for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      } else if (key === "text") node.textContent = String(value);
      else if (key === "value") node.value = value;
      else if (key === "checked" || key === "disabled" || key === "selected" || key === "hidden") node[key] = !!value;
      else if (key === "href" || key === "src") {
        const safe = safeUrl(value);
        if (safe) node.setAttribute(key, safe);
      } else if (/^on/i.test(key)) {
        throw new Error("inline event handler attributes are not allowed: " + key);
      } else node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of node with the given children. */
export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** Only http(s) URLs (absolute or relative to this page) may become links or image sources. */
export function safeUrl(value) {
  if (typeof value !== "string" || !value.trim()) return null;
  try {
    const url = new URL(value.trim(), location.href);
    if (url.protocol === "http:" || url.protocol === "https:") return url.href;
  } catch (_) {
    /* not a URL */
  }
  return null;
}

/** A random id usable as a client_id (crypto.randomUUID needs a secure context). */
export function randomId() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    try {
      return crypto.randomUUID();
    } catch (_) {
      /* insecure context */
    }
  }
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** "14:05" today, otherwise "Mar 3, 14:05". */
export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  const date = d.toLocaleDateString([], { month: "short", day: "numeric", year: d.getFullYear() === now.getFullYear() ? undefined : "numeric" });
  return `${date}, ${time}`;
}
