// The agent console: speaks /ws/agent (PROTOCOL.md). No framework, no build step.
// All user-supplied text reaches the page through text nodes only (see escape.js).

import { h, setChildren, safeUrl, formatTime } from "./escape.js";
import { countSegments } from "./segments.js";

const $ = (id) => document.getElementById(id);

const TOKEN_KEY = "tidings.agent.token";
const SEQ_KEY = "tidings.agent.seq";
const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES = { mon: "Monday", tue: "Tuesday", wed: "Wednesday", thu: "Thursday", fri: "Friday", sat: "Saturday", sun: "Sunday" };
const KIND_LABELS = {
  campaign: "Campaign",
  flow: "Flow",
  keyword: "Keyword",
  autoresponder: "Autoresponder",
  welcome: "Welcome message",
  office_hours: "Office hours message",
  note: "Private note",
};
const ERROR_TEXT = {
  not_subscribed: "This profile is not subscribed to SMS, so the reply was not sent.",
  ticket_closed: "This ticket is closed.",
  blocked: "This profile is blocked.",
  cannot_reopen: "A closed web chat cannot be reopened. If the visitor writes again, a new ticket starts.",
  forbidden: "Access refused.",
  not_found: "Not found.",
  unknown_op: "The server does not know this operation.",
  disconnected: "Not connected to the server. Try again in a moment.",
};

// ---------------------------------------------------------------- state

const state = {
  token: null,
  ws: null,
  authed: false,
  authFailed: false,
  signedOut: false,
  attempt: 0,
  reconnectTimer: null,
  nextId: 1,
  pending: new Map(), // id -> {resolve, reject, op}
  lastSeq: null, // last event sequence applied
  agent: null,
  settings: null,
  badge: 0,

  tickets: new Map(), // id -> Ticket (everything we have seen)
  listIds: [], // ids shown in the list
  cursor: null,
  listLoading: false,
  listGeneration: 0,
  filters: { state: "", unread: "", channel: "", order: "activity", attributed: "", assignee: "" },
  agentIds: new Set(), // agent ids seen (ours, and assignees), offered by the assign control
  composeMode: "reply", // "reply" or "note" (a private note)

  profiles: new Map(), // id -> Profile (for names in the list)
  profileRequests: new Map(),
  attributions: new Map(), // "campaign:id" -> name

  current: null, // open ticket id
  profileOpen: null, // id of a profile shown without a ticket (from search)
  messages: [],
  profile: null, // profile of the open ticket (unfiltered activity)
  activityMetric: "",
  typingTimer: null,
  held: null, // reply held back by quiet hours: the ticket.reply arguments
  sending: false,
  qrEditing: null,
};

// ---------------------------------------------------------------- boot

function init() {
  const params = new URLSearchParams(location.search);
  const urlToken = params.get("token");
  if (urlToken) {
    sessionStorage.setItem(TOKEN_KEY, urlToken);
    params.delete("token");
    const qs = params.toString();
    history.replaceState(null, "", location.pathname + (qs ? "?" + qs : "") + location.hash);
  }
  const seq = Number.parseInt(sessionStorage.getItem(SEQ_KEY) ?? "", 10);
  if (Number.isFinite(seq) && seq >= 0) state.lastSeq = seq;

  bindStaticUi();

  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (state.token) {
    showApp();
    connect();
  } else {
    showSignin();
  }
}

function showSignin(error) {
  $("app").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.hidden = !error;
  err.textContent = error || "";
  $("signin-token").focus();
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
}

// ---------------------------------------------------------------- connection

function wsUrl(path) {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.ws) {
    const old = state.ws;
    state.ws = null;
    try {
      old.close();
    } catch (_) {
      /* ignore */
    }
  }
  state.authed = false;
  state.authFailed = false;
  state.signedOut = false;
  setConnection("connecting", "Connecting…");
  let ws;
  try {
    ws = new WebSocket(wsUrl("/ws/agent"));
  } catch (err) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  ws.addEventListener("open", () => {
    if (ws === state.ws) ws.send(JSON.stringify({ type: "auth", token: state.token }));
  });
  ws.addEventListener("message", (ev) => {
    if (ws === state.ws) onFrame(ev.data);
  });
  ws.addEventListener("close", (ev) => {
    if (ws === state.ws) onClose(ev);
  });
}

function onClose(ev) {
  state.ws = null;
  state.authed = false;
  failPending({ code: "disconnected", detail: "connection closed" });
  if (state.signedOut) return;
  if (ev.code === 4403 || state.authFailed) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    setConnection("offline", "Signed out");
    showSignin("That token was refused. Check it and try again.");
    return;
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  const delay = Math.min(10000, 500 * 2 ** state.attempt) + Math.floor(Math.random() * 300);
  state.attempt = Math.min(state.attempt + 1, 10);
  setConnection("offline", `Disconnected — reconnecting in ${Math.ceil(delay / 1000)} s`);
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, delay);
}

function failPending(error) {
  for (const [, p] of state.pending) p.reject(error);
  state.pending.clear();
}

function setConnection(kind, text) {
  const el = $("connection");
  el.dataset.state = kind;
  el.textContent = text;
}

function request(op, args = {}) {
  return new Promise((resolve, reject) => {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !state.authed) {
      reject({ code: "disconnected", detail: "not connected" });
      return;
    }
    const id = state.nextId++;
    state.pending.set(id, { resolve, reject, op });
    ws.send(JSON.stringify({ id, op, ...args }));
  });
}

function onFrame(raw) {
  let frame;
  try {
    frame = JSON.parse(raw);
  } catch (_) {
    console.warn("non-JSON frame", raw);
    return;
  }
  if (!frame || typeof frame !== "object") return;

  if (frame.id !== undefined && frame.id !== null && state.pending.has(frame.id)) {
    const p = state.pending.get(frame.id);
    state.pending.delete(frame.id);
    if (frame.ok) p.resolve(frame.result);
    else p.reject(frame.error || { code: "error", detail: "request failed" });
    return;
  }
  switch (frame.type) {
    case "ready":
      onReady(frame.agent);
      return;
    case "event":
      onEvent(frame);
      return;
    case "error":
      if (!state.authed) {
        state.authFailed = frame.code === "forbidden";
        if (state.authFailed) return; // the close (4403) that follows shows the sign-in form
      }
      toastError({ code: frame.code, detail: frame.detail });
      return;
    default:
      console.debug("unhandled frame", frame);
  }
}

async function onReady(agent) {
  state.authed = true;
  state.attempt = 0;
  state.agent = agent || null;
  noteAgentId(agent?.id);
  sessionStorage.setItem(TOKEN_KEY, state.token);
  showApp();
  setConnection("connected", "Live");
  $("agent-name").textContent = agent ? `${agent.name || agent.id} (${agent.role})` : "";
  try {
    const since = state.lastSeq;
    const res = await request("subscribe", since === null ? {} : { since });
    const serverSeq = typeof res?.seq === "number" ? res.seq : 0;
    if (state.lastSeq === null || serverSeq < state.lastSeq) {
      // First subscription, or the server's log restarted: take its position.
      setSeq(serverSeq);
    }
    await Promise.all([loadSettings(), refreshBadge(), refreshList()]);
    if (state.current) await loadTicket(state.current, { keepReply: true });
    else {
      const fromHash = /^#ticket=(.+)$/.exec(location.hash);
      if (fromHash) openTicket(decodeURIComponent(fromHash[1]));
    }
  } catch (err) {
    if (err?.code !== "disconnected") toastError(err);
  }
}

function setSeq(seq) {
  state.lastSeq = seq;
  sessionStorage.setItem(SEQ_KEY, String(seq));
}

// ---------------------------------------------------------------- events

let resyncTimer = null;

