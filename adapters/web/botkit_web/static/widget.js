/*
 * botkit customer-service web widget.
 *
 * Embed with one tag:
 *   <script src="https://bot.example.com/widget.js" data-persona="pine"
 *           data-title="Help" data-accent="#0b6e4f" data-position="right" async></script>
 *
 * Plain JavaScript, no dependencies, no build step. Everything lives in a shadow root so
 * the host page's CSS cannot reach in. The DOM is built with createElement/textContent
 * only (never innerHTML), so nothing a reply contains can become markup. The HTTP protocol
 * is described in adapters/web/PROTOCOL.md.
 */
(function () {
  "use strict";

  // Captured synchronously: document.currentScript is only set while this runs.
  var script = document.currentScript ||
    document.querySelector('script[src$="/widget.js"][data-persona], script[src$="/widget.js"]');
  if (window.BotkitWidget || !script) {
    return; // already embedded once on this page (or no script tag to read settings from)
  }

  // ---------------------------------------------------------------------------------------
  // Every text the widget shows, in one place. {name} placeholders are filled by t().
  // ---------------------------------------------------------------------------------------
  var STRINGS = {
    en: {
      title: "Chat",
      launcherLabel: "Open chat",
      unread: "{count} unread",
      close: "Close chat",
      newConversation: "New conversation",
      send: "Send",
      inputLabel: "Your message",
      placeholder: "Type your message…",
      helpful: "Helpful",
      notHelpful: "Not helpful",
      feedbackLabel: "Was this helpful?",
      typing: "{name} is typing…",
      you: "You",
      bot: "Assistant",
      supportTeam: "Support team",
      agentLabel: "{name} · Support team",
      agentSpeaker: "{name} from the support team",
      waitingForAgent: "Waiting for a person from our team…",
      chattingWith: "You're chatting with {name}",
      chattingWithTeam: "You're chatting with our support team",
      conversationClosed: "This conversation has been closed. Write again any time to start a new one.",
      botBack: "{name} is back to help you.",
      tooLong: "Your message is too long. Please keep it under {limit} characters.",
      tooLongNoLimit: "Your message is too long. Please shorten it.",
      subtitle: "Chat with {name}",
      slowDown: "You're sending messages too fast. Please slow down and wait {seconds} seconds.",
      slowDownOne: "You're sending messages too fast. Please slow down and wait 1 second.",
      busy: "We're very busy right now. Please try again in a moment.",
      waitForReply: "Please wait for the reply before sending another message.",
      error: "Sorry, something went wrong. Please try again.",
      offline: "You seem to be offline. Please check your connection and try again.",
      replyFailed: "Sorry, this reply could not be completed. Please try again."
    },
    de: {
      title: "Chat",
      launcherLabel: "Chat öffnen",
      unread: "{count} ungelesen",
      close: "Chat schließen",
      newConversation: "Neues Gespräch",
      send: "Senden",
      inputLabel: "Ihre Nachricht",
      placeholder: "Nachricht eingeben…",
      helpful: "Hilfreich",
      notHelpful: "Nicht hilfreich",
      feedbackLabel: "War das hilfreich?",
      typing: "{name} schreibt…",
      you: "Sie",
      bot: "Assistent",
      supportTeam: "Support-Team",
      agentLabel: "{name} · Support-Team",
      agentSpeaker: "{name} vom Support-Team",
      waitingForAgent: "Warten auf eine Person aus unserem Team…",
      chattingWith: "Sie chatten mit {name}",
      chattingWithTeam: "Sie chatten mit unserem Support-Team",
      conversationClosed: "Dieses Gespräch wurde beendet. Schreiben Sie jederzeit wieder, um ein neues zu beginnen.",
      botBack: "{name} ist wieder für Sie da.",
      tooLong: "Ihre Nachricht ist zu lang. Bitte bleiben Sie unter {limit} Zeichen.",
      tooLongNoLimit: "Ihre Nachricht ist zu lang. Bitte kürzen Sie sie.",
      subtitle: "Chat mit {name}",
      slowDown: "Sie senden Nachrichten zu schnell. Bitte warten Sie {seconds} Sekunden.",
      slowDownOne: "Sie senden Nachrichten zu schnell. Bitte warten Sie 1 Sekunde.",
      busy: "Gerade ist sehr viel los. Bitte versuchen Sie es gleich noch einmal.",
      waitForReply: "Bitte warten Sie die Antwort ab, bevor Sie weiterschreiben.",
      error: "Entschuldigung, etwas ist schiefgelaufen. Bitte versuchen Sie es erneut.",
      offline: "Sie scheinen offline zu sein. Bitte prüfen Sie Ihre Verbindung und versuchen Sie es erneut.",
      replyFailed: "Entschuldigung, diese Antwort konnte nicht abgeschlossen werden. Bitte versuchen Sie es erneut."
    }
  };

  // ---------------------------------------------------------------------------------------
  // Settings from the script tag.
  // ---------------------------------------------------------------------------------------
  var data = script.dataset || {};
  var DEFAULT_ACCENT = "#0b6e4f";
  var personaName = (data.persona || "").trim();
  var accent = /^#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/i.test(data.accent || "") ?
    data.accent : DEFAULT_ACCENT;
  var position = data.position === "left" ? "left" : "right";
  var lang = pickLanguage(data.lang);
  var S = STRINGS[lang];
  // The botkit server is where this script came from (which may be another origin than
  // the page's): its origin plus the script's folder, so a server behind a path prefix
  // (https://example.com/bot/widget.js) works too.
  var base;
  try {
    var scriptUrl = new URL(script.src, document.baseURI);
    base = scriptUrl.origin === "null" ? "" :
      scriptUrl.origin + scriptUrl.pathname.replace(/\/[^\/]*$/, "");
  } catch (e) {
    base = "";
  }
  if (!base) base = window.location.origin;
  var TOKEN_KEY = "botkit:" + (personaName || "default") + ":token";
  var MAX_STREAM_TRIES = 5;
  var POLL_MS = 3000; // while a person owns the chat: how often to look for their messages
  var POLL_SOON_MS = 300; // right after a turn that handed the chat over
  var POLL_BUSY_MS = 500; // a reply is streaming or a message being sent: look again soon
  var POLL_MAX_MS = 60000; // the longest wait between tries after errors
  var STREAM_IDLE_MS = 45000; // no byte (not even a keep-alive) for this long: reconnect

  function pickLanguage(requested) {
    var candidates = [requested, navigator.language].concat(navigator.languages || []);
    for (var i = 0; i < candidates.length; i++) {
      var code = String(candidates[i] || "").toLowerCase().split(/[-_]/)[0];
      if (code && Object.prototype.hasOwnProperty.call(STRINGS, code)) return code;
    }
    return "en";
  }

  function t(key, values) {
    var text = S[key] !== undefined ? S[key] : STRINGS.en[key];
    return String(text).replace(/\{(\w+)\}/g, function (whole, name) {
      return values && values[name] !== undefined ? String(values[name]) : whole;
    });
  }

  // ---------------------------------------------------------------------------------------
  // Storage (localStorage can be blocked; fall back to memory for this page view).
  // ---------------------------------------------------------------------------------------
  var memoryToken = null;
  function loadToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY);
    } catch (e) {
      return memoryToken;
    }
  }
  function saveToken(value) {
    memoryToken = value;
    try {
      if (value) window.localStorage.setItem(TOKEN_KEY, value);
      else window.localStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* private mode: memory only */ }
  }

  // ---------------------------------------------------------------------------------------
  // Small DOM helpers.
  // ---------------------------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  var SVG_NS = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H10l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z",
    close: "M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6 10.6 12 5 6.4z",
    plus: "M11 4h2v7h7v2h-7v7h-2v-7H4v-2h7z",
    send: "M3 20.5 21.5 12 3 3.5V10l12 2-12 2z",
    thumb: "M2 10h4v11H2zM8 21V10l5-7c1.2 0 2.2 1 2 2.3L14.3 9H20a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.6 21z"
  };
  function icon(name, flip) {
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", ICONS[name]);
    path.setAttribute("fill", "currentColor");
    if (flip) path.setAttribute("transform", "rotate(180 12 12)");
    svg.appendChild(path);
    return svg;
  }

  function button(className, label, iconName) {
    var node = el("button", className);
    node.type = "button";
    node.setAttribute("aria-label", label);
    node.title = label;
    if (iconName) node.appendChild(icon(iconName));
    return node;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    // Non-secure contexts (plain http on a LAN host) lack randomUUID: build a v4 UUID.
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) {
      return (b + 0x100).toString(16).slice(1);
    }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" +
      hex.slice(16, 20) + "-" + hex.slice(20);
  }

  // Text colour readable on the accent (WCAG relative luminance).
  function contrastOn(hex) {
    var h = hex.slice(1);
    if (h.length === 3 || h.length === 4) {
      h = h.charAt(0) + h.charAt(0) + h.charAt(1) + h.charAt(1) + h.charAt(2) + h.charAt(2);
    }
    var channels = [0, 2, 4].map(function (i) {
      var c = parseInt(h.slice(i, i + 2), 16) / 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    });
    var lum = 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2];
    return (1.05 / (lum + 0.05)) >= ((lum + 0.05) / 0.05) ? "#ffffff" : "#111111";
  }

  // ---------------------------------------------------------------------------------------
  // Safe Markdown: a small subset rendered into DOM nodes (textContent only).
  // ---------------------------------------------------------------------------------------
  function safeUrl(raw) {
    try {
      var url = new URL(raw);
      if (url.protocol === "http:" || url.protocol === "https:") return url.href;
    } catch (e) { /* not an absolute URL */ }
    return null;
  }

  function link(href, label) {
    var a = el("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    if (typeof label === "string") a.textContent = label;
    else appendAll(a, label);
    return a;
  }

  function appendAll(parent, nodes) {
    for (var i = 0; i < nodes.length; i++) parent.appendChild(nodes[i]);
    return parent;
  }

  // Trailing punctuation belongs to the sentence, not the URL.
  function trimUrl(url) {
    for (;;) {
      var last = url.charAt(url.length - 1);
      if (".,;:!?'\"".indexOf(last) >= 0) {
        url = url.slice(0, -1);
      } else if (last === ")" && url.split("(").length < url.split(")").length) {
        url = url.slice(0, -1);
      } else {
        return url;
      }
    }
  }

  var INLINE = [
    { kind: "code", re: /`([^`\n]+)`/g },
    { kind: "link", re: /\[([^\]\n]+)\]\(\s*([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)\s*\)/g },
    { kind: "url", re: /\bhttps?:\/\/[^\s<>"'`]+/g },
    { kind: "strong", re: /\*\*(?=\S)([\s\S]*?\S)\*\*/g },
    { kind: "strong", re: /__(?=\S)([\s\S]*?\S)__(?!\w)/g },
    { kind: "em", re: /\*(?=[^\s*])([\s\S]*?[^\s*])\*/g },
    { kind: "em", re: /_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/g }
  ];

  // Inline Markdown to an array of nodes; `plain` turns off links (inside link labels).
  function inline(text, plain) {
    var out = [];
    var pos = 0;
    while (pos < text.length) {
      var best = null;
      for (var i = 0; i < INLINE.length; i++) {
        var rule = INLINE[i];
        if (plain && (rule.kind === "link" || rule.kind === "url")) continue;
        rule.re.lastIndex = pos;
        var m;
        // "_" emphasis only at a word boundary (snake_case stays as it is).
        while ((m = rule.re.exec(text)) !== null) {
          if (rule.kind === "em" && m[0].charAt(0) === "_" && m.index > 0 &&
              /\w/.test(text.charAt(m.index - 1))) {
            rule.re.lastIndex = m.index + 1;
            continue;
          }
          break;
        }
        if (m && (!best || m.index < best.m.index)) best = { rule: rule, m: m };
      }
      if (!best) break;
      var match = best.m;
      if (match.index > pos) out.push(document.createTextNode(text.slice(pos, match.index)));
      var whole = match[0];
      var consumed = whole.length;
      switch (best.rule.kind) {
        case "code":
          out.push(el("code", null, match[1]));
          break;
        case "link": {
          var href = safeUrl(match[2]);
          if (href) out.push(link(href, inline(match[1], true)));
          else out.push(document.createTextNode(whole)); // javascript:, data:, relative...
          break;
        }
        case "url": {
          var raw = trimUrl(whole);
          consumed = raw.length;
          var safe = safeUrl(raw);
          out.push(safe ? link(safe, raw) : document.createTextNode(raw));
          break;
        }
        case "strong":
          out.push(appendAll(el("strong"), inline(match[1], plain)));
          break;
        case "em":
          out.push(appendAll(el("em"), inline(match[1], plain)));
          break;
      }
      pos = match.index + consumed;
    }
    if (pos < text.length) out.push(document.createTextNode(text.slice(pos)));
    return out;
  }

  // Lines joined by <br>, each line's inline Markdown rendered.
  function inlineLines(lines) {
    var nodes = [];
    lines.forEach(function (line, index) {
      if (index > 0) nodes.push(el("br"));
      nodes = nodes.concat(inline(line, false));
    });
    return nodes;
  }

  var FENCE = /^\s{0,3}(```|~~~)/;
  var BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
  var ORDERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
  var HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;

  // Block Markdown to a DocumentFragment.
  function renderMarkdown(source) {
    var frag = document.createDocumentFragment();
    var lines = String(source || "").replace(/\r\n?/g, "\n").split("\n");
    var i = 0;
    var paragraph = [];

    function flushParagraph() {
      if (paragraph.length) {
        frag.appendChild(appendAll(el("p"), inlineLines(paragraph)));
        paragraph = [];
      }
    }

    while (i < lines.length) {
      var line = lines[i];
      var fence = FENCE.exec(line);
      if (fence) {
        flushParagraph();
        var code = [];
        i++;
        while (i < lines.length && !new RegExp("^\\s{0,3}" + fence[1]).test(lines[i])) {
          code.push(lines[i]);
          i++;
        }
        i++; // the closing fence (or the end of the text while it still streams)
        var pre = el("pre");
        pre.appendChild(el("code", null, code.join("\n")));
        frag.appendChild(pre);
        continue;
      }
      if (!line.trim()) {
        flushParagraph();
        i++;
        continue;
      }
      var heading = HEADING.exec(line);
      if (heading) {
        flushParagraph();
        frag.appendChild(appendAll(el("p", "bk-heading"),
          [appendAll(el("strong"), inline(heading[1], false))]));
        i++;
        continue;
      }
      var bullet = BULLET.exec(line);
      var ordered = ORDERED.exec(line);
      if (bullet || ordered) {
        flushParagraph();
        var isOrdered = !bullet;
        var list = el(isOrdered ? "ol" : "ul");
        if (isOrdered && ordered[1] !== "1") list.start = parseInt(ordered[1], 10);
        while (i < lines.length) {
          var item = isOrdered ? ORDERED.exec(lines[i]) : BULLET.exec(lines[i]);
          if (!item) break;
          var itemLines = [isOrdered ? item[2] : item[1]];
          i++;
          // Indented lines continue the item.
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) &&
                 !BULLET.test(lines[i]) && !ORDERED.test(lines[i])) {
            itemLines.push(lines[i].trim());
            i++;
          }
          list.appendChild(appendAll(el("li"), inlineLines(itemLines)));
        }
        frag.appendChild(list);
        continue;
      }
      paragraph.push(line);
      i++;
    }
    flushParagraph();
    return frag;
  }

  // Text for screen readers: block boundaries become line breaks, Markdown marks are gone.
  function speakable(node) {
    var parts = [];
    (function walk(n) {
      if (n.nodeType === 3) {
        parts.push(n.nodeValue);
        return;
      }
      var tag = n.nodeName;
      if (tag === "BR") {
        parts.push("\n");
        return;
      }
      for (var c = n.firstChild; c; c = c.nextSibling) walk(c);
      if (/^(P|LI|PRE|UL|OL)$/.test(tag)) parts.push("\n");
    })(node);
    return parts.join("").replace(/\n{2,}/g, "\n").trim();
  }

  // ---------------------------------------------------------------------------------------
  // The DOM of the widget.
  // ---------------------------------------------------------------------------------------
  var host = document.createElement("botkit-widget");
  host.setAttribute("data-botkit", personaName || "default");
  host.style.setProperty("--bk-accent", accent); // CSSOM: allowed under a strict CSP
  host.style.setProperty("--bk-on-accent", contrastOn(accent));
  var shadow = host.attachShadow({ mode: "open" });

  var stylesheet = el("link");
  stylesheet.rel = "stylesheet";
  stylesheet.href = base + "/widget/widget.css";

  var root = el("div", "bk-root bk-" + position);
  root.lang = lang;
  root.hidden = true; // until the stylesheet is in, so the page never sees it unstyled
  function reveal() { root.hidden = false; }
  stylesheet.addEventListener("load", reveal);
  stylesheet.addEventListener("error", reveal);
  setTimeout(reveal, 3000);

  var launcher = button("bk-launcher", t("launcherLabel"), "chat");
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "bk-panel");
  var badge = el("span", "bk-badge");
  badge.setAttribute("aria-hidden", "true");
  badge.setAttribute("data-testid", "bk-badge");
  badge.hidden = true;
  launcher.appendChild(badge);

  var panel = el("div", "bk-panel");
  panel.id = "bk-panel";
  panel.setAttribute("role", "dialog");
  panel.hidden = true;

  var header = el("div", "bk-header");
  var headings = el("div", "bk-headings");
  var titleEl = el("h2", "bk-title");
  titleEl.id = "bk-title";
  var subtitleEl = el("p", "bk-subtitle");
  subtitleEl.hidden = true;
  headings.appendChild(titleEl);
  headings.appendChild(subtitleEl);
  var newButton = button("bk-new", t("newConversation"), "plus");
  var closeButton = button("bk-close", t("close"), "close");
  header.appendChild(headings);
  header.appendChild(newButton);
  header.appendChild(closeButton);

  // Who owns the chat while a person does (waiting for one, or chatting with one). Not a
  // live region: the handoff notice and each team message are announced already.
  var statusLine = el("p", "bk-status");
  statusLine.id = "bk-status";
  statusLine.setAttribute("data-testid", "bk-status");
  statusLine.hidden = true;

  var log = el("div", "bk-log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "off");
  log.setAttribute("aria-labelledby", "bk-title");
  log.setAttribute("aria-describedby", "bk-status"); // empty unless a person owns the chat
  log.tabIndex = 0; // scrollable by keyboard

  var notice = el("div", "bk-notice");
  notice.setAttribute("role", "alert");
  notice.setAttribute("data-testid", "bk-notice");
  notice.hidden = true;

  var composer = el("div", "bk-composer");
  var inputLabel = el("label", "bk-vh", t("inputLabel"));
  inputLabel.htmlFor = "bk-input";
  var input = el("textarea", "bk-input");
  input.id = "bk-input";
  input.rows = 1;
  input.placeholder = t("placeholder");
  input.setAttribute("aria-label", t("inputLabel"));
  input.setAttribute("enterkeyhint", "send");
  input.autocomplete = "off";
  var sendButton = button("bk-send", t("send"), "send");
  composer.appendChild(inputLabel);
  composer.appendChild(input);
  composer.appendChild(sendButton);

  panel.appendChild(header);
  panel.appendChild(statusLine);
  panel.appendChild(log);
  panel.appendChild(notice);
  panel.appendChild(composer);

  // One polite announcement per finished reply; outside the panel so it is heard even
  // while the panel is closed.
  var announcer = el("div", "bk-announcer bk-vh");
  announcer.setAttribute("aria-live", "polite");
  announcer.setAttribute("aria-atomic", "true");
  announcer.setAttribute("data-testid", "bk-announcer");

  root.appendChild(panel);
  root.appendChild(launcher);
  root.appendChild(announcer);
  shadow.appendChild(stylesheet);
  shadow.appendChild(root);

  // ---------------------------------------------------------------------------------------
  // State.
  // ---------------------------------------------------------------------------------------
  var token = loadToken();
  var persona = { name: personaName, display_name: "", greeting: "" };
  var isOpen = false;
  var unread = 0;
  var loading = null; // the promise of the first conversation load
  var generation = 0; // bumped on reset: streams of an older conversation stop rendering
  var sending = false;
  var resetting = false;
  var activeStreams = 0;
  var streamAborts = [];
  var deadTurns = {};
  // Human handoff: who owns the conversation (PROTOCOL.md's STATE), the stored messages on
  // show (by id, so polling never shows one twice) and the newest team member's name.
  var convState = "bot";
  var seenIds = {};
  var lastAgentAuthor = "";
  var pollTimer = null;
  var pollInFlight = false;
  var pollFailures = 0;

  function displayName() {
    return persona.display_name || persona.name || t("bot");
  }

  function setTitle() {
    var title = (data.title || "").trim() || persona.display_name || t("title");
    titleEl.textContent = title;
    panel.setAttribute("aria-label", title);
    // The persona's name is always on show, also under a site-chosen title.
    var name = persona.display_name || "";
    subtitleEl.textContent = name && name !== title ? t("subtitle", { name: name }) : "";
    subtitleEl.hidden = !subtitleEl.textContent;
  }
  setTitle();

  function applyPersona(p) {
    if (p && typeof p === "object") {
      persona = {
        name: p.name || personaName,
        display_name: p.display_name || "",
        greeting: p.greeting || ""
      };
    }
    setTitle();
  }

  function setUnread(count) {
    unread = count;
    badge.hidden = count === 0;
    badge.textContent = count > 99 ? "99+" : String(count);
    launcher.setAttribute("aria-label", count ?
      t("launcherLabel") + " (" + t("unread", { count: count }) + ")" : t("launcherLabel"));
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  function announce(text) {
    if (!text) return;
    announcer.replaceChildren(document.createTextNode(text)); // one mutation, one announcement
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }
  function scrollDown(force) {
    if (force || nearBottom()) log.scrollTop = log.scrollHeight;
  }

  // ---------------------------------------------------------------------------------------
  // Messages in the log.
  // ---------------------------------------------------------------------------------------
  function messageShell(kind, speaker) {
    var row = el("div", "bk-msg bk-msg-" + kind);
    row.appendChild(el("span", "bk-vh", speaker + ": "));
    var bubble = el("div", "bk-bubble");
    var content = el("div", "bk-content");
    bubble.appendChild(content);
    row.appendChild(bubble);
    return { row: row, bubble: bubble, content: content };
  }

  function addUserMessage(text) {
    var shell = messageShell("user", t("you"));
    shell.content.textContent = text; // never Markdown: it is shown as typed
    log.appendChild(shell.row);
    scrollDown(true);
    return shell;
  }

  function addBotMessage(text, options) {
    options = options || {};
    var shell = messageShell("bot", displayName());
    if (options.greeting) shell.row.classList.add("bk-greeting");
    shell.content.appendChild(renderMarkdown(text));
    if (options.messageId) addFeedback(shell, options.messageId, options.feedback);
    log.appendChild(shell.row);
    scrollDown(false);
    return shell;
  }

  // A message from a person on the support team: their name on it, no thumbs (feedback
  // rates the bot's replies).
  function addAgentMessage(text, author) {
    var who = { name: author };
    var shell = messageShell("agent", author ? t("agentSpeaker", who) : t("supportTeam"));
    var label = el("div", "bk-author", author ? t("agentLabel", who) : t("supportTeam"));
    label.setAttribute("aria-hidden", "true"); // screen readers get the speaker line instead
    label.setAttribute("data-testid", "bk-author");
    shell.bubble.insertBefore(label, shell.content);
    shell.content.appendChild(renderMarkdown(text));
    log.appendChild(shell.row);
    scrollDown(false);
    return shell;
  }

  function authorOf(m) {
    return typeof m.author === "string" ? m.author.trim() : "";
  }

  function hasId(m) {
    return m && (typeof m.id === "number" || typeof m.id === "string") && m.id !== "";
  }

  function addStoredMessage(m) {
    if (!m || typeof m !== "object") return null;
    var shell = null;
    if (m.role === "user") shell = addUserMessage(m.text || "");
    else if (m.role === "assistant") {
      shell = addBotMessage(m.text || "", { messageId: m.id, feedback: m.feedback });
    } else if (m.role === "agent") {
      lastAgentAuthor = authorOf(m);
      shell = addAgentMessage(m.text || "", lastAgentAuthor);
    }
    if (hasId(m)) {
      seenIds[String(m.id)] = true;
      if (shell) shell.row.setAttribute("data-message-id", String(m.id));
    }
    return shell;
  }

  // A line in the log from the widget itself (not a stored message).
  function addSystemLine(text) {
    var line = el("p", "bk-system", text);
    line.setAttribute("data-testid", "bk-system");
    log.appendChild(line);
    scrollDown(false);
    return line;
  }

  function showGreeting() {
    if (persona.greeting) addBotMessage(persona.greeting, { greeting: true });
  }

  function addFeedback(shell, messageId, current) {
    shell.row.setAttribute("data-message-id", String(messageId));
    var group = el("div", "bk-feedback");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", t("feedbackLabel"));
    var up = button("bk-thumb bk-up", t("helpful"));
    up.appendChild(icon("thumb"));
    var down = button("bk-thumb bk-down", t("notHelpful"));
    down.appendChild(icon("thumb", true));
    var score = current === 1 || current === -1 ? current : 0;

    function show(value) {
      up.setAttribute("aria-pressed", value === 1 ? "true" : "false");
      down.setAttribute("aria-pressed", value === -1 ? "true" : "false");
    }
    function vote(value) {
      if (score === value) return;
      var before = score;
      score = value;
      show(value);
      api("POST", "/widget/api/feedback", { message_id: messageId, score: value })
        .then(function (r) {
          if (r.status !== 200) throw new Error("feedback " + r.status);
        })
        .catch(function () {
          score = before;
          show(before);
          showNotice(t("error"));
        });
    }
    up.addEventListener("click", function () { vote(1); });
    down.addEventListener("click", function () { vote(-1); });
    show(score);
    group.appendChild(up);
    group.appendChild(down);
    shell.row.appendChild(group);
  }

  function clearLog() {
    log.replaceChildren();
    seenIds = {};
    lastAgentAuthor = "";
  }

  // ---------------------------------------------------------------------------------------
  // Human handoff: who owns the chat, and polling for the team's messages while a person
  // does (the web channel has no push).
  // ---------------------------------------------------------------------------------------
  function isHuman(state) {
    return state === "waiting_for_agent" || state === "agent";
  }

  function setState(state) {
    if (state !== "waiting_for_agent" && state !== "agent" && state !== "closed") state = "bot";
    convState = state;
    panel.setAttribute("data-state", state);
    var text = "";
    if (state === "waiting_for_agent") text = t("waitingForAgent");
    else if (state === "agent") {
      text = lastAgentAuthor ? t("chattingWith", { name: lastAgentAuthor }) : t("chattingWithTeam");
    }
    statusLine.textContent = text;
    statusLine.hidden = !text;
    if (!isHuman(state)) stopPolling();
    else if (!pollTimer && !pollInFlight) schedulePoll(POLL_MS);
  }

  function schedulePoll(delay) {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(pollOnce, delay);
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
    pollFailures = 0;
  }

  function pollAgain(delay) {
    if (isHuman(convState) && !pollTimer) schedulePoll(delay);
  }

  // One more look right away (after a turn that handed the chat over, the team may have
  // joined already), then every POLL_MS again.
  function pollSoon() {
    if (isHuman(convState) && !pollInFlight) schedulePoll(POLL_SOON_MS);
  }

  function pollOnce() {
    pollTimer = null;
    if (!isHuman(convState) || !token || pollInFlight) return;
    // A hidden tab does not poll; becoming visible again polls at once (below).
    if (document.visibilityState === "hidden") return;
    if (activeStreams || sending || resetting) {
      schedulePoll(POLL_BUSY_MS);
      return;
    }
    var myGeneration = generation;
    pollInFlight = true;
    api("GET", "/widget/api/conversation").then(function (r) {
      pollInFlight = false;
      if (myGeneration !== generation || activeStreams || sending || resetting) {
        // Reset, reloaded or a turn started meanwhile: this answer may be stale.
        pollAgain(POLL_BUSY_MS);
        return;
      }
      if (r.status === 200 && r.data) {
        pollFailures = 0;
        applyPoll(r.data);
        pollAgain(POLL_MS);
        return;
      }
      if (r.status === 401) {
        setState("bot"); // the session is gone; the next message starts a new one
        return;
      }
      pollFailures++;
      var retry = Number(errorOf(r).retry_after || (r.headers && r.headers.get("Retry-After")));
      pollAgain(Math.max(backoff(), retry > 0 ? retry * 1000 : 0));
    }, function () {
      pollInFlight = false;
      pollFailures++;
      pollAgain(backoff());
    });
  }

  function backoff() {
    return Math.min(POLL_MS * Math.pow(2, pollFailures), POLL_MAX_MS);
  }

  // Is this (polled) list of messages still the conversation on show?
  function sameConversation(messages) {
    var any = false;
    for (var id in seenIds) {
      if (!Object.prototype.hasOwnProperty.call(seenIds, id)) continue;
      any = true;
      for (var i = 0; i < messages.length; i++) {
        if (hasId(messages[i]) && String(messages[i].id) === id) return true;
      }
    }
    return !any;
  }

  function applyPoll(conv) {
    var messages = Array.isArray(conv.messages) ? conv.messages : [];
    if (!sameConversation(messages)) {
      // The conversation on show is over (closed by the team: the server now has none, or
      // a new one started elsewhere).
      if (messages.length) applyConversation(conv);
      else announce(conversationClosed());
      return;
    }
    var spoken = [];
    var fresh = 0;
    messages.forEach(function (m) {
      if (!m || typeof m !== "object" || !hasId(m) || seenIds[String(m.id)]) return;
      if (m.role === "user") {
        seenIds[String(m.id)] = true; // shown when it was sent
        return;
      }
      var shell = addStoredMessage(m);
      if (!shell) return;
      fresh++;
      var words = speakable(shell.content);
      if (m.role === "agent") spoken.push((authorOf(m) || t("supportTeam")) + ": " + words);
      else spoken.push(words);
    });
    if (fresh && !isOpen) setUnread(unread + fresh);
    if (conv.state === "closed") {
      var closedText = conversationClosed();
      if (closedText) spoken.push(closedText);
    } else {
      if (conv.state === "bot" && isHuman(convState)) {
        // Handed back to the bot (its "back" message is not stored on the web channel).
        var back = t("botBack", { name: displayName() });
        addSystemLine(back);
        spoken.push(back);
      }
      setState(conv.state);
    }
    if (spoken.length) announce(spoken.join("\n")); // one announcement per poll
    if (fresh) scrollDown(false);
  }

  // The team closed the conversation; returns what to announce.
  function conversationClosed() {
    if (convState === "closed") return "";
    var text = t("conversationClosed");
    addSystemLine(text);
    if (!isOpen) setUnread(unread + 1);
    setState("closed"); // the next message starts a new conversation (on the server)
    return text;
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "hidden" && isHuman(convState) && !pollInFlight) {
      schedulePoll(0);
    }
  });

  // ---------------------------------------------------------------------------------------
  // HTTP.
  // ---------------------------------------------------------------------------------------
  function api(method, path, body) {
    var headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(base + path, {
      method: method,
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      mode: "cors"
    }).then(function (res) {
      return res.text().then(function (raw) {
        var parsed = null;
        try { parsed = raw ? JSON.parse(raw) : null; } catch (e) { parsed = null; }
        return { status: res.status, data: parsed, headers: res.headers };
      });
    });
  }

  function errorOf(r) {
    return (r && r.data && r.data.error) || {};
  }

  function createSession() {
    token = null;
    var body = personaName ? { persona: personaName } : {};
    return api("POST", "/widget/api/sessions", body).then(function (r) {
      if ((r.status !== 201 && r.status !== 200) || !r.data || !r.data.token) {
        throw Object.assign(new Error("session " + r.status), { response: r });
      }
      token = r.data.token;
      saveToken(token);
      applyPersona(r.data.persona);
      generation++;
      clearLog();
      setState("bot");
      showGreeting();
    });
  }

  function applyConversation(conv) {
    generation++;
    abortStreams();
    applyPersona(conv.persona);
    clearLog();
    showGreeting();
    (Array.isArray(conv.messages) ? conv.messages : []).forEach(addStoredMessage);
    // "closed" only shows for a conversation that is over: the next message starts afresh.
    setState(conv.state === "closed" ? "bot" : conv.state);
    scrollDown(true);
    var pending = conv.pending;
    if (pending && pending.turn_id && !deadTurns[pending.turn_id]) {
      // From the start: no Last-Event-ID.
      followTurn(pending.turn_id, startBotReply(isHuman(convState)), null);
    }
  }

  function loadConversation() {
    if (!token) return createSession();
    return api("GET", "/widget/api/conversation").then(function (r) {
      if (r.status === 200 && r.data) {
        applyConversation(r.data);
        return;
      }
      if (r.status === 401) {
        saveToken(null);
        return createSession();
      }
      throw Object.assign(new Error("conversation " + r.status), { response: r });
    });
  }

  function ensureLoaded() {
    if (!loading) {
      loading = loadConversation().catch(function (err) {
        loading = null;
        throw err;
      });
    }
    return loading;
  }

  // What to tell the visitor about an error answer (the typed text always stays put).
  function problemText(r) {
    var error = errorOf(r);
    if (r.status === 413) {
      return error.code !== "body_too_large" && error.limit ?
        t("tooLong", { limit: error.limit }) : t("tooLongNoLimit");
    }
    if (r.status === 429) {
      var seconds = Math.max(1, Math.ceil(Number(error.retry_after ||
        (r.headers && r.headers.get("Retry-After")) || 1) || 1));
      return seconds === 1 ? t("slowDownOne") : t("slowDown", { seconds: seconds });
    }
    if (r.status === 503) return t("busy");
    if (r.status === 409) return t("waitForReply");
    return t("error");
  }

  function failureText(err) {
    if (err && err.response) return problemText(err.response);
    return t(navigator.onLine === false ? "offline" : "error");
  }

  // ---------------------------------------------------------------------------------------
  // Streaming a turn's events (Server-Sent Events read with fetch, so we can send headers).
  // ---------------------------------------------------------------------------------------
  // quiet: a person owns the chat, so the bot most likely says nothing: no typing dots,
  // and the row stays hidden unless some text does come (the chat was handed back).
  function startBotReply(quiet) {
    var shell = messageShell("bot", displayName());
    shell.row.classList.add("bk-streaming");
    if (quiet) {
      shell.row.hidden = true;
      log.appendChild(shell.row);
      return shell;
    }
    var typing = el("div", "bk-typing");
    typing.setAttribute("data-testid", "bk-typing");
    var dots = el("span", "bk-dots");
    dots.setAttribute("aria-hidden", "true");
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    dots.appendChild(el("span"));
    typing.appendChild(dots);
    typing.appendChild(el("span", "bk-vh", t("typing", { name: displayName() })));
    shell.content.appendChild(typing);
    shell.typing = typing;
    log.appendChild(shell.row);
    log.setAttribute("aria-busy", "true");
    scrollDown(true);
    return shell;
  }

  function abortStreams() {
    streamAborts.splice(0).forEach(function (abort) { abort(); });
  }

  // Parse an SSE body; calls onEvent({id, event, data}) for each complete event.
  function readEvents(body, onEvent, onBytes) {
    var reader = body.pipeThrough(new TextDecoderStream()).getReader();
    var buffer = "";
    var fields = { id: null, event: "", data: [] };

    function line(text) {
      if (text === "") {
        if (fields.data.length) {
          onEvent({ id: fields.id, event: fields.event || "message", data: fields.data.join("\n") });
        }
        fields = { id: null, event: "", data: [] };
        return;
      }
      if (text.charAt(0) === ":") return; // keep-alive comment
      var colon = text.indexOf(":");
      var name = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1);
      if (value.charAt(0) === " ") value = value.slice(1);
      if (name === "id") fields.id = value;
      else if (name === "event") fields.event = value;
      else if (name === "data") fields.data.push(value);
    }

    function drain(final) {
      for (;;) {
        var m = /\r\n|\n|\r/.exec(buffer);
        if (!m) break;
        if (m[0] === "\r" && m.index === buffer.length - 1 && !final) break; // maybe \r\n
        line(buffer.slice(0, m.index));
        buffer = buffer.slice(m.index + m[0].length);
      }
    }

    function pump() {
      return reader.read().then(function (chunk) {
        if (chunk.done) {
          drain(true);
          return;
        }
        onBytes();
        buffer += chunk.value;
        drain(false);
        return pump();
      });
    }
    return pump();
  }

  function followTurn(turnId, shell, fromId) {
    var myGeneration = generation;
    var lastId = fromId; // null: from the start
    var text = "";
    var finished = false;
    var failures = 0;
    var controller = null;
    var stopped = false;
    var renderQueued = false;
    activeStreams++;

    function stop() {
      stopped = true;
      if (controller) controller.abort();
    }
    streamAborts.push(stop);

    function current() {
      return !stopped && myGeneration === generation;
    }

    function renderStreaming() {
      renderQueued = false;
      if (!current() || finished) return;
      var stick = nearBottom();
      shell.content.replaceChildren(renderMarkdown(text));
      if (stick) scrollDown(true);
    }

    function finish() {
      finished = true;
      shell.row.classList.remove("bk-streaming");
      if (shell.typing && shell.typing.parentNode) shell.typing.remove();
      var index = streamAborts.indexOf(stop);
      if (index >= 0) streamAborts.splice(index, 1);
    }

    function onEvent(ev) {
      if (!current() || finished) return;
      if (ev.id !== null && ev.id !== "") {
        var n = Number(ev.id);
        if (lastId !== null && !isNaN(n) && n <= Number(lastId)) return; // already seen
        lastId = ev.id;
      }
      failures = 0;
      var payload = {};
      try { payload = JSON.parse(ev.data); } catch (e) { payload = {}; }
      if (ev.event === "delta") {
        shell.row.hidden = false;
        if (shell.typing && shell.typing.parentNode) {
          shell.typing.remove();
          shell.typing = null;
        }
        text += typeof payload.text === "string" ? payload.text : "";
        if (!renderQueued) {
          renderQueued = true;
          requestAnimationFrame(renderStreaming);
        }
      } else if (ev.event === "done") {
        var final = typeof payload.text === "string" ? payload.text : text;
        var handoff = typeof payload.handoff === "string" ? payload.handoff : null;
        finish();
        if (!final && (handoff || payload.duplicate)) {
          // A person owns the chat (or the server had answered this already): the bot
          // said nothing, so no bubble. The team's replies come by polling.
          shell.row.remove();
          if (notice.textContent === t("waitForReply")) showNotice("");
          if (handoff) {
            setState(handoff);
            pollSoon();
          }
          return;
        }
        shell.row.hidden = false;
        shell.content.replaceChildren(renderMarkdown(final));
        if (payload.message_id !== undefined && payload.message_id !== null) {
          seenIds[String(payload.message_id)] = true;
          addFeedback(shell, payload.message_id, null);
        }
        replyFinished(speakable(shell.content));
        if (handoff) {
          // The handoff notice: look for the team's messages from now on (and at once).
          setState(handoff);
          pollSoon();
        } else if (final && (isHuman(convState) || convState === "closed")) {
          setState("bot"); // the bot answered: the chat is the bot's again
        }
      } else if (ev.event === "error") {
        var why = t(payload.code === "busy" ? "busy" : "replyFailed");
        shell.row.hidden = false;
        finish();
        if (text) shell.content.replaceChildren(renderMarkdown(text));
        showBubbleError(shell, why);
        replyFinished(why);
      }
    }

    function attempt() {
      if (!current() || finished) return Promise.resolve();
      controller = new AbortController();
      var idleTimer = null;
      var idled = false;
      function touch() {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(function () {
          idled = true;
          controller.abort();
        }, STREAM_IDLE_MS);
      }
      var headers = { Accept: "text/event-stream" };
      if (token) headers.Authorization = "Bearer " + token;
      if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
      touch();
      return fetch(base + "/widget/api/turns/" + encodeURIComponent(turnId) + "/events", {
        headers: headers,
        credentials: "omit",
        cache: "no-store",
        mode: "cors",
        signal: controller.signal
      }).then(function (res) {
        if (res.status === 404 || res.status === 401 || res.status === 403) {
          return { gone: res.status };
        }
        if (!res.ok || !res.body) throw new Error("events " + res.status);
        return readEvents(res.body, onEvent, touch);
      }).then(function (outcome) {
        clearTimeout(idleTimer);
        return outcome;
      }, function (err) {
        clearTimeout(idleTimer);
        if (!current()) return null; // reset or reload: stop quietly
        if (err && err.name === "AbortError" && !idled) return null;
        return null; // a network drop: retried below
      });
    }

    function loop() {
      return attempt().then(function (outcome) {
        if (finished || !current()) return;
        if (outcome && outcome.gone) {
          // The turn's events expired (or the session did): the conversation has the reply.
          finish();
          shell.row.remove();
          deadTurns[turnId] = true;
          if (outcome.gone === 404) {
            return loadConversation().catch(function () { showNotice(t("error")); });
          }
          showNotice(t("error"));
          return;
        }
        failures++;
        if (failures > MAX_STREAM_TRIES) {
          shell.row.hidden = false;
          finish();
          if (text) shell.content.replaceChildren(renderMarkdown(text));
          showBubbleError(shell, t(navigator.onLine === false ? "offline" : "replyFailed"));
          replyFinished(null);
          return;
        }
        return sleep(500 * Math.pow(2, failures - 1)).then(loop);
      });
    }

    return loop().then(function () {
      activeStreams--;
      if (!activeStreams) log.removeAttribute("aria-busy");
    }, function () {
      activeStreams--;
      if (!activeStreams) log.removeAttribute("aria-busy");
    });
  }

  function showBubbleError(shell, message) {
    if (shell.typing && shell.typing.parentNode) shell.typing.remove();
    var line = el("p", "bk-error", message);
    line.setAttribute("data-testid", "bk-error");
    shell.bubble.appendChild(line);
    shell.row.classList.add("bk-failed");
  }

  function replyFinished(spoken) {
    if (notice.textContent === t("waitForReply")) showNotice("");
    if (spoken) announce(spoken);
    if (!isOpen) setUnread(unread + 1);
    scrollDown(false);
  }

  // ---------------------------------------------------------------------------------------
  // Sending.
  // ---------------------------------------------------------------------------------------
  function postMessage(text, clientId) {
    // A network error is retried with the same client_message_id: the server answers once.
    var tries = 0;
    function go() {
      return api("POST", "/widget/api/messages", { text: text, client_message_id: clientId })
        .catch(function (err) {
          tries++;
          if (tries >= 3) throw err;
          return sleep(500 * tries).then(go);
        });
    }
    return go();
  }

  function send() {
    var text = input.value;
    if (!text.trim() || sending || resetting) return;
    if (activeStreams) {
      showNotice(t("waitForReply")); // the text stays in the input
      return;
    }
    sending = true;
    sendButton.setAttribute("aria-disabled", "true");
    var clientId = uuid();
    var renewed = false;

    function attemptSend() {
      return postMessage(text, clientId).then(function (r) {
        if (r.status === 401 && !renewed) {
          renewed = true;
          saveToken(null);
          return createSession().then(attemptSend);
        }
        return r;
      });
    }

    ensureLoaded()
      .then(attemptSend)
      .then(function (r) {
        if (r.status === 202 || r.status === 200) {
          if (input.value === text) input.value = "";
          autosize();
          showNotice("");
          addUserMessage(text);
          var turnId = r.data && r.data.turn_id;
          if (turnId) followTurn(turnId, startBotReply(isHuman(convState)), null);
          return;
        }
        showNotice(problemText(r));
      })
      .catch(function (err) {
        showNotice(failureText(err)); // the text stays in the input
      })
      .then(function () {
        sending = false;
        sendButton.removeAttribute("aria-disabled");
      });
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 160) + "px";
  }

  // ---------------------------------------------------------------------------------------
  // Open, close, new conversation.
  // ---------------------------------------------------------------------------------------
  function open() {
    if (isOpen) return;
    isOpen = true;
    panel.hidden = false;
    root.classList.add("bk-open");
    launcher.setAttribute("aria-expanded", "true");
    setUnread(0);
    input.focus();
    scrollDown(true);
    ensureLoaded().then(function () {
      scrollDown(true);
    }, function (err) {
      showNotice(failureText(err));
    });
  }

  function close(returnFocus) {
    if (!isOpen) return;
    isOpen = false;
    panel.hidden = true;
    root.classList.remove("bk-open");
    launcher.setAttribute("aria-expanded", "false");
    if (returnFocus !== false) launcher.focus();
  }

  function newConversation() {
    if (sending || resetting) return;
    resetting = true;
    newButton.setAttribute("aria-disabled", "true");
    // Stop rendering the old conversation first: the reply the server cancels now must
    // not show (or be announced) as a failure.
    generation++;
    abortStreams();
    var work = token ? api("POST", "/widget/api/reset", {}) : Promise.resolve({ status: 401 });
    work.then(function (r) {
      if (r.status === 401) {
        saveToken(null);
        return createSession();
      }
      if (r.status !== 200) throw Object.assign(new Error("reset " + r.status), { response: r });
      loading = Promise.resolve();
      applyPersona(r.data && r.data.persona);
      clearLog();
      setState("bot");
      showGreeting();
      ((r.data && r.data.messages) || []).forEach(addStoredMessage);
    }).then(function () {
      loading = Promise.resolve();
      showNotice("");
      log.removeAttribute("aria-busy");
      input.focus();
    }, function (err) {
      showNotice(failureText(err));
      // The old conversation is still the current one: show it again (and any reply
      // still being written).
      loading = null;
      ensureLoaded().catch(function () { /* the notice already says so */ });
    }).then(function () {
      resetting = false;
      newButton.removeAttribute("aria-disabled");
    });
  }

  launcher.addEventListener("click", function () {
    if (isOpen) close(true);
    else open();
  });
  closeButton.addEventListener("click", function () { close(true); });
  newButton.addEventListener("click", newConversation);
  sendButton.addEventListener("click", function () {
    send();
    input.focus();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener("input", autosize);
  root.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && isOpen) {
      event.preventDefault();
      event.stopPropagation();
      close(true);
    }
  });

  // ---------------------------------------------------------------------------------------
  // Start.
  // ---------------------------------------------------------------------------------------
  function mount() {
    document.body.appendChild(host);
    // A returning visitor: restore the conversation now, so a reply still being written
    // when the page reloaded is followed (and counted as unread) even with the panel shut.
    if (token) ensureLoaded().catch(function () { /* retried when the panel opens */ });
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount, { once: true });

  window.BotkitWidget = Object.freeze({
    open: open,
    close: function () { close(true); },
    version: "1"
  });
})();
