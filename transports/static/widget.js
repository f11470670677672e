// The web chat widget: speaks /ws/chat (PROTOCOL.md). A brand's page loads it with
// <script type="module" src="https://SERVER/widget.js"></script>; it mounts a chat bubble
// in the bottom-right corner and connects back to the server it was loaded from. The
// script's data-identity-email / data-identity-phone and data-identity-signature
// attributes (signed by the brand's server) are sent as hello's identity.
// All text from the server or the visitor reaches the page through text nodes only.

import { h, setChildren, safeUrl, randomId, formatTime } from "/static/escape.js";

const SERVER = new URL(import.meta.url); // the tidings server, not the page's origin

const SESSION_KEY = "tidings.session";
const TICKET_KEY = "tidings.ticket";
const VISITOR_KEY = "tidings.visitor";
const PING_MS = 10000;
const STALE_MS = 35000; // no frame at all for this long: the socket is dead, reconnect
const TYPING_EVERY_MS = 2500;

const store = {
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch (_) {
      return null;
    }
  },
  set(key, value) {
    try {
      if (value === null || value === undefined) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (_) {
      /* storage unavailable: the session lasts as long as the page */
    }
  },
};

const state = {
  session: store.get(SESSION_KEY),
  ticket: store.get(TICKET_KEY),
  visitor: readVisitor(),
  ws: null,
  ready: false,
  attempt: 0,
  reconnectTimer: null,
  pingTimer: null,
  lastFrameAt: 0,
  lastTypingAt: 0,
  open: false,
  started: false,
  ended: false,
  unread: 0,
  items: [], // {kind:"message", message, pending, client_id, failed} | {kind:"divider", text}
  outbox: new Map(), // client_id -> item (sent but not acknowledged)
};

function readVisitor() {
  try {
    const v = JSON.parse(store.get(VISITOR_KEY) || "{}");
    return v && typeof v === "object" ? v : {};
  } catch (_) {
    return {};
  }
}

// ---------------------------------------------------------------- DOM

const ui = {};
// Ids of visitor messages already acknowledged: a pending item can only match a new one.
const ackedIds = new Set();

function svgIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "26");
  svg.setAttribute("height", "26");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z");
  svg.appendChild(path);
  return svg;
}

function mount() {
  ensureStylesheet();
  ui.unread = h("span", { class: "tw-unread", testid: "chat-unread", hidden: true });
  ui.bubble = h(
    "button",
    { type: "button", class: "tw-bubble", testid: "chat-bubble", "aria-label": "Chat with us", "aria-expanded": "false", on: { click: togglePanel } },
    svgIcon(),
    ui.unread,
  );
  ui.status = h("span", { class: "tw-status", testid: "chat-status", data: { state: "idle" } }, "");
  ui.messages = h("ol", { class: "tw-messages", testid: "chat-messages", "aria-live": "polite" });
  ui.ended = h(
    "div",
    { class: "tw-ended", testid: "chat-ended", role: "status", hidden: true },
    "This conversation has ended. Send a message to start a new one.",
  );
  ui.error = h("div", { class: "tw-error", testid: "chat-error", role: "alert", hidden: true });

  ui.email = h("input", { type: "email", class: "tw-field", testid: "chat-email", placeholder: "E-mail (so we can reply if you leave)", autocomplete: "email", value: state.visitor.email || "" });
  ui.name = h("input", { type: "text", class: "tw-field", testid: "chat-name", placeholder: "Name (optional)", autocomplete: "name", value: state.visitor.name || "" });
  ui.visitorForm = h(
    "form",
    { class: "tw-visitor", testid: "chat-visitor", on: { submit: saveVisitor } },
    ui.email,
    ui.name,
    h("button", { type: "submit", class: "tw-small", testid: "chat-visitor-save" }, "Save"),
  );
  ui.visitorToggle = h(
    "button",
    { type: "button", class: "tw-link", testid: "chat-visitor-toggle", on: { click: () => toggleVisitorForm() } },
    "",
  );

  ui.input = h("textarea", {
    class: "tw-input",
    testid: "chat-input",
    rows: "1",
    placeholder: "Write a message…",
    "aria-label": "Message",
    on: { keydown: onInputKey, input: onInputTyping },
  });
  ui.send = h("button", { type: "submit", class: "tw-send", testid: "chat-send" }, "Send");
  ui.composer = h("form", { class: "tw-composer", on: { submit: onSubmit } }, ui.input, ui.send);

  ui.panel = h(
    "section",
    { class: "tw-panel", testid: "chat-panel", role: "dialog", "aria-label": "Chat", hidden: true },
    h(
      "header",
      { class: "tw-head" },
      h("div", {}, h("div", { class: "tw-title" }, "Chat with us"), ui.status),
      h("button", { type: "button", class: "tw-close", testid: "chat-close", "aria-label": "Close chat", on: { click: togglePanel } }, "×"),
    ),
    h("div", { class: "tw-visitor-wrap" }, ui.visitorToggle, ui.visitorForm),
    ui.messages,
    ui.ended,
    ui.error,
    ui.composer,
  );

  ui.root = h("div", { class: "tw-root", id: "tidings-chat" }, ui.panel, ui.bubble);
  document.body.appendChild(ui.root);
  toggleVisitorForm(!state.visitor.email);
  render();
}