function onEvent(frame) {
  if (typeof frame.seq === "number") {
    if (state.lastSeq !== null && frame.seq <= state.lastSeq) return; // already applied
    const gap = state.lastSeq !== null && frame.seq > state.lastSeq + 1;
    setSeq(frame.seq);
    if (gap) {
      // Should never happen (seq is gap-free); reload what is on screen to be safe.
      clearTimeout(resyncTimer);
      resyncTimer = setTimeout(() => {
        refreshList();
        refreshBadge();
        if (state.current) loadTicket(state.current, { keepReply: true });
      }, 200);
    }
  }
  const data = frame.data || {};
  switch (frame.event) {
    case "ticket.created":
    case "ticket.updated":
      if (data.ticket) upsertTicket(data.ticket, frame.event === "ticket.created");
      break;
    case "message.created":
      if (data.message) onMessage(data.message);
      break;
    case "message.status":
      onMessageStatus(data.message, data.status);
      break;
    case "badge":
      setBadge(data.unread_profiles);
      break;
    case "visitor.online":
    case "visitor.offline": {
      const online = frame.event === "visitor.online";
      const t = data.ticket && state.tickets.get(data.ticket);
      if (t) {
        const patch = { visitor_online: online };
        if (online && t.followup && t.followup.status === "scheduled") patch.followup = null;
        upsertTicket({ ...t, ...patch });
      }
      if (online === false && data.ticket === state.current) hideTyping();
      break;
    }
    case "visitor.typing":
      if (data.ticket && data.ticket === state.current) showTyping();
      break;
    case "followup.scheduled":
    case "followup.sent": {
      const t = data.ticket && state.tickets.get(data.ticket);
      if (t) {
        const status = frame.event === "followup.sent" ? "sent" : "scheduled";
        upsertTicket({ ...t, followup: { status, at: data.at ?? null } });
      }
      break;
    }
    default:
      console.debug("unhandled event", frame.event, data);
  }
}

function upsertTicket(ticket, created = false) {
  noteAgentId(ticket.assignee);
  const prev = state.tickets.get(ticket.id);
  state.tickets.set(ticket.id, prev ? { ...prev, ...ticket } : ticket);
  ensureProfile(ticket.profile);

  const inList = state.listIds.includes(ticket.id);
  const serverOnly = state.filters.attributed || state.filters.order === "waiting";
  const matches = matchesFilters(state.tickets.get(ticket.id));
  if (inList && !matches) state.listIds = state.listIds.filter((id) => id !== ticket.id);
  else if (!inList && matches) {
    if (serverOnly) scheduleListRefresh();
    else state.listIds.push(ticket.id);
  } else if (serverOnly && (created || state.filters.order === "waiting")) scheduleListRefresh();
  renderListSoon();
  if (ticket.id === state.current) renderTicket();
}

function matchesFilters(t) {
  const f = state.filters;
  if (!t) return false;
  if (f.state && t.state !== f.state) return false;
  if (f.unread === "true" && !t.unread) return false;
  if (f.unread === "false" && t.unread) return false;
  if (f.channel && t.channel !== f.channel) return false;
  return matchesAssignee(t);
}

function belongsToThread(m) {
  const t = state.current && state.tickets.get(state.current);
  if (!t) return false;
  if (m.ticket === t.id) return true;
  // SMS: one thread per profile, holding campaign, flow and keyword messages (ticket null).
  return t.channel === "sms" && m.channel === "sms" && m.profile === t.profile;
}

function onMessage(m) {
  noteAttribution(m);
  if (state.filters.attributed || state.filters.order === "waiting") scheduleListRefresh();
  if (!belongsToThread(m)) return;
  addMessage(m);
  if (m.direction === "inbound") hideTyping();
  // A keyword (STOP, START…) changes consent: refresh the profile so R04 is current.
  if (m.kind === "keyword" && state.profile && m.profile === state.profile.id) refreshProfile();
}

function onMessageStatus(id, status) {
  const m = state.messages.find((x) => x.id === id);
  if (!m) return;
  m.status = status;
  replaceMessageNode(m);
}

// ---------------------------------------------------------------- badge & settings

function setBadge(n) {
  state.badge = Number(n) || 0;
  renderBadge();
}

function renderBadge() {
  const el = $("badge");
  const enabled = state.settings?.notifications?.unread_badge !== false;
  el.hidden = !enabled;
  el.textContent = String(state.badge);
  el.dataset.count = String(state.badge);
  el.classList.toggle("zero", state.badge === 0);
  el.title = `${state.badge} profile${state.badge === 1 ? "" : "s"} with unread messages`;
  document.title = (enabled && state.badge ? `(${state.badge}) ` : "") + "Inbox — tidings";
}

async function refreshBadge() {
  const res = await request("badge.get");
  setBadge(res?.unread_profiles);
}

async function loadSettings() {
  state.settings = await request("settings.get");
  renderBadge();
  const start = state.settings?.quiet_hours?.start || "08:00";
  $("schedule-0800").textContent = `Schedule for ${start}`;
}

// ---------------------------------------------------------------- ticket list

let listRefreshTimer = null;
function scheduleListRefresh() {
  clearTimeout(listRefreshTimer);
  listRefreshTimer = setTimeout(() => refreshList().catch(toastErrorUnlessOffline), 300);
}

function listArgs() {
  const f = state.filters;
  const args = { order: f.order || "activity", limit: 50 };
  if (f.state) args.state = f.state;
  if (f.unread) args.unread = f.unread === "true";
  if (f.channel) args.channel = f.channel;
  if (f.attributed) args.attributed_to = f.attributed;
  if (f.assignee) args.assignee = f.assignee;
  return args;
}

async function refreshList() {
  const generation = ++state.listGeneration;
  state.listLoading = true;
  try {
    const res = await request("tickets.list", listArgs());
    if (generation !== state.listGeneration) return;
    const tickets = res?.tickets || [];
    for (const t of tickets) {
      const prev = state.tickets.get(t.id);
      state.tickets.set(t.id, prev ? { ...prev, ...t } : t);
      ensureProfile(t.profile);
    }
    state.listIds = tickets.map((t) => t.id);
    state.cursor = res?.cursor ?? null;
  } finally {
    if (generation === state.listGeneration) state.listLoading = false;
    renderList();
  }
}

async function loadMore() {
  if (!state.cursor) return;
  const generation = state.listGeneration;
  const res = await request("tickets.list", { ...listArgs(), cursor: state.cursor });
  if (generation !== state.listGeneration) return;
  for (const t of res?.tickets || []) {
    state.tickets.set(t.id, t);
    ensureProfile(t.profile);
    if (!state.listIds.includes(t.id)) state.listIds.push(t.id);
  }
  state.cursor = res?.cursor ?? null;
  renderList();
}

let listFrame = 0;
function renderListSoon() {
  if (listFrame) return;
  listFrame = requestAnimationFrame(() => {
    listFrame = 0;
    renderList();
  });
}

function sortedListIds() {
  const ids = state.listIds.filter((id) => state.tickets.has(id));
  if (state.filters.order === "waiting") return ids; // server order (longest waiting first)
  const time = (id) => Date.parse(state.tickets.get(id).last_activity_at || state.tickets.get(id).created_at) || 0;
  return ids.sort((a, b) => time(b) - time(a));
}

function renderList() {
  const ids = sortedListIds();
  const rows = ids.map((id) => renderRow(state.tickets.get(id)));
  setChildren($("ticket-list"), rows);
  $("list-empty").hidden = ids.length > 0 || state.listLoading;
  $("load-more").hidden = !state.cursor;
}

