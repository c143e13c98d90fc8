// botkit console: the live parts of the queue and conversation pages.
// Plain JavaScript, no build step. Everything a user or an agent wrote is put on the page
// with textContent, never as HTML. State-changing requests carry the page's CSRF token.
"use strict";

(() => {
  const PREFIX = "/console";
  const QUEUE_POLL_MS = 2000;
  const CONVERSATION_POLL_MS = 1500;
  const csrfToken = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  };

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data || null;
    }
  }

  const toLogin = () => {
    const next = window.location.pathname + window.location.search;
    window.location.assign(`${PREFIX}/login?next=${encodeURIComponent(next)}`);
  };

  async function api(method, path, body) {
    const options = {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    };
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = csrfToken();
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body || {});
    }
    const response = await fetch(`${PREFIX}/api${path}`, options);
    if (response.status === 401) {
      toLogin();
      throw new ApiError(401, "Your session has ended; log in again.");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message
        ? data.error.message : `The server answered ${response.status}.`;
      throw new ApiError(response.status, message, data);
    }
    return data;
  }

  // -- small DOM helpers ------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setStatus(text, kind) {
    const status = document.getElementById("status");
    if (!status) return;
    status.textContent = text || "";
    status.className = `status${kind ? ` status-${kind}` : ""}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const h = Math.floor(m / 60);
    return `${h} h ${m % 60} min`;
  }

  function localTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    const today = new Date();
    const sameDay = date.toDateString() === today.toDateString();
    return sameDay
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function timeElement(iso) {
    const node = el("time", "when", localTime(iso));
    if (iso) {
      node.setAttribute("datetime", iso);
      node.title = new Date(iso).toString();
    }
    return node;
  }

  // -- the queue --------------------------------------------------------------------------

  function queuePage() {
    const tables = ["waiting", "mine", "others"];
    let received = Date.now();
    let latest = { waiting: [], mine: [], others: [] };
    let seen = null; // ids already shown in "waiting", to mark the new ones

    function userCell(item) {
      const cell = el("td", "user");
      cell.append(el("span", null, item.user_name || "Visitor"));
      return cell;
    }

    function row(kind, item) {
      const tr = el("tr");
      tr.dataset.id = String(item.id);
      if (kind === "waiting" && seen && !seen.has(item.id)) tr.className = "new";
      const link = el("a", null, `#${item.id}`);
      link.href = `${PREFIX}/conversations/${item.id}`;
      const first = el("td");
      first.append(link, el("span", "persona", ` · ${item.persona_name}`));
      tr.append(first, el("td", "channel", item.channel), userCell(item));
      if (kind === "others") {
        tr.append(el("td", "agent", item.agent || "?"));
      } else {
        const wait = el("td", "wait", duration(item.wait_s));
        wait.dataset.waitS = String(item.wait_s);
        tr.append(wait);
      }
      tr.append(el("td", "summary", item.summary || "(no message yet)"));
      const actions = el("td", "row-actions");
      if (kind === "waiting") {
        const claim = el("button", "primary claim", "Claim");
        claim.type = "button";
        claim.setAttribute("aria-label", `Claim conversation ${item.id}`);
        claim.addEventListener("click", () => claimFromQueue(item.id, claim));
        actions.append(claim);
      }
      const open = el("a", "button", kind === "mine" ? "Open" : "View");
      open.href = `${PREFIX}/conversations/${item.id}`;
      actions.append(open);
      tr.append(actions);
      return tr;
    }

    function render() {
      for (const kind of tables) {
        const table = document.getElementById(kind);
        if (!table) continue;
        const body = table.querySelector("tbody");
        const items = latest[kind] || [];
        body.replaceChildren(...items.map((item) => row(kind, item)));
        table.hidden = items.length === 0;
        const empty = document.getElementById(`${kind}-empty`);
        if (empty) empty.hidden = items.length !== 0;
        const count = document.getElementById(`${kind}-count`);
        if (count) {
          count.textContent = String(items.length);
          count.className = kind === "waiting" && items.length ? "count count-hot" : "count";
        }
      }
      seen = new Set((latest.waiting || []).map((item) => item.id));
      const waiting = (latest.waiting || []).length;
      document.title = `${waiting ? `(${waiting}) ` : ""}Queue · botkit console`;
    }

    function tick() {
      const elapsed = (Date.now() - received) / 1000;
      for (const cell of document.querySelectorAll("td.wait")) {
        cell.textContent = duration(Number(cell.dataset.waitS) + elapsed);
      }
    }

    async function claimFromQueue(id, button) {
      button.disabled = true;
      setStatus(`Claiming conversation #${id}…`);
      try {
        await api("POST", `/conversations/${id}/claim`);
        window.location.assign(`${PREFIX}/conversations/${id}`);
      } catch (error) {
        button.disabled = false;
        setStatus(error.message, "error");
        poll(false);
      }
    }

    async function poll(again) {
      try {
        latest = await api("GET", "/queue");
        received = Date.now();
        render();
        const status = document.getElementById("status");
        if (status && status.classList.contains("status-offline")) setStatus("");
      } catch (error) {
        if (error.status !== 401) setStatus(`Cannot reach the server (${error.message}); retrying…`, "offline");
      }
      if (again) window.setTimeout(() => poll(true), QUEUE_POLL_MS);
    }

    window.setInterval(tick, 1000);
    poll(true);
  }

  // -- one conversation -------------------------------------------------------------------

  function conversationPage() {
    const id = document.body.dataset.conversation;
    const transcript = document.getElementById("transcript");
    const form = document.getElementById("reply-form");
    const textarea = document.getElementById("reply-text");
    const buttons = {
      claim: document.getElementById("claim"),
      hand_back: document.getElementById("hand-back"),
      close: document.getElementById("close"),
    };
    const shown = new Map(); // message id -> its <li>
    let lastId = 0;
    let conversation = null;
    let user = null;
    let busy = false;

    function author(message) {
      switch (message.role) {
        case "user":
          return user && user.name ? user.name : "User";
        case "assistant":
          return `Bot · ${conversation ? conversation.persona_name : "persona"}`;
        case "agent":
          return `${message.author || "Support team"} · agent`;
        default:
          return "System note";
      }
    }

    function feedbackBadge(score) {
      if (score === 1) return el("span", "fb fb-up", "+1 helpful");
      if (score === -1) return el("span", "fb fb-down", "−1 not helpful");
      return null;
    }

    function messageItem(message) {
      const role = ["user", "assistant", "agent", "system"].includes(message.role)
        ? message.role : "system";
      const li = el("li", `msg msg-${role}`);
      li.dataset.id = String(message.id);
      const head = el("div", "msg-head");
      head.append(el("span", "msg-author", author(message)), timeElement(message.created_at));
      const slot = el("span", "fb-slot");
      const badge = feedbackBadge(message.feedback);
      if (badge) slot.append(badge);
      head.append(slot);
      if (message.interrupted) head.append(el("span", "cut", "cut off"));
      li.append(head, el("div", "msg-text", message.text));
      return li;
    }

    function addMessages(messages) {
      if (!messages.length) return;
      const nearBottom = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
      for (const message of messages) {
        if (shown.has(message.id)) continue;
        const li = messageItem(message);
        shown.set(message.id, li);
        transcript.append(li);
        lastId = Math.max(lastId, message.id);
      }
      if (nearBottom || messages.some((m) => m.role === "agent")) {
        transcript.scrollTop = transcript.scrollHeight;
      }
    }

    function updateFeedback(scores) {
      for (const [messageId, li] of shown) {
        const slot = li.querySelector(".fb-slot");
        const score = scores[String(messageId)];
        const current = slot.firstChild ? slot.firstChild.className : "";
        const wanted = score === 1 ? "fb fb-up" : score === -1 ? "fb fb-down" : "";
        if (current !== wanted) {
          const badge = feedbackBadge(score);
          slot.replaceChildren(...(badge ? [badge] : []));
        }
      }
    }

    function eventText(event) {
      const who = event.actor.startsWith("agent:") ? event.actor.slice(6)
        : event.actor.startsWith("user:") ? "the user" : event.actor;
      const labels = {
        waiting_for_agent: "asked for a person",
        agent: "taken over",
        bot: "handed back to the bot",
        closed: "closed",
      };
      return `${labels[event.to] || event.to} — ${who}`;
    }

    function renderEvents(events) {
      const list = document.getElementById("events");
      list.replaceChildren(...events.map((event) => {
        const li = el("li", `event event-${event.to}`);
        li.append(timeElement(event.at), el("span", null, ` ${eventText(event)}`));
        return li;
      }));
      if (!events.length) list.append(el("li", "empty", "No handoff yet."));
    }

    function renderState() {
      const badge = document.getElementById("state");
      badge.textContent = conversation.state_label;
      badge.className = `badge state-${conversation.state}`;
      const owner = document.getElementById("owner");
      owner.textContent = conversation.state === "agent"
        ? (conversation.agent_is_me ? "by you" : `by ${conversation.agent || "another agent"}`)
        : "";
      for (const [name, button] of Object.entries(buttons)) {
        if (button) button.hidden = !conversation.can[name];
      }
      const canReply = Boolean(conversation.can.reply);
      if (form.hidden === canReply) {
        form.hidden = !canReply;
        if (canReply) textarea.focus();
      }
    }

    async function poll(again) {
      try {
        const data = await api("GET", `/conversations/${id}?after=${lastId}`);
        conversation = data.conversation;
        user = data.user;
        addMessages(data.messages);
        updateFeedback(data.feedback || {});
        renderEvents(data.events || []);
        renderState();
        const status = document.getElementById("status");
        if (status && status.classList.contains("status-offline")) setStatus("");
      } catch (error) {
        if (error.status === 403 || error.status === 404) {
          setStatus(error.message, "error");
          return; // no longer ours to see: stop polling
        }
        if (error.status !== 401) setStatus(`Cannot reach the server (${error.message}); retrying…`, "offline");
      }
      if (again) window.setTimeout(() => poll(true), CONVERSATION_POLL_MS);
    }

    async function act(path, doing, done) {
      if (busy) return;
      busy = true;
      setStatus(`${doing}…`);
      try {
        const data = await api("POST", `/conversations/${id}/${path}`);
        conversation = data.conversation;
        renderState();
        setStatus(done, "ok");
        await poll(false);
      } catch (error) {
        setStatus(error.message, "error");
        await poll(false);
      } finally {
        busy = false;
      }
    }

    buttons.claim.addEventListener("click", () => act("claim", "Claiming", "You have taken this conversation over."));
    buttons.hand_back.addEventListener("click", () => act("hand-back", "Handing back", "Handed back to the bot."));
    buttons.close.addEventListener("click", () => act("close", "Closing", "The conversation is closed."));

    async function send() {
      const text = textarea.value;
      if (!text.trim() || busy) return;
      busy = true;
      const button = document.getElementById("send");
      button.disabled = true;
      try {
        const data = await api("POST", `/conversations/${id}/reply`, { text });
        textarea.value = "";
        addMessages([data.message]);
        conversation = data.conversation;
        renderState();
        setStatus("");
      } catch (error) {
        setStatus(error.message, "error");
      } finally {
        busy = false;
        button.disabled = false;
        textarea.focus();
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send();
    });
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        send();
      }
    });

    poll(true);
  }

  // -- a persona's editor: previews of the draft -----------------------------------------

  function personaPage() {
    const name = document.body.dataset.persona;
    const text = document.getElementById("preview-text");
    const reply = document.getElementById("preview-reply");
    const replyText = document.getElementById("preview-reply-text");
    const who = document.getElementById("preview-who");
    const buttons = Array.from(document.querySelectorAll("[data-preview]"));
    let busy = false;

    // What the form would send, as {name: value}; the CSRF token travels as a header.
    function draftOf(form) {
      const draft = {};
      for (const [key, value] of new FormData(form)) {
        if (key !== "csrf_token" && typeof value === "string") draft[key] = value;
      }
      return draft;
    }

    function showFieldErrors(form, fields) {
      for (const slot of form.querySelectorAll("[data-error-for]")) {
        const message = fields[slot.dataset.errorFor] || "";
        slot.textContent = message;
        slot.hidden = !message;
        const input = form.elements.namedItem(slot.dataset.errorFor);
        if (input && input.setAttribute) {
          if (message) input.setAttribute("aria-invalid", "true");
          else input.removeAttribute("aria-invalid");
        }
      }
    }

    async function preview(button) {
      const form = document.getElementById(button.dataset.preview);
      if (!form || busy) return;
      if (!text.value.trim()) {
        setStatus("Type a test message first.", "error");
        text.focus();
        return;
      }
      busy = true;
      for (const b of buttons) b.disabled = true;
      reply.hidden = true;
      setStatus("Asking the draft…");
      try {
        const data = await api("POST", `/personas/${encodeURIComponent(name)}/preview`,
          { form: draftOf(form), text: text.value });
        showFieldErrors(form, {});
        const source = form.id === "toml-form" ? "the whole TOML" : "the form";
        who.textContent = `Draft reply (${source}) · ${data.display_name}`;
        replyText.textContent = data.reply;
        reply.hidden = false;
        setStatus("A preview only: the live persona has not changed.", "ok");
      } catch (error) {
        const fields = error.data && error.data.error && error.data.error.fields;
        showFieldErrors(form, fields || {});
        setStatus(error.message, "error");
      } finally {
        busy = false;
        for (const b of buttons) b.disabled = false;
      }
    }

    for (const button of buttons) button.addEventListener("click", () => preview(button));
    text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (buttons.length) preview(buttons[0]);
      }
    });
  }

  // -- local times in server-rendered pages ------------------------------------------------

  const page = document.body.dataset.page;
  if (page === "queue") queuePage();
  else if (page === "conversation") conversationPage();
  else if (page === "persona") personaPage();
})();