function ensureStylesheet() {
  if (document.querySelector('link[href$="/static/widget.css"]')) return;
  document.head.appendChild(h("link", { rel: "stylesheet", href: SERVER.origin + "/static/widget.css" }));
}

function toggleVisitorForm(show) {
  const visible = show === undefined ? ui.visitorForm.hidden : !!show;
  ui.visitorForm.hidden = !visible;
  ui.visitorToggle.textContent = visible
    ? "Hide"
    : state.visitor.email
      ? `Replies also go to ${state.visitor.email} · change`
      : "Add your e-mail";
}

function togglePanel() {
  state.open = !state.open;
  ui.panel.hidden = !state.open;
  ui.bubble.setAttribute("aria-expanded", String(state.open));
  ui.bubble.classList.toggle("tw-open", state.open);
  if (state.open) {
    state.unread = 0;
    renderUnread();
    if (!state.started) start();
    scrollToEnd();
    ui.input.focus();
  }
}

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.hidden = !text;
  ui.error.textContent = text || "";
  if (text) {
    clearTimeout(showError.timer);
    showError.timer = setTimeout(() => showError(""), 8000);
  }
}

function renderUnread() {
  ui.unread.hidden = state.unread === 0;
  ui.unread.textContent = String(state.unread);
}

function render() {
  setChildren(ui.messages, state.items.map(renderItem));
  ui.ended.hidden = !state.ended;
  scrollToEnd();
}

function renderItem(item) {
  if (item.kind === "divider") return h("li", { class: "tw-divider", testid: "chat-divider" }, item.text);
  const m = item.message;
  const mine = m.direction === "inbound"; // inbound = written by the visitor
  const media = mine ? [] : (m.media || []).map(renderMedia);
  return h(
    "li",
    {
      class: `tw-msg ${mine ? "tw-mine" : "tw-theirs"}${item.pending ? " tw-pending" : ""}`,
      testid: "chat-message",
      data: {
        direction: m.direction,
        kind: m.kind || "support",
        pending: String(!!item.pending),
        messageId: m.id || null,
        clientId: item.client_id || null,
      },
    },
    m.body ? h("div", { class: "tw-body" }, m.body) : null,
    media.length ? h("div", { class: "tw-media" }, media) : null,
    h("div", { class: "tw-meta" }, item.pending ? (state.ready ? "Sending…" : "Waiting for connection…") : formatTime(m.created_at)),
  );
}