function renderRow(t) {
  const select = () => openTicket(t.id);
  const sub = [
    h("span", { class: `chip chip-${t.channel}` }, t.channel === "sms" ? "SMS" : "Web chat"),
    t.state !== "open" && h("span", { class: `chip chip-state-${t.state}` }, t.state),
    t.state === "snoozed" && t.snoozed_until && h("span", { class: "muted" }, `until ${formatTime(t.snoozed_until)}`),
    t.channel === "webchat" && t.visitor_online === true && h("span", { class: "presence online", title: "Visitor online" }, "online"),
    t.channel === "webchat" && t.visitor_online === false && t.state !== "closed" && h("span", { class: "presence offline", title: "Visitor offline" }, "offline"),
  ];
  return h(
    "li",
    {
      class: "ticket-row" + (t.unread ? " unread" : "") + (t.id === state.current ? " selected" : ""),
      testid: "ticket-row",
      data: { ticketId: t.id, state: t.state, channel: t.channel, unread: String(!!t.unread) },
      tabindex: "0",
      role: "button",
      "aria-current": t.id === state.current ? "true" : null,
      on: {
        click: select,
        keydown: (ev) => {
          if (ev.key === "Enter" || ev.key === " ") {
            ev.preventDefault();
            select();
          }
        },
      },
    },
    t.unread ? h("span", { class: "dot", testid: "unread-dot", title: "Unread", "aria-label": "Unread" }) : h("span", { class: "dot-space" }),
    h(
      "div",
      { class: "row-main" },
      h("div", { class: "row-top" }, h("span", { class: "row-name", testid: "ticket-row-name" }, profileName(t.profile)), h("time", { class: "row-time", datetime: t.last_activity_at }, formatTime(t.last_activity_at))),
      renderPreview(t),
      h("div", { class: "row-sub" }, sub, assigneeChip(t)),
    ),
  );
}

function profileName(id) {
  const p = state.profiles.get(id);
  if (!p) return "…";
  return p.name || p.phone || p.email || "Visitor";
}

function ensureProfile(id) {
  if (!id || state.profiles.has(id) || state.profileRequests.has(id)) return;
  const req = request("profile.get", { profile: id })
    .then((p) => {
      if (p) state.profiles.set(id, p);
      renderListSoon();
      if (state.current && state.tickets.get(state.current)?.profile === id) renderTicket();
    })
    .catch(() => {})
    .finally(() => state.profileRequests.delete(id));
  state.profileRequests.set(id, req);
}

function noteAttribution(m) {
  const a = m && m.attributed_to;
  if (!a || !a.kind || !a.id) return;
  const key = `${a.kind}:${a.id}`;
  if (state.attributions.has(key)) return;
  state.attributions.set(key, a.name || a.id);
  setChildren(
    $("attributed-options"),
    [...state.attributions].map(([value, name]) => h("option", { value, label: `${name} (${value.split(":")[0]})` })),
  );
}

// ---------------------------------------------------------------- ticket view