function renderMedia(url) {
  const safe = safeUrl(url);
  if (!safe) return null;
  const img = h("img", { src: safe, alt: "Image", loading: "lazy", referrerpolicy: "no-referrer" });
  img.addEventListener("error", () => img.replaceWith(h("a", { href: safe, target: "_blank", rel: "noopener noreferrer" }, safe)), { once: true });
  return h("a", { href: safe, target: "_blank", rel: "noopener noreferrer" }, img);
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

// ---------------------------------------------------------------- connection

function wsUrl() {
  return (SERVER.protocol === "https:" ? "wss://" : "ws://") + SERVER.host + "/ws/chat";
}

// The identity the brand's page vouches for: the attributes of the script tag that
// loaded this module (module scripts have no document.currentScript).
function signedIdentity() {
  const tag = [...document.querySelectorAll("script[src]")].find((s) => s.src === import.meta.url);
  const data = tag ? tag.dataset : {};
  if (!data.identitySignature) return null;
  if (data.identityEmail) return { identity: { email: data.identityEmail }, signature: data.identitySignature };
  if (data.identityPhone) return { identity: { phone: data.identityPhone }, signature: data.identitySignature };
  return null;
}

function start() {
  state.started = true;
  connect();
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.ws) {
    const old = state.ws;
    state.ws = null;
    try {
      old.close(1000);
    } catch (_) {
      /* ignore */
    }
  }
  state.ready = false;
  setStatus("connecting", "Connecting…");
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (_) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.addEventListener("open", () => {
    if (ws !== state.ws) return;
    state.lastFrameAt = Date.now();
    const visitor = {};
    if (state.visitor.email) visitor.email = state.visitor.email;
    if (state.visitor.name) visitor.name = state.visitor.name;
    if (state.visitor.phone) visitor.phone = state.visitor.phone;
    ws.send(JSON.stringify({ type: "hello", session: state.session || null, visitor, ...signedIdentity() }));
  });
  ws.addEventListener("message", (ev) => {
    if (ws !== state.ws) return;
    state.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (frame && typeof frame === "object") onFrame(frame);
  });
  ws.addEventListener("close", (ev) => {
    if (ws !== state.ws) return;
    state.ws = null;
    state.ready = false;
    stopPing();
    if (ev.code === 4400) console.warn("chat: the server refused a frame", ev.reason);
    render();
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  const delay = Math.min(15000, 500 * 2 ** state.attempt) + Math.floor(Math.random() * 400);
  state.attempt = Math.min(state.attempt + 1, 10);
  setStatus("offline", "Reconnecting…");
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, delay);
}

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

function startPing() {
  stopPing();
  state.pingTimer = setInterval(() => {
    if (Date.now() - state.lastFrameAt > STALE_MS && state.ws) {
      // No pong for too long: the connection is dead even if the browser has not noticed.
      try {
        state.ws.close(4000, "stale");
      } catch (_) {
        /* ignore */
      }
      const ws = state.ws;
      state.ws = null;
      state.ready = false;
      stopPing();
      if (ws) scheduleReconnect();
      return;
    }
    send({ type: "ping" });
  }, PING_MS);
}

function stopPing() {
  clearInterval(state.pingTimer);
  state.pingTimer = null;
}

// ---------------------------------------------------------------- frames

function onFrame(frame) {
  switch (frame.type) {
    case "ready":
      onReady(frame);
      break;
    case "ack":
      onAck(frame);
      break;
    case "message":
      if (frame.message) onMessage(frame.message);
      break;
    case "closed":
      onClosed(frame.ticket);
      break;
    case "pong":
      break;
    case "error":
      showError(frame.detail || frame.code || "Something went wrong.");
      break;
    default:
      break;
  }
}

function messageItems() {
  return state.items.filter((i) => i.kind === "message");
}

function onReady(frame) {
  const sameSession = !!state.session && frame.session === state.session;
  const hadTicket = state.ticket;
  state.session = frame.session || state.session;
  store.set(SESSION_KEY, state.session);
  state.ready = true;
  state.attempt = 0;
  setStatus("online", "We're here");
  startPing();

  const serverMessages = Array.isArray(frame.messages) ? frame.messages : [];
  if (!sameSession) {
    // A new session (first visit, or the server did not know the old token).
    const pending = state.items.filter((i) => i.kind === "message" && i.pending);
    state.items = pending;
    state.ended = false;
  }
  if (frame.ticket) {
    state.ticket = frame.ticket;
    state.ended = false;
    // The server is the truth for the current ticket. Keep earlier (ended)
    // conversations shown above the last divider, and anything still pending.
    const pending = state.items.filter((i) => i.kind === "message" && i.pending);
    let lastDivider = -1;
    state.items.forEach((i, n) => {
      if (i.kind === "divider") lastDivider = n;
    });
    const earlier = state.items
      .slice(0, lastDivider + 1)
      .filter((i) => !(i.kind === "message" && (i.pending || i.message.ticket === frame.ticket)));
    state.items = [...earlier, ...serverMessages.map((m) => ({ kind: "message", message: m }))];
    // A pending message the server stored before the connection dropped shows up in
    // `messages`: count it as acknowledged instead of sending it twice.
    const claimed = new Set();
    for (const p of pending) {
      const match = serverMessages.find(
        (m) => m.direction === "inbound" && m.body === p.message.body && !claimed.has(m.id) && !ackedIds.has(m.id),
      );
      if (match) {
        claimed.add(match.id);
        ackedIds.add(match.id);
        state.outbox.delete(p.client_id);
      } else state.items.push(p);
    }
  } else {
    if (hadTicket && sameSession) {
      // Our ticket closed while we were away.
      markEnded();
    }
    state.ticket = null;
    for (const m of serverMessages) addServerMessage(m);
  }
  store.set(TICKET_KEY, state.ticket);
  render();
  flushOutbox();
}


function flushOutbox() {
  for (const item of state.outbox.values()) {
    send({ type: "message", body: item.message.body, client_id: item.client_id });
  }
  render();
}

function onAck(frame) {
  const item = state.outbox.get(frame.client_id) || state.items.find((i) => i.client_id === frame.client_id);
  state.outbox.delete(frame.client_id);
  const m = frame.message;
  if (!m) return;
  ackedIds.add(m.id);
  if (item) {
    item.pending = false;
    item.message = m;
  } else if (!state.items.some((i) => i.kind === "message" && i.message.id === m.id)) {
    state.items.push({ kind: "message", message: m });
  }
  if (m.ticket && m.ticket !== state.ticket) {
    state.ticket = m.ticket;
    store.set(TICKET_KEY, state.ticket);
  }
  state.ended = false;
  render();
}

function addServerMessage(m) {
  const existing = state.items.find((i) => i.kind === "message" && i.message.id === m.id);
  if (existing) {
    existing.message = { ...existing.message, ...m };
    return false;
  }
  state.items.push({ kind: "message", message: m });
  return true;
}

function onMessage(m) {
  const added = addServerMessage(m);
  if (m.ticket && !state.ticket) {
    state.ticket = m.ticket;
    store.set(TICKET_KEY, state.ticket);
  }
  if (added && !state.open && m.direction === "outbound") {
    state.unread += 1;
    renderUnread();
  }
  render();
}

function markEnded() {
  if (state.ended) return;
  state.ended = true;
  const last = state.items[state.items.length - 1];
  if (last && last.kind !== "divider") state.items.push({ kind: "divider", text: "Conversation ended" });
}

function onClosed(ticket) {
  if (ticket && state.ticket && ticket !== state.ticket) return;
  markEnded();
  state.ticket = null;
  store.set(TICKET_KEY, null);
  render();
}

// ---------------------------------------------------------------- visitor input

function onSubmit(ev) {
  ev.preventDefault();
  sendMessage();
}

function onInputKey(ev) {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendMessage();
  }
}

function onInputTyping() {
  const now = Date.now();
  if (state.ready && ui.input.value && now - state.lastTypingAt > TYPING_EVERY_MS) {
    state.lastTypingAt = now;
    send({ type: "typing" });
  }
}

function sendMessage() {
  const body = ui.input.value;
  if (!body.trim()) return;
  ui.input.value = "";
  const client_id = randomId();
  const item = {
    kind: "message",
    client_id,
    pending: true,
    message: { id: null, ticket: state.ticket, direction: "inbound", kind: "support", body, media: [], created_at: new Date().toISOString() },
  };
  state.items.push(item);
  state.outbox.set(client_id, item);
  state.ended = false; // the next message starts a new conversation (R07)
  if (state.ready) send({ type: "message", body, client_id });
  else if (!state.started) start();
  render();
  ui.input.focus();
}

function saveVisitor(ev) {
  ev.preventDefault();
  const email = ui.email.value.trim();
  const name = ui.name.value.trim();
  if (email && !ui.email.checkValidity()) {
    showError("Please enter a valid e-mail address.");
    return;
  }
  state.visitor = { ...state.visitor, email: email || undefined, name: name || undefined };
  store.set(VISITOR_KEY, JSON.stringify(state.visitor));
  toggleVisitorForm(false);
  // hello is the only frame that carries visitor details: reconnect so the server
  // (resuming the same session) learns them.
  if (state.started) {
    state.attempt = 0;
    connect();
  }
}

// ---------------------------------------------------------------- boot

function boot() {
  const params = new URLSearchParams(location.search);
  const fromLink = params.get("session");
  mount();
  if (fromLink) {
    // The follow-up e-mail links here with the session: resume it. A link can be
    // planted by someone else (session fixation), so a different session the visitor
    // already holds is replaced only when the visitor says so.
    const adopt =
      fromLink !== state.session &&
      (!state.session ||
        window.confirm("Continue the conversation from your e-mail link? Your current chat on this page will be replaced."));
    if (adopt) {
      state.session = fromLink;
      state.ticket = null;
      store.set(SESSION_KEY, fromLink);
      store.set(TICKET_KEY, null);
    }
    params.delete("session");
    const qs = params.toString();
    history.replaceState(null, "", location.pathname + (qs ? "?" + qs : "") + location.hash);
    togglePanel();
  } else if (state.session) {
    // A returning visitor: reconnect at once so the session stays online across reloads.
    start();
  }
  window.addEventListener("online", () => {
    if (state.started && !state.ws) {
      state.attempt = 0;
      connect();
    }
  });
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