async function openTicket(id) {
  state.profileOpen = null; // a profile shown without a ticket (search)
  if (state.current !== id) {
    state.current = id;
    state.messages = [];
    state.profile = null;
    state.activityMetric = "";
    state.held = null;
    $("reply-body").value = "";
    $("reply-media").value = "";
    hideTyping();
    closeQuickReplies();
  }
  history.replaceState(null, "", location.pathname + location.search + "#ticket=" + encodeURIComponent(id));
  renderList();
  renderTicket();
  try {
    await loadTicket(id);
    const t = state.tickets.get(id);
    // Opening an unread ticket reads it.
    if (t && t.unread && state.current === id) {
      const res = await request("ticket.mark", { ticket: id, read: true });
      if (res?.ticket) upsertTicket(res.ticket);
    }
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

async function loadTicket(id, { keepReply = false } = {}) {
  const res = await request("ticket.get", { ticket: id });
  if (state.current !== id) return;
  upsertTicket(res.ticket);
  state.messages = [];
  for (const m of res.messages || []) {
    noteAttribution(m);
    state.messages.push(m);
  }
  setProfile(res.profile, { keepMetric: keepReply });
  if (!keepReply) state.held = null;
  renderThread();
  renderTicket();
}

function currentTicket() {
  return state.current ? state.tickets.get(state.current) : null;
}

function renderTicket() {
  const t = currentTicket();
  $("no-ticket").hidden = !!t;
  $("ticket-view").hidden = !t;
  if (!t) {
    if (state.profileOpen) renderProfile();
    else setChildren($("profile-pane"));
    return;
  }
  const p = state.profile && state.profile.id === t.profile ? state.profile : state.profiles.get(t.profile);
  $("ticket-title").textContent = p ? p.name || p.phone || p.email || "Visitor" : "…";
  const meta = [
    t.channel === "sms" ? "SMS" : "Web chat",
    t.state === "snoozed" && t.snoozed_until ? `snoozed until ${formatTime(t.snoozed_until)}` : t.state,
    t.unread ? "unread" : "read",
    `started ${formatTime(t.created_at)}`,
    typeof t.first_response_s === "number" ? `first response ${formatDuration(t.first_response_s)}` : null,
  ].filter(Boolean);
  $("ticket-meta").textContent = meta.join(" · ");
  const view = $("ticket-view");
  view.dataset.ticketId = t.id;
  view.dataset.state = t.state;
  view.dataset.channel = t.channel;

  const closed = t.state === "closed";
  $("mark-read").hidden = !t.unread;
  $("mark-unread").hidden = !!t.unread;
  $("snooze-group").hidden = closed;
  $("close-ticket").hidden = closed;
  $("reopen-ticket").hidden = !(closed && t.channel === "sms");

  const ended = $("ended-banner");
  if (closed) {
    ended.hidden = false;
    ended.textContent =
      t.channel === "webchat"
        ? "This web chat has ended and cannot be reopened. If the visitor writes again, a new ticket starts."
        : "This ticket is closed. Reopen it to reply; it also reopens when the customer writes again.";
  } else if (t.state === "snoozed") {
    ended.hidden = false;
    ended.textContent = `Snoozed until ${formatTime(t.snoozed_until)}. It comes back as open and unread.`;
  } else {
    ended.hidden = true;
    ended.textContent = "";
  }

  renderAssignment(t);
  renderOfflineBanner(t, p);
  renderReplyState(t, p);
  updateSegmentCount();
  renderQuietWarning();
  renderProfile();
}

function renderOfflineBanner(t, p) {
  const banner = $("offline-banner");
  const status = $("followup-status");
  const show = t.channel === "webchat" && t.visitor_online === false && t.state !== "closed";
  banner.hidden = !show;
  if (!show) {
    status.textContent = "";
    delete status.dataset.status;
    return;
  }
  const f = t.followup;
  const enabled = state.settings?.webchat?.followup_email !== false;
  let text;
  let code;
  if (f && f.status === "sent") {
    code = "sent";
    text = `A follow-up e-mail was sent${f.at ? " at " + formatTime(f.at) : ""}.`;
  } else if (f && f.status === "scheduled") {
    code = "scheduled";
    text = `A follow-up e-mail will be sent${f.at ? " at " + formatTime(f.at) : ""} (3 minutes after your last message).`;
  } else if ((f && f.status === "impossible") || (p && !p.email)) {
    code = "impossible";
    text = "No follow-up e-mail can be sent: the visitor left no e-mail address.";
  } else if (!enabled) {
    code = "off";
    text = "Follow-up e-mails are turned off in the settings.";
  } else {
    code = "pending";
    text = "If you reply, a follow-up e-mail goes out 3 minutes after your last message.";
  }
  status.dataset.status = code;
  status.textContent = text;
}

function replyBlockReason(t, p) {
  if (!t) return "No ticket selected.";
  if (p && p.blocked) return "This profile is blocked. Unblock it to reply.";
  if (t.state === "closed") {
    return t.channel === "webchat" ? "This conversation has ended." : "This ticket is closed. Reopen it to reply.";
  }
  if (t.channel === "sms" && p && p.subscribed === false) {
    return "This profile is not subscribed to SMS. You can only reply to subscribed profiles.";
  }
  return null;
}

function renderReplyState(t, p) {
  // A private note may be written on any ticket, closed or blocked: it is never sent.
  const reason = state.composeMode === "note" ? null : replyBlockReason(t, p);
  const disabled = !!reason || state.sending;
  $("reply-body").disabled = !!reason;
  $("reply-media").disabled = !!reason;
  $("reply-send").disabled = disabled;
  $("quick-replies-toggle").disabled = !!reason || state.composeMode === "note";
  const note = $("reply-disabled-reason");
  note.hidden = !reason;
  note.textContent = reason || "";
  $("reply-form").dataset.disabled = String(!!reason);
  if (reason) closeQuickReplies();
}

function formatDuration(s) {
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// ---------------------------------------------------------------- thread

function renderThread() {
  const thread = $("thread");
  setChildren(thread, state.messages.map(renderMessage));
  thread.scrollTop = thread.scrollHeight;
}

function addMessage(m) {
  const i = state.messages.findIndex((x) => x.id === m.id);
  if (i >= 0) {
    state.messages[i] = { ...state.messages[i], ...m };
    replaceMessageNode(state.messages[i]);
    return;
  }
  state.messages.push(m);
  const thread = $("thread");
  const nearBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 120;
  thread.appendChild(renderMessage(m));
  if (nearBottom || m.direction === "outbound") thread.scrollTop = thread.scrollHeight;
}

function replaceMessageNode(m) {
  const old = [...$("thread").children].find((el) => el.dataset.messageId === m.id);
  if (old) old.replaceWith(renderMessage(m));
}

function renderMessage(m) {
  const outbound = m.direction === "outbound";
  const kindLabel = KIND_LABELS[m.kind];
  const media = outbound ? (m.media || []).map(renderMedia) : []; // R10: inbound media never shown
  const a = m.attributed_to;
  const meta = [
    h("time", { datetime: m.created_at }, formatTime(m.created_at)),
    outbound && m.author && h("span", {}, `by ${m.author === state.agent?.id ? "you" : m.author}`),
    outbound && m.status && h("span", { class: `status status-${m.status}`, testid: "message-status" }, m.status),
    outbound && m.encoding && h("span", {}, `${m.encoding}${m.segments ? ` · ${m.segments} segment${m.segments === 1 ? "" : "s"}` : ""}`),
  ];
  return h(
    "li",
    {
      class: `msg ${outbound ? "outbound" : "inbound"} kind-${m.kind || "support"}`,
      testid: "message",
      data: { messageId: m.id, direction: m.direction, kind: m.kind, status: m.status, channel: m.channel },
    },
    kindLabel && h("div", { class: "msg-kind" }, kindLabel),
    m.body ? h("div", { class: "msg-body", testid: "message-body" }, m.body) : null,
    media.length ? h("div", { class: "msg-media" }, media) : null,
    a && h("div", { class: "msg-attr", testid: "message-attribution" }, `Reply to ${a.kind} “${a.name || a.id}”`),
    h("div", { class: "msg-meta" }, meta),
  );
}

function renderMedia(url) {
  const safe = safeUrl(url);
  if (!safe) return h("span", { class: "media-bad" }, String(url));
  const img = h("img", { src: safe, alt: "Attached image", loading: "lazy", referrerpolicy: "no-referrer" });
  img.addEventListener("error", () => img.replaceWith(h("span", { class: "media-link" }, safe)), { once: true });
  return h("a", { href: safe, target: "_blank", rel: "noopener noreferrer" }, img);
}

let typingHide = null;
function showTyping() {
  $("typing").hidden = false;
  clearTimeout(typingHide);
  typingHide = setTimeout(hideTyping, 5000);
}
function hideTyping() {
  clearTimeout(typingHide);
  $("typing").hidden = true;
}

// ---------------------------------------------------------------- reply

function parseMedia(text) {
  const parts = String(text || "")
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = parts.filter((u) => !/^https?:\/\//i.test(u) || !safeUrl(u));
  return { urls: parts, bad };
}

function updateSegmentCount() {
  const el = $("segment-count");
  const t = currentTicket();
  const body = $("reply-body").value;
  if (t && t.channel === "sms" && state.composeMode !== "note") {
    const c = countSegments(body);
    el.textContent = `${c.encoding} · ${c.length}/${Math.max(c.segments, 1) * c.perSegment} · ${c.segments} segment${c.segments === 1 ? "" : "s"}`;
    el.dataset.segments = String(c.segments);
    el.dataset.encoding = c.encoding;
    el.dataset.length = String(c.length);
    el.title = "GSM-7: 160 characters in one SMS, 153 per part; UCS-2 (emoji, some accents): 70 / 67. Links may be shortened before sending.";
  } else {
    el.textContent = `${body.length} characters`;
    el.dataset.segments = "";
    el.dataset.encoding = "";
    el.dataset.length = String(body.length);
    el.title = "";
  }
  el.hidden = !t;
}

async function sendReply(extra = {}) {
  if (state.composeMode === "note" && !extra.send_anyway && !extra.schedule) return sendNote();
  const t = currentTicket();
  if (!t || state.sending) return;
  let args;
  if (extra.send_anyway || extra.schedule) {
    if (!state.held) return;
    args = { ...state.held, ...extra };
  } else {
    const body = $("reply-body").value;
    const media = parseMedia($("reply-media").value);
    if (media.bad.length) {
      toastError({ code: "bad_request", detail: `not an http(s) URL: ${media.bad[0]}` });
      return;
    }
    if (!body.trim() && !media.urls.length) return;
    args = { ticket: t.id, body };
    if (media.urls.length) args.media = media.urls;
  }
  state.sending = true;
  renderReplyState(t, state.profile);
  try {
    const res = await request("ticket.reply", stripPrivate(args));
    // Clear the box only if it still holds what was sent.
    if ($("reply-body").value === args.body) {
      $("reply-body").value = "";
      $("reply-media").value = "";
    }
    state.held = null;
    renderQuietWarning();
    if (res?.message && state.current === args.ticket) addMessage(res.message);
    if (extra.schedule && res?.message) toastInfo(`Scheduled for ${formatTime(res.message.created_at)}.`);
  } catch (err) {
    if (err?.code === "quiet_hours") {
      const { send_anyway, schedule, ...base } = args;
      state.held = { ...base, _local_time: err.local_time, _timezone: err.timezone };
      renderQuietWarning();
    } else {
      toastErrorUnlessOffline(err);
      if (err?.code === "not_subscribed" || err?.code === "blocked" || err?.code === "ticket_closed") refreshProfile();
      if (err?.code === "ticket_closed") loadTicket(args.ticket, { keepReply: true }).catch(() => {});
    }
  } finally {
    state.sending = false;
    renderReplyState(currentTicket(), state.profile);
    updateSegmentCount();
  }
}

function renderQuietWarning() {
  const box = $("quiet-hours-warning");
  const held = state.held;
  const show = !!held && held.ticket === state.current;
  box.hidden = !show;
  if (!show) return;
  const q = state.settings?.quiet_hours || { start: "08:00", end: "20:00" };
  const where = held._timezone ? ` (${held._timezone})` : "";
  const when = held._local_time ? `It is ${held._local_time} for this customer${where}` : `It is outside sending hours for this customer${where}`;
  $("quiet-hours-text").textContent = `${when}, outside sending hours (${q.start}–${q.end}). The message was not sent.`;
}

function stripPrivate(args) {
  const out = {};
  for (const [k, v] of Object.entries(args)) if (!k.startsWith("_")) out[k] = v;
  return out;
}

// ---------------------------------------------------------------- state changes

async function setTicketState(newState, until) {
  const t = currentTicket();
  if (!t) return;
  const args = { ticket: t.id, state: newState };
  if (until) args.until = until;
  try {
    const res = await request("ticket.set_state", args);
    if (res?.ticket) upsertTicket(res.ticket);
    if (newState === "snoozed" && res?.ticket?.snoozed_until) toastInfo(`Snoozed until ${formatTime(res.ticket.snoozed_until)}.`);
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

async function markRead(read) {
  const t = currentTicket();
  if (!t) return;
  try {
    const res = await request("ticket.mark", { ticket: t.id, read });
    if (res?.ticket) upsertTicket(res.ticket);
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

// ---------------------------------------------------------------- profile

function setProfile(p, { keepMetric = false } = {}) {
  if (!p) return;
  state.profiles.set(p.id, p);
  state.profile = p;
  if (!keepMetric) {
    state.activityMetric = "";
    activityShown = null;
  }
  state.profileMetrics = [...new Set((p.activity || []).map((a) => a.metric).filter(Boolean))].sort();
  renderListSoon();
  if (keepMetric && state.activityMetric) loadActivity(state.activityMetric);
}

async function refreshProfile() {
  const t = currentTicket();
  if (!t) return;
  try {
    const p = await request("profile.get", { profile: t.profile });
    if (state.current === t.id) {
      setProfile(p, { keepMetric: true });
      renderTicket();
    }
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

let activityShown = null; // activity list currently displayed (filtered or not)

async function loadActivity(metric) {
  const p = state.profile;
  if (!p) return;
  state.activityMetric = metric;
  if (!metric) {
    activityShown = null;
    renderProfile();
    return;
  }
  try {
    const res = await request("profile.get", { profile: p.id, metric });
    if (state.profile?.id !== p.id || state.activityMetric !== metric) return;
    activityShown = res?.activity || [];
    renderProfile();
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

async function blockProfile(block) {
  const p = state.profile;
  if (!p) return;
  try {
    const res = await request(block ? "profile.block" : "profile.unblock", { profile: p.id });
    if (res) setProfile(res, { keepMetric: true });
    renderTicket();
    toastInfo(block ? "Profile blocked. Its open tickets are closed." : "Profile unblocked.");
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

function renderProfile() {
  const pane = $("profile-pane");
  const t = currentTicket();
  const p = state.profile;
  if (!p || p.id !== (t ? t.profile : state.profileOpen)) {
    setChildren(pane, t ? h("p", { class: "muted" }, "Loading profile…") : null);
    return;
  }
  pane.dataset.profileId = p.id;
  const loc = p.location || {};
  const place = [loc.city, loc.region, loc.country].filter(Boolean).join(", ");
  let localTime = null;
  if (loc.timezone) {
    try {
      localTime = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", timeZone: loc.timezone });
    } catch (_) {
      localTime = null;
    }
  }
  const consent = p.consent || {};
  const activity = state.activityMetric && activityShown ? activityShown : p.activity || [];
  const metrics = [...(state.profileMetrics || [])];
  if (state.activityMetric && !metrics.includes(state.activityMetric)) metrics.push(state.activityMetric);

  const filter = h(
    "select",
    {
      testid: "activity-filter",
      "aria-label": "Filter activity by metric",
      on: { change: (ev) => loadActivity(ev.target.value) },
    },
    h("option", { value: "" }, "All metrics"),
    metrics.map((m) => h("option", { value: m, selected: m === state.activityMetric }, m)),
  );
  filter.value = state.activityMetric || "";

  setChildren(
    pane,
    h(
      "section",
      { class: "profile-head" },
      h("h3", { testid: "profile-name" }, p.name || p.phone || p.email || "Visitor"),
      p.phone && h("div", { testid: "profile-phone" }, p.phone),
      p.email && h("div", { testid: "profile-email" }, p.email),
      h(
        "div",
        {
          class: "subscribed " + (p.subscribed ? "yes" : "no"),
          testid: "profile-subscribed",
          data: { subscribed: String(!!p.subscribed) },
        },
        p.subscribed ? "Subscribed to SMS" : "Not subscribed to SMS",
      ),
      h("div", { class: "muted small" }, `Marketing: ${consent.marketing ? "yes" : "no"} · Transactional: ${consent.transactional ? "yes" : "no"}`),
      p.blocked && h("div", { class: "blocked-tag", testid: "profile-blocked" }, "Blocked"),
      h(
        "div",
        { class: "profile-actions" },
        p.blocked
          ? h("button", { type: "button", testid: "unblock-profile", on: { click: () => blockProfile(false) } }, "Unblock")
          : h("button", { type: "button", class: "danger", testid: "block-profile", on: { click: () => blockProfile(true) } }, "Block"),
      ),
    ),
    h(
      "section",
      { class: "profile-section" },
      h("h4", {}, "Location"),
      h(
        "div",
        { testid: "profile-location" },
        place || "Unknown",
        loc.timezone ? h("div", { class: "muted small" }, `${loc.timezone}${localTime ? ` · local time ${localTime}` : ""}`) : null,
      ),
    ),
    h(
      "section",
      { class: "profile-section" },
      h("div", { class: "section-head" }, h("h4", {}, "Recent activity"), filter),
      activity.length
        ? h(
            "ul",
            { class: "activity", testid: "activity-list" },
            activity.map((a) =>
              h(
                "li",
                { testid: "activity-item", data: { metric: a.metric } },
                h("div", { class: "activity-top" }, h("strong", {}, a.metric), h("time", { class: "muted small", datetime: a.time }, formatTime(a.time))),
                describeProperties(a.properties),
              ),
            ),
          )
        : h("p", { class: "muted small", testid: "activity-list" }, "No activity."),
    ),
    p.orders !== null && p.orders !== undefined
      ? h(
          "section",
          { class: "profile-section", testid: "orders" },
          h("h4", {}, "Recent orders"),
          p.orders.length
            ? h(
                "ul",
                { class: "orders" },
                p.orders.map((o) =>
                  h(
                    "li",
                    { testid: "order", data: { orderId: o.id } },
                    h("div", { class: "activity-top" }, h("strong", {}, `#${o.id}`), h("span", {}, formatMoney(o.total, o.currency))),
                    h("div", { class: "muted small" }, formatTime(o.time)),
                    h(
                      "ul",
                      { class: "order-items" },
                      (o.items || []).map((it) => h("li", {}, `${it.quantity ?? 1} × ${it.name ?? "item"}${it.price !== undefined ? ` — ${formatMoney(it.price, o.currency)}` : ""}`)),
                    ),
                  ),
                ),
              )
            : h("p", { class: "muted small" }, "No orders yet."),
        )
      : null,
  );
}

function describeProperties(props) {
  if (!props || typeof props !== "object") return null;
  const entries = Object.entries(props).slice(0, 4);
  if (!entries.length) return null;
  return h(
    "div",
    { class: "muted small props" },
    entries.map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : String(v)}`).join(" · "),
  );
}

function formatMoney(value, currency) {
  const n = Number(value);
  if (!Number.isFinite(n)) return `${value ?? ""} ${currency ?? ""}`.trim();
  try {
    return new Intl.NumberFormat([], { style: "currency", currency: currency || "USD" }).format(n);
  } catch (_) {
    return `${n.toFixed(2)} ${currency || ""}`.trim();
  }
}

// ---------------------------------------------------------------- quick replies

let qrSearchTimer = null;

function openQuickReplies() {
  $("quick-replies").hidden = false;
  $("quick-replies-toggle").setAttribute("aria-expanded", "true");
  $("quick-replies-search").focus();
  loadQuickReplies();
}

function closeQuickReplies() {
  $("quick-replies").hidden = true;
  $("quick-replies-toggle").setAttribute("aria-expanded", "false");
  resetQrEditor();
}

async function loadQuickReplies() {
  const q = $("quick-replies-search").value.trim();
  try {
    const res = await request("quick_replies.list", q ? { q } : {});
    if ($("quick-replies-search").value.trim() !== q) return; // a newer search is on its way
    const items = Array.isArray(res) ? res : res?.quick_replies || [];
    renderQuickReplies(items);
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

function renderQuickReplies(items) {
  const list = $("quick-reply-list");
  if (!items.length) {
    setChildren(list, h("li", { class: "muted small qr-empty" }, "No quick replies."));
    return;
  }
  setChildren(
    list,
    items.map((qr) =>
      h(
        "li",
        { class: "qr-item", testid: "quick-reply-item", data: { quickReplyId: qr.id }, tabindex: "0", on: { click: () => insertQuickReply(qr), keydown: (ev) => ev.key === "Enter" && insertQuickReply(qr) } },
        h("div", { class: "qr-main" }, h("strong", {}, qr.name), h("div", { class: "muted small qr-body" }, qr.body)),
        h(
          "span",
          { class: "qr-tools" },
          h("button", { type: "button", class: "link-button", testid: "quick-reply-edit", on: { click: (ev) => (ev.stopPropagation(), editQuickReply(qr)) } }, "Edit"),
          h("button", { type: "button", class: "link-button danger-text", testid: "quick-reply-delete", on: { click: (ev) => (ev.stopPropagation(), deleteQuickReply(qr)) } }, "Delete"),
        ),
      ),
    ),
  );
}

function insertQuickReply(qr) {
  const box = $("reply-body");
  const start = box.selectionStart ?? box.value.length;
  const end = box.selectionEnd ?? box.value.length;
  box.value = box.value.slice(0, start) + qr.body + box.value.slice(end);
  const pos = start + qr.body.length;
  closeQuickReplies();
  box.focus();
  box.setSelectionRange(pos, pos);
  updateSegmentCount();
}

function editQuickReply(qr) {
  state.qrEditing = qr.id;
  $("qr-name").value = qr.name;
  $("qr-body").value = qr.body;
  $("qr-editor").open = true;
  $("qr-editor").querySelector("summary").textContent = "Edit quick reply";
  $("qr-name").focus();
}

function resetQrEditor() {
  state.qrEditing = null;
  $("qr-name").value = "";
  $("qr-body").value = "";
  $("qr-editor").open = false;
  $("qr-editor").querySelector("summary").textContent = "New quick reply";
}

async function saveQuickReply() {
  const name = $("qr-name").value.trim();
  const body = $("qr-body").value;
  if (!name || !body.trim()) {
    toastError({ code: "bad_request", detail: "a quick reply needs a name and a text" });
    return;
  }
  try {
    if (state.qrEditing) await request("quick_replies.update", { quick_reply: state.qrEditing, name, body });
    else await request("quick_replies.add", { name, body });
    resetQrEditor();
    loadQuickReplies();
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

async function deleteQuickReply(qr) {
  try {
    await request("quick_replies.delete", { quick_reply: qr.id });
    if (state.qrEditing === qr.id) resetQrEditor();
    loadQuickReplies();
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

// ---------------------------------------------------------------- settings

async function openSettings() {
  try {
    state.settings = await request("settings.get");
  } catch (err) {
    toastErrorUnlessOffline(err);
    if (!state.settings) return;
  }
  renderSettingsForm(state.settings);
  const dialog = $("settings-dialog");
  if (typeof dialog.showModal === "function") dialog.showModal();
  else dialog.setAttribute("open", "");
}

function closeSettings() {
  const dialog = $("settings-dialog");
  if (typeof dialog.close === "function") dialog.close();
  else dialog.removeAttribute("open");
}

function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("span", { class: "muted small" }, hint) : null);
}

function check(label, path, value, hint) {
  return h(
    "label",
    { class: "field check" },
    h("input", { type: "checkbox", name: path, testid: `setting-${path}`, checked: !!value }),
    h("span", {}, label, hint ? h("span", { class: "muted small block" }, hint) : null),
  );
}

function text(path, value, attrs = {}) {
  return h("input", { type: "text", name: path, testid: `setting-${path}`, value: value ?? "", ...attrs });
}

function area(path, value, rows = 3) {
  return h("textarea", { name: path, testid: `setting-${path}`, rows: String(rows), value: value ?? "" });
}

function formatRanges(ranges) {
  return (ranges || []).map((r) => `${r[0]}-${r[1]}`).join(", ");
}

function renderSettingsForm(s) {
  const sms = s.sms || {};
  const auto = sms.autoresponder || {};
  const web = s.webchat || {};
  const oh = web.office_hours || {};
  const days = oh.days || {};
  const notif = s.notifications || {};
  const nte = notif.new_ticket_email || {};
  const qh = s.quiet_hours || {};

  const mode = h(
    "select",
    { name: "sms.autoresponder.mode", testid: "setting-sms.autoresponder.mode" },
    [
      ["everyone", "To everyone"],
      ["non_consented", "Only to profiles without SMS consent"],
      ["off", "Off"],
    ].map(([v, l]) => h("option", { value: v, selected: auto.mode === v }, l)),
  );
  mode.value = auto.mode || "everyone";

  setChildren(
    $("settings-form"),
    h("div", { class: "dialog-head" }, h("h2", {}, "Inbox settings"), h("button", { type: "button", class: "link-button", testid: "settings-close", on: { click: closeSettings } }, "Close")),
    h(
      "div",
      { class: "dialog-body" },
      h(
        "fieldset",
        {},
        h("legend", {}, "General"),
        check("Follow-up e-mail (web chat)", "webchat.followup_email", web.followup_email, "E-mail visitors who left during a chat, from the support address, 3 minutes after your last message."),
        check("Shorten links (SMS)", "sms.shorten_links", sms.shorten_links, "Fewer characters, fewer segments; clicks are attributed."),
        check("Unread badge (SMS and web chat)", "notifications.unread_badge", notif.unread_badge, "Shows the number of profiles with unread messages."),
        h(
          "div",
          { class: "field-group" },
          check("E-mail notification of new tickets", "notifications.new_ticket_email.enabled", nte.enabled),
          field("Recipients (comma separated)", text("notifications.new_ticket_email.recipients", (nte.recipients || []).join(", "), { placeholder: "support@example.com" })),
        ),
        h(
          "div",
          { class: "row" },
          field("Quiet hours: sending allowed from", text("quiet_hours.start", qh.start, { type: "time" })),
          field("until", text("quiet_hours.end", qh.end, { type: "time" })),
        ),
        field("Attribution window (seconds)", text("attribution_window_s", s.attribution_window_s, { type: "number", min: "0", step: "1" }), "Default 86400 (24 hours)."),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Incoming messages (SMS)"),
        field("Autoresponder", mode),
        field("Autoresponder text", area("sms.autoresponder.text", auto.text, 3), "Fields: {{ organization_prefix }}, {{ support_email }}, {{ account_name }}."),
      ),
      h(
        "fieldset",
        {},
        h("legend", {}, "Web chat"),
        field("Welcome message", area("webchat.welcome_message", web.welcome_message, 2)),
        check("Office hours", "webchat.office_hours.enabled", oh.enabled, "Inside and outside hours replace the welcome message (brand time zone)."),
        h(
          "div",
          { class: "days" },
          DAYS.map((d) => field(DAY_NAMES[d], text(`webchat.office_hours.days.${d}`, formatRanges(days[d]), { placeholder: "09:00-17:00, 18:00-20:00" }))),
        ),
        field("Message inside office hours", area("webchat.office_hours.inside_message", oh.inside_message, 2)),
        field("Message outside office hours", area("webchat.office_hours.outside_message", oh.outside_message, 2)),
      ),
      h("p", { class: "form-error", testid: "settings-error", role: "alert", hidden: true }),
    ),
    h(
      "div",
      { class: "dialog-foot" },
      h("button", { type: "button", class: "link-button", testid: "settings-cancel", on: { click: closeSettings } }, "Cancel"),
      h("button", { type: "submit", class: "primary", testid: "settings-save" }, "Save"),
    ),
  );
}

function readSettingsForm(form) {
  const get = (name) => form.elements.namedItem(name);
  const val = (name) => get(name).value;
  const on = (name) => get(name).checked;
  const days = {};
  for (const d of DAYS) {
    const raw = val(`webchat.office_hours.days.${d}`).trim();
    days[d] = raw
      ? raw.split(/[,;]+/).map((part) => {
          const m = /^\s*(\d{1,2}:\d{2})\s*[-–]\s*(\d{1,2}:\d{2})\s*$/.exec(part);
          if (!m) throw { code: "bad_request", detail: `${DAY_NAMES[d]}: write ranges like 09:00-17:00` };
          return [m[1].padStart(5, "0"), m[2].padStart(5, "0")];
        })
      : [];
  }
  const windowS = Number(val("attribution_window_s"));
  if (!Number.isFinite(windowS) || windowS < 0) throw { code: "bad_request", detail: "attribution_window_s" };
  return {
    sms: {
      shorten_links: on("sms.shorten_links"),
      autoresponder: { mode: val("sms.autoresponder.mode"), text: val("sms.autoresponder.text") },
    },
    webchat: {
      followup_email: on("webchat.followup_email"),
      welcome_message: val("webchat.welcome_message"),
      office_hours: {
        enabled: on("webchat.office_hours.enabled"),
        days,
        inside_message: val("webchat.office_hours.inside_message"),
        outside_message: val("webchat.office_hours.outside_message"),
      },
    },
    notifications: {
      unread_badge: on("notifications.unread_badge"),
      new_ticket_email: {
        enabled: on("notifications.new_ticket_email.enabled"),
        recipients: val("notifications.new_ticket_email.recipients")
          .split(/[\s,;]+/)
          .map((s) => s.trim())
          .filter(Boolean),
      },
    },
    attribution_window_s: Math.round(windowS),
    quiet_hours: { start: val("quiet_hours.start"), end: val("quiet_hours.end") },
  };
}

async function saveSettings(ev) {
  ev.preventDefault();
  const form = $("settings-form");
  const errorEl = form.querySelector('[data-testid="settings-error"]');
  errorEl.hidden = true;
  try {
    const settings = readSettingsForm(form);
    state.settings = await request("settings.update", { settings });
    renderBadge();
    loadSettings().catch(() => {});
    closeSettings();
    toastInfo("Settings saved.");
    if (currentTicket()) renderTicket();
  } catch (err) {
    errorEl.hidden = false;
    errorEl.textContent = errorText(err);
    toastErrorUnlessOffline(err);
  }
}

// ---------------------------------------------------------------- search
// messages.search and profiles.search (contract v3, "Team workflow"). A message opens its
// ticket; a customer opens their profile in the profile pane.

const search = { q: "", cursor: null, generation: 0 };

function bindSearch() {
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runSearch($("search-q").value.trim()).catch(toastErrorUnlessOffline);
  });
  $("search-q").addEventListener("input", (ev) => {
    if (!ev.target.value.trim()) closeSearch();
  });
  $("search-more").addEventListener("click", () => moreMessages().catch(toastErrorUnlessOffline));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("search-results").hidden) closeSearch();
  });
  document.addEventListener("click", (ev) => {
    if (!$("search-results").hidden && !ev.target.closest(".search")) closeSearch();
  });
}

function closeSearch() {
  search.generation += 1;
  $("search-results").hidden = true;
}

async function runSearch(q) {
  if (!q) return closeSearch();
  const generation = ++search.generation;
  const [profiles, page] = await Promise.all([
    request("profiles.search", { q }),
    request("messages.search", { q }),
  ]);
  if (generation !== search.generation) return; // a newer search was started
  search.q = q;
  search.cursor = page.cursor;
  setChildren($("search-profiles"), profiles.length ? profiles.map(renderProfileResult) : searchEmpty("No customers."));
  setChildren($("search-messages"), page.results.length ? page.results.map(renderMessageResult) : searchEmpty("No messages."));
  $("search-more").hidden = !page.cursor;
  $("search-results").hidden = false;
}

async function moreMessages() {
  const generation = search.generation;
  const page = await request("messages.search", { q: search.q, cursor: search.cursor });
  if (generation !== search.generation) return;
  search.cursor = page.cursor;
  $("search-messages").append(...page.results.map(renderMessageResult));
  $("search-more").hidden = !page.cursor;
}

function searchEmpty(text) {
  return h("li", { class: "empty" }, text);
}

function searchResult(testid, open, ...children) {
  const onKey = (ev) => {
    if (ev.key === "Enter") open();
  };
  return h("li", { testid, tabindex: "0", on: { click: open, keydown: onKey } }, ...children);
}

function renderProfileResult(p) {
  const open = () => {
    closeSearch();
    openProfile(p);
  };
  const contact = [p.phone, p.email].filter(Boolean).join(" · ");
  return searchResult("search-profile", open, h("span", { class: "search-who" }, p.name || contact || "Visitor"), p.name && contact ? h("span", { class: "muted" }, " " + contact) : null);
}

function renderMessageResult({ message: m, profile: p }) {
  const open = () => {
    closeSearch();
    if (m.ticket) openTicket(m.ticket);
    else openProfile(p);
  };
  const who = p.name || p.phone || p.email || "Visitor";
  return searchResult(
    "search-message",
    open,
    h("span", { class: "search-when" }, formatTime(m.created_at)),
    h("span", { class: "search-who" }, m.direction === "inbound" ? who : `To ${who}`),
    h("span", { class: "search-body" }, highlight(m.body.length > 200 ? m.body.slice(0, 200) + "…" : m.body, search.q)),
  );
}

// Words as the server compares them: letters and digits, without case or accents.
function foldWord(word) {
  return word.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();
}

/** `text` as text nodes, with the words of `q` in <mark> (never markup from the text). */
function highlight(text, q) {
  const wanted = new Set((q.match(/[\p{L}\p{N}]+/gu) || []).map(foldWord));
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    if (!wanted.has(foldWord(match[0]))) continue;
    parts.push(text.slice(last, match.index), h("mark", {}, match[0]));
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

/** Show a customer's profile without a ticket (a search result). */
async function openProfile(p) {
  state.current = null;
  state.profileOpen = p.id;
  history.replaceState(null, "", location.pathname + location.search);
  setProfile(await request("profile.get", { profile: p.id }));
  renderList();
  renderTicket();
}

// ---------------------------------------------------------------- team workflow
// Assignment (the "Assigned to me" and "Unassigned" views, the assign control), private
// notes and the one-line preview of each ticket (contract v3, "Team workflow").

function bindTeamUi() {
  for (const btn of document.querySelectorAll("[data-view]")) {
    btn.addEventListener("click", () => setView(btn.dataset.view));
  }
  $("assign-me").addEventListener("click", () => assignTicket(state.agent?.id ?? null));
  $("unassign").addEventListener("click", () => assignTicket(null));
  $("assign-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const id = $("assign-agent").value.trim();
    if (id) assignTicket(id);
  });
  for (const btn of document.querySelectorAll(".compose-mode")) {
    btn.addEventListener("click", () => setComposeMode(btn.dataset.mode));
  }
}

function setView(assignee) {
  state.filters.assignee = assignee;
  for (const btn of document.querySelectorAll("[data-view]")) {
    btn.setAttribute("aria-selected", String(btn.dataset.view === assignee));
  }
  refreshList().catch(toastErrorUnlessOffline);
}

function matchesAssignee(t) {
  const wanted = state.filters.assignee;
  if (!wanted) return true;
  if (wanted === "none") return !t.assignee;
  return t.assignee === (wanted === "me" ? state.agent?.id : wanted);
}

function agentLabel(id) {
  if (!id) return "nobody";
  if (id === state.agent?.id) return "you";
  return id;
}

function noteAgentId(id) {
  if (!id || state.agentIds.has(id)) return;
  state.agentIds.add(id);
  setChildren($("agent-options"), [...state.agentIds].sort().map((value) => h("option", { value })));
}

function assigneeChip(t) {
  if (!t.assignee) return null;
  const mine = t.assignee === state.agent?.id;
  return h("span", { class: "chip chip-assignee" + (mine ? " mine" : ""), testid: "ticket-row-assignee", title: `Assigned to ${agentLabel(t.assignee)}` }, `→ ${agentLabel(t.assignee)}`);
}

function renderPreview(t) {
  const last = t.last_message;
  if (!last) return null;
  const who = last.direction === "inbound" ? "" : last.kind === "support" ? "Reply: " : `${KIND_LABELS[last.kind] || last.kind}: `;
  const text = who + String(last.body || "").replace(/\s+/g, " ").trim();
  return h("div", { class: "row-preview", testid: "ticket-row-preview", title: text, data: { direction: last.direction } }, text);
}

function renderAssignment(t) {
  const label = $("ticket-assignee");
  label.textContent = t.assignee ? `Assigned to ${agentLabel(t.assignee)}` : "Unassigned";
  label.dataset.assignee = t.assignee || "";
  $("assign-me").hidden = !state.agent || t.assignee === state.agent.id;
  $("unassign").hidden = !t.assignee;
}

async function assignTicket(agent) {
  const t = currentTicket();
  if (!t) return;
  try {
    const res = await request("ticket.assign", { ticket: t.id, agent });
    if (res?.ticket) upsertTicket(res.ticket);
    $("assign-agent").value = "";
  } catch (err) {
    toastErrorUnlessOffline(err);
  }
}

function setComposeMode(mode) {
  state.composeMode = mode === "note" ? "note" : "reply";
  const note = state.composeMode === "note";
  $("reply-form").dataset.mode = state.composeMode;
  for (const btn of document.querySelectorAll(".compose-mode")) {
    btn.setAttribute("aria-selected", String(btn.dataset.mode === state.composeMode));
  }
  $("note-hint").hidden = !note;
  $("reply-media").hidden = note;
  $("reply-body").placeholder = note ? "Write a private note for your team… (Enter to add)" : "Write a reply… (Enter to send, Shift+Enter for a new line)";
  $("reply-send").textContent = note ? "Add note" : "Send";
  if (note) closeQuickReplies();
  renderReplyState(currentTicket(), state.profile);
  updateSegmentCount();
}

async function sendNote() {
  const t = currentTicket();
  const body = $("reply-body").value;
  if (!t || state.sending || !body.trim()) return;
  state.sending = true;
  renderReplyState(t, state.profile);
  try {
    const res = await request("ticket.note", { ticket: t.id, body });
    if ($("reply-body").value === body) $("reply-body").value = "";
    if (res?.message && state.current === t.id) addMessage(res.message);
  } catch (err) {
    toastErrorUnlessOffline(err);
  } finally {
    state.sending = false;
    renderReplyState(currentTicket(), state.profile);
    updateSegmentCount();
  }
}

// ---------------------------------------------------------------- toasts

function errorText(err) {
  if (!err) return "Something went wrong.";
  const code = err.code || "error";
  if (code === "bad_request") return `Invalid request${err.detail ? `: ${err.detail}` : ""}.`;
  if (code === "quiet_hours") return "Outside quiet hours for this customer.";
  const base = ERROR_TEXT[code];
  if (base) return base;
  return err.detail ? `${code}: ${err.detail}` : code;
}

function toast(kind, message, code) {
  const el = h(
    "div",
    {
      class: `toast ${kind}`,
      testid: kind === "error" ? "error-toast" : "info-toast",
      role: kind === "error" ? "alert" : "status",
      data: { code },
      on: { click: () => el.remove() },
    },
    message,
  );
  $("toasts").appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

function toastError(err) {
  console.warn("error", err);
  toast("error", errorText(err), err?.code || "error");
}

function toastErrorUnlessOffline(err) {
  if (err?.code === "disconnected") {
    toast("error", ERROR_TEXT.disconnected, "disconnected");
    return;
  }
  toastError(err);
}

function toastInfo(message) {
  toast("info", message);
}

// ---------------------------------------------------------------- static UI wiring

function bindStaticUi() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const token = $("signin-token").value.trim();
    if (!token) return;
    state.token = token;
    state.attempt = 0;
    $("signin-error").hidden = true;
    showApp();
    connect();
  });

  $("signout").addEventListener("click", () => {
    state.signedOut = true;
    clearTimeout(state.reconnectTimer);
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(SEQ_KEY);
    state.token = null;
    state.lastSeq = null;
    if (state.ws) state.ws.close(1000);
    state.ws = null;
    state.current = null;
    history.replaceState(null, "", location.pathname);
    $("signin-token").value = "";
    showSignin();
  });

  const filters = [
    ["filter-state", "state"],
    ["filter-unread", "unread"],
    ["filter-channel", "channel"],
    ["filter-order", "order"],
  ];
  for (const [id, key] of filters) {
    $(id).addEventListener("change", (ev) => {
      state.filters[key] = ev.target.value;
      refreshList().catch(toastErrorUnlessOffline);
    });
  }
  const attributed = $("filter-attributed");
  const applyAttributed = () => {
    const value = attributed.value.trim();
    if (value === state.filters.attributed) return;
    if (value && !/^(campaign|flow):.+/.test(value)) {
      toastError({ code: "bad_request", detail: "attributed_to must look like campaign:ID or flow:ID" });
      return;
    }
    state.filters.attributed = value;
    refreshList().catch(toastErrorUnlessOffline);
  };
  attributed.addEventListener("change", applyAttributed);
  attributed.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      applyAttributed();
    }
  });

  $("load-more").addEventListener("click", () => loadMore().catch(toastErrorUnlessOffline));

  $("mark-read").addEventListener("click", () => markRead(true));
  $("mark-unread").addEventListener("click", () => markRead(false));
  for (const btn of document.querySelectorAll("[data-snooze]")) {
    btn.addEventListener("click", () => setTicketState("snoozed", btn.dataset.snooze));
  }
  $("close-ticket").addEventListener("click", () => setTicketState("closed"));
  $("reopen-ticket").addEventListener("click", () => setTicketState("open"));

  $("reply-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendReply();
  });
  $("reply-body").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendReply();
    }
  });
  $("reply-body").addEventListener("input", updateSegmentCount);
  $("send-anyway").addEventListener("click", () => sendReply({ send_anyway: true }));
  $("schedule-0800").addEventListener("click", () => sendReply({ schedule: true }));
  $("quiet-cancel").addEventListener("click", () => {
    state.held = null;
    renderQuietWarning();
  });

  $("quick-replies-toggle").addEventListener("click", () => ($("quick-replies").hidden ? openQuickReplies() : closeQuickReplies()));
  $("quick-replies-search").addEventListener("input", () => {
    clearTimeout(qrSearchTimer);
    qrSearchTimer = setTimeout(loadQuickReplies, 150);
  });
  $("qr-save").addEventListener("click", saveQuickReply);
  $("qr-cancel").addEventListener("click", resetQrEditor);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !$("quick-replies").hidden) closeQuickReplies();
  });
  document.addEventListener("click", (ev) => {
    const pop = $("quick-replies");
    if (!pop.hidden && !ev.target.closest(".qr-wrap")) closeQuickReplies();
  });

  bindSearch();

  $("settings-open").addEventListener("click", openSettings);
  $("settings-form").addEventListener("submit", saveSettings);

  bindTeamUi();

  window.addEventListener("online", () => {
    if (!state.ws && state.token && !state.signedOut) connect();
  });
}

init();
