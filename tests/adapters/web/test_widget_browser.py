"""The web widget end to end: the demo page in a real headless Chromium against a real server.

What a visitor sees and does: the launcher, the greeting, a streamed reply, the history
after a reload, thumbs up, safe Markdown, keyboard-only use, the live region, a new
conversation, rate-limit and length errors, a phone-sized screen and German strings.
The demo page is served with a strict Content-Security-Policy; every test that loads it
checks that nothing was refused (console errors, page errors, CSP violation events).

Chromium is Debian's ``/usr/bin/chromium`` (never ``playwright install``); the module is
skipped where it is missing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium; apt-get install chromium)",
        allow_module_level=True,
    )

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
GREETING = "Hi! I'm Pine. How can I help?"
TOKEN_KEY = "botkit:pine:token"

# Records CSP violations seen by the page (an init script runs outside the page's CSP).
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""

# Snapshots of the newest bot reply on every change: typing indicator shown? text so far?
WATCH_REPLY = """
() => {
  const log = document.querySelector("botkit-widget").shadowRoot.querySelector(".bk-log");
  window.__snaps = [];
  const snap = () => {
    const rows = log.querySelectorAll(".bk-msg-bot:not(.bk-greeting)");
    const row = rows[rows.length - 1];
    if (!row) return;
    const typing = row.querySelector(".bk-typing") !== null;
    const text = typing ? "" : row.querySelector(".bk-content").textContent;
    window.__snaps.push({ typing, text });
  };
  new MutationObserver(snap).observe(log, { subtree: true, childList: true, characterData: true });
}
"""

# Every text the live region gets, one entry per change.
WATCH_ANNOUNCER = """
() => {
  const a = document.querySelector("botkit-widget").shadowRoot.querySelector(".bk-announcer");
  window.__announced = [];
  new MutationObserver(() => window.__announced.push(a.textContent))
    .observe(a, { subtree: true, childList: true, characterData: true });
}
"""


class Shop:
    """The demo page in one browser tab, with what went wrong on it."""

    def __init__(self, context: BrowserContext, url: str) -> None:
        self.context = context
        self.url = url
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        context.add_init_script(CSP_WATCH)
        self.page = context.new_page()
        self.page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.response = self.page.goto(url + "/")
        expect(self.launcher).to_be_visible()  # the shadow root's stylesheet is in

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    # -- parts of the widget (CSS locators pierce the open shadow root) -------------------

    @property
    def launcher(self) -> Locator:
        return self.page.locator(".bk-launcher")

    @property
    def panel(self) -> Locator:
        return self.page.locator(".bk-panel")

    @property
    def input(self) -> Locator:
        return self.page.locator("textarea.bk-input")

    @property
    def notice(self) -> Locator:
        return self.page.locator(".bk-notice")

    @property
    def replies(self) -> Locator:
        """Bot replies (the greeting left out)."""
        return self.page.locator(".bk-log .bk-msg-bot:not(.bk-greeting)")

    @property
    def finished_replies(self) -> Locator:
        return self.page.locator(".bk-log .bk-msg-bot:not(.bk-greeting):not(.bk-streaming)")

    @property
    def user_messages(self) -> Locator:
        return self.page.locator(".bk-log .bk-msg-user")

    # -- actions --------------------------------------------------------------------------

    def open(self) -> None:
        self.launcher.click()
        expect(self.panel).to_be_visible()
        expect(self.page.locator(".bk-greeting")).to_contain_text(GREETING)

    def send(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def ask(self, text: str) -> Locator:
        """Send ``text`` and wait for the reply to finish; returns the reply's row."""
        count = self.finished_replies.count()
        self.send(text)
        expect(self.finished_replies).to_have_count(count + 1)
        return self.finished_replies.nth(count)

    def reload(self) -> None:
        self.page.reload()
        expect(self.launcher).to_be_visible()

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__cspViolations || []")

    def assert_clean(self) -> None:
        """Nothing refused by the CSP, no script error, no console error, no dialog."""
        assert self.csp_violations() == []
        assert self.console_errors == []
        assert self.page_errors == []
        assert self.dialogs == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_shop(browser: Browser) -> Iterator[Callable[..., Shop]]:
    """``open_shop(server, **context_options)``: the demo page in a fresh browser context."""
    contexts: list[BrowserContext] = []

    def open_(server: Any, **options: Any) -> Shop:
        options.setdefault("locale", "en-US")
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return Shop(context, server.url)

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture(autouse=True)
def _expect_timeout() -> None:
    expect.set_options(timeout=10_000)


# ---------------------------------------------------------------------------------------


def test_demo_page_passes_its_csp_and_shows_the_greeting(web_server, open_shop):
    shop = open_shop(web_server)
    page = shop.page
    assert shop.response is not None
    assert shop.response.ok
    csp = shop.response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    expect(page).to_have_title(re.compile("Harbor & Pine"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()

    # The widget is styled (its stylesheet loaded in the shadow root) in the page's accent.
    expect(shop.launcher).to_have_attribute("aria-expanded", "false")
    expect(shop.launcher).to_have_css("background-color", "rgb(11, 110, 79)")
    expect(shop.panel).to_be_hidden()

    shop.open()
    expect(shop.launcher).to_have_attribute("aria-expanded", "true")
    expect(page.locator(".bk-title")).to_have_text("Harbor & Pine support")
    expect(page.locator(".bk-subtitle")).to_contain_text("Pine")
    expect(page.get_by_role("log")).to_be_visible()
    expect(page.get_by_role("log")).to_contain_text(GREETING)
    # Every control is labelled.
    for name in ("Close chat", "New conversation", "Send"):
        expect(page.get_by_role("button", name=name)).to_be_visible()
    expect(page.get_by_role("textbox", name="Your message")).to_be_focused()
    assert page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})")
    shop.assert_clean()


def test_reply_streams_in_after_a_typing_indicator(web_server, open_shop):
    reply = "Our Driftwood 2 tent weighs 1.9 kg and pitches in under five minutes."
    web_server.generator.replies.append(reply)
    web_server.generator.delay_s = 0.05
    shop = open_shop(web_server)
    shop.open()
    shop.page.evaluate(WATCH_REPLY)

    shop.send("How heavy is the Driftwood tent?")
    expect(shop.user_messages.last).to_have_text(re.compile("How heavy is the Driftwood tent"))
    row = shop.replies.last
    expect(row.locator(".bk-content")).to_have_text(reply)
    expect(shop.finished_replies).to_have_count(1)
    expect(row.locator(".bk-typing")).to_have_count(0)
    expect(shop.input).to_have_value("")

    snaps = shop.page.evaluate("window.__snaps")
    first_text = next(i for i, s in enumerate(snaps) if s["text"])
    assert any(s["typing"] for s in snaps[:first_text]), snaps  # typing dots came first
    assert not any(s["typing"] for s in snaps[first_text:]), snaps
    # Some text was shown before the whole reply: it streamed, growing, never shrinking.
    texts = [s["text"] for s in snaps[first_text:]]
    assert any(reply.startswith(t) and t != reply for t in texts), texts
    assert all(reply.startswith(t.strip()) for t in texts), texts
    assert web_server.messages()[-2:] == [
        ("user", "How heavy is the Driftwood tent?"),
        ("assistant", reply),
    ]
    shop.assert_clean()


def test_reload_restores_the_conversation(web_server, open_shop):
    web_server.generator.replies.append("Returns are free for 60 days.")
    shop = open_shop(web_server)
    shop.open()
    shop.ask("Can I return a tent?")
    token = shop.page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})")

    shop.reload()
    assert shop.page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})") == token
    shop.open()
    expect(shop.user_messages).to_have_count(1)
    expect(shop.user_messages.locator(".bk-content")).to_have_text("Can I return a tent?")
    expect(shop.replies).to_have_count(1)
    expect(shop.replies.locator(".bk-content")).to_have_text("Returns are free for 60 days.")
    shop.assert_clean()


def test_reload_during_a_reply_follows_it_to_the_end(web_server, open_shop):
    reply = "We repair every tent we sell, for life, at our workshop in Harbor Town."
    web_server.generator.replies.append(reply)
    web_server.generator.delay_s = 0.1
    shop = open_shop(web_server)
    shop.open()
    shop.send("Do you repair tents?")
    expect(shop.replies.last.locator(".bk-content")).to_contain_text("We repair")

    shop.reload()  # mid-reply: the conversation says which turn is pending
    shop.open()
    expect(shop.finished_replies).to_have_count(1)
    expect(shop.replies).to_have_count(1)
    expect(shop.replies.locator(".bk-content")).to_have_text(reply)  # no gap, no duplicate
    assert [m for m in web_server.messages() if m[0] == "assistant"] == [("assistant", reply)]
    shop.assert_clean()


def test_stream_resumes_after_a_dropped_connection(web_server, open_shop):
    words = "one two three four five six seven eight nine ten eleven twelve"
    web_server.generator.replies.append(words)
    shop = open_shop(web_server)
    seen: list[str | None] = []

    def drop_after_three_events(route: Any) -> None:
        seen.append(route.request.headers.get("last-event-id"))
        if len(seen) > 1:
            route.continue_()
            return
        # The first connection ends after event 3, as if the network had dropped it.
        response = route.fetch()
        kept = [
            block for block in response.text().split("\n\n")
            if block.strip() and _event_id(block) <= 3
        ]
        route.fulfill(response=response, body="\n\n".join(kept) + "\n\n")

    shop.page.route("**/widget/api/turns/*/events", drop_after_three_events)
    shop.open()
    row = shop.ask("Count for me")
    expect(row.locator(".bk-content")).to_have_text(words)  # no gap, no repeat
    assert seen == [None, "3"]  # resumed right after the last event it saw
    shop.assert_clean()


def test_thumbs_up_is_stored(web_server, open_shop):
    web_server.generator.replies.append("The Ridgeline 45 has a rain cover in the lid.")
    shop = open_shop(web_server)
    shop.open()
    row = shop.ask("Is there a rain cover?")
    up = row.get_by_role("button", name="Helpful", exact=True)
    down = row.get_by_role("button", name="Not helpful")
    expect(up).to_have_attribute("aria-pressed", "false")
    expect(down).to_have_attribute("aria-pressed", "false")
    # The greeting is not a stored reply: nothing to rate.
    expect(shop.page.locator(".bk-greeting .bk-thumb")).to_have_count(0)

    up.click()
    expect(up).to_have_attribute("aria-pressed", "true")
    message_id = int(row.get_attribute("data-message-id") or "0")
    _wait_for(lambda: web_server.feedback() == [(message_id, 1)], web_server.feedback)

    shop.reload()  # the vote is part of the stored conversation
    shop.open()
    expect(shop.replies.last.get_by_role("button", name="Helpful", exact=True)).to_have_attribute(
        "aria-pressed", "true"
    )
    shop.assert_clean()


def test_markdown_in_a_reply_is_inert(web_server, open_shop):
    web_server.generator.replies.append(
        "**Careful:** <img src=x onerror=alert(1)> and [click](javascript:alert(1)) "
        "but [docs](https://example.com/docs) is fine."
    )
    shop = open_shop(web_server)
    shop.open()
    row = shop.ask("Show me something")
    content = row.locator(".bk-content")
    expect(content).to_contain_text("<img src=x onerror=alert(1)>")  # shown as text
    expect(content).to_contain_text("[click](javascript:alert(1))")
    expect(content.locator("strong")).to_have_text("Careful:")

    shadow_html = shop.page.evaluate(
        "document.querySelector('botkit-widget').shadowRoot.innerHTML"
    )
    assert "<img" not in shadow_html
    assert shop.page.locator("botkit-widget img").count() == 0
    hrefs = shop.page.evaluate(
        "[...document.querySelector('botkit-widget').shadowRoot.querySelectorAll('a')]"
        ".map((a) => a.getAttribute('href'))"
    )
    assert hrefs == ["https://example.com/docs"]
    docs = content.get_by_role("link", name="docs")
    expect(docs).to_have_attribute("rel", "noopener noreferrer")
    expect(docs).to_have_attribute("target", "_blank")
    shop.page.wait_for_timeout(200)  # an onerror handler would have fired by now
    assert shop.dialogs == []
    shop.assert_clean()


def test_keyboard_only(web_server, open_shop):
    web_server.generator.replies.append("Yes, we repair zips.")
    shop = open_shop(web_server)
    page = shop.page
    for _ in range(15):  # Tab through the page until the launcher has focus
        page.keyboard.press("Tab")
        if page.evaluate(
            "document.activeElement && document.activeElement.shadowRoot && "
            "document.activeElement.shadowRoot.activeElement && "
            "document.activeElement.shadowRoot.activeElement.classList.contains('bk-launcher')"
        ):
            break
    expect(shop.launcher).to_be_focused()
    page.keyboard.press("Enter")
    expect(shop.panel).to_be_visible()
    expect(shop.input).to_be_focused()
    expect(page.locator(".bk-greeting")).to_contain_text(GREETING)

    page.keyboard.type("My zip broke.")
    page.keyboard.press("Shift+Enter")  # a new line, not sending
    page.keyboard.type("Can you fix it?")
    expect(shop.input).to_have_value("My zip broke.\nCan you fix it?")
    expect(shop.user_messages).to_have_count(0)
    page.keyboard.press("Enter")
    expect(shop.user_messages.locator(".bk-content")).to_have_text(
        "My zip broke.\nCan you fix it?"
    )
    expect(shop.finished_replies.locator(".bk-content")).to_have_text("Yes, we repair zips.")

    page.keyboard.press("Escape")
    expect(shop.panel).to_be_hidden()
    expect(shop.launcher).to_be_focused()
    expect(shop.launcher).to_have_attribute("aria-expanded", "false")
    page.keyboard.press(" ")  # Space opens it again
    expect(shop.panel).to_be_visible()
    expect(shop.user_messages).to_have_count(1)
    shop.assert_clean()


def test_live_region_announces_each_finished_reply_once(web_server, open_shop):
    first = "Our packs come in three back lengths."
    second = "Orders ship within two working days."
    web_server.generator.replies.extend([first, second])
    web_server.generator.delay_s = 0.03
    shop = open_shop(web_server)
    shop.open()
    announcer = shop.page.locator(".bk-announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    shop.page.evaluate(WATCH_ANNOUNCER)

    shop.ask("Which sizes?")
    shop.page.wait_for_timeout(150)
    assert shop.page.evaluate("window.__announced") == [first]
    shop.ask("When does it ship?")
    shop.page.wait_for_timeout(150)
    assert shop.page.evaluate("window.__announced") == [first, second]
    expect(announcer).to_have_text(second)
    shop.assert_clean()


def test_unread_badge_counts_replies_while_closed(web_server, open_shop):
    web_server.generator.replies.append(
        "Our sleeping bags are rated to 2 degrees and pack down very small."
    )
    web_server.generator.delay_s = 0.1
    shop = open_shop(web_server)
    shop.open()
    badge = shop.page.locator(".bk-badge")
    expect(badge).to_be_hidden()
    shop.send("How warm is the Lantern Bay bag?")
    expect(shop.user_messages).to_have_count(1)
    shop.input.press("Escape")  # close before the reply is done
    expect(shop.panel).to_be_hidden()
    expect(badge).to_be_visible()
    expect(badge).to_have_text("1")
    expect(shop.launcher).to_have_attribute("aria-label", re.compile("1 unread"))
    shop.launcher.click()
    expect(badge).to_be_hidden()
    shop.assert_clean()


def test_new_conversation_clears_the_list(web_server, open_shop):
    web_server.generator.replies.append("Hello from the old conversation.")
    shop = open_shop(web_server)
    shop.open()
    shop.ask("Hello")
    expect(shop.user_messages).to_have_count(1)

    shop.page.get_by_role("button", name="New conversation").click()
    expect(shop.user_messages).to_have_count(0)
    expect(shop.replies).to_have_count(0)
    expect(shop.page.locator(".bk-greeting")).to_contain_text(GREETING)

    shop.reload()  # the server started a new conversation too
    shop.open()
    expect(shop.page.locator(".bk-greeting")).to_be_visible()
    expect(shop.user_messages).to_have_count(0)
    shop.assert_clean()


def test_flood_is_told_to_slow_down_and_keeps_the_text(make_web_server, open_shop):
    server = make_web_server(session_messages_per_minute=2)
    shop = open_shop(server)
    shop.open()
    shop.ask("one")
    shop.ask("two")
    shop.send("three")
    expect(shop.notice).to_be_visible()
    expect(shop.notice).to_have_text(re.compile(r"slow down.*wait \d+ seconds", re.IGNORECASE))
    expect(shop.input).to_have_value("three")  # the visitor can send it later
    expect(shop.user_messages).to_have_count(2)
    assert [text for role, text in server.messages() if role == "user"] == ["one", "two"]


def test_too_long_message_is_refused_and_kept(web_server, open_shop):
    shop = open_shop(web_server)
    shop.open()
    text = "tent " * 4000  # 20,000 characters: over the message limit, under the body limit
    shop.input.fill(text)
    shop.input.press("Enter")
    expect(shop.notice).to_have_text(re.compile("too long", re.IGNORECASE))
    assert shop.input.input_value() == text
    expect(shop.user_messages).to_have_count(0)


def test_phone_screen_panel_fits(web_server, open_shop):
    web_server.generator.replies.append(
        "A very long word: Donaudampfschifffahrtsgesellschaftskapitaenskajuete and "
        "https://example.com/a/very/long/path/that/should/wrap/inside/the/bubble/nicely"
    )
    shop = open_shop(web_server, viewport={"width": 360, "height": 640}, is_mobile=True,
                     has_touch=True)
    page = shop.page
    # The shop page itself has no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shop.open()
    shop.ask("Tell me something long")
    for part in (shop.panel, shop.input, page.get_by_role("button", name="Send"),
                 page.get_by_role("button", name="Close chat"), shop.finished_replies.last):
        box = part.bounding_box()
        assert box is not None
        assert box["x"] >= 0, (part, box)
        assert box["x"] + box["width"] <= 360 + 0.5, (part, box)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.get_by_role("button", name="Close chat").click()
    expect(shop.panel).to_be_hidden()
    expect(shop.launcher).to_be_visible()
    shop.assert_clean()


def test_german_strings_follow_the_browser_language(web_server, open_shop):
    shop = open_shop(web_server, locale="de-DE")
    page = shop.page
    expect(shop.launcher).to_have_attribute("aria-label", "Chat öffnen")
    shop.open()
    expect(page.get_by_role("button", name="Chat schließen")).to_be_visible()
    expect(page.get_by_role("button", name="Neues Gespräch")).to_be_visible()
    expect(shop.input).to_have_attribute("placeholder", "Nachricht eingeben…")
    expect(page.locator(".bk-subtitle")).to_have_text("Chat mit Pine")
    shop.assert_clean()


@pytest.fixture
def other_site(web_server) -> Iterator[str]:
    """Another origin (another port on loopback) with a page that embeds the widget.

    A plain static page: Chromium lets only pages that really come from loopback reach a
    loopback server, so ``page.route`` cannot stand in for it.
    """
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Other shop</title>'
        '</head><body><h1>Other shop</h1>'
        f'<script src="{web_server.url}/widget.js" data-persona="pine" data-accent="#7b2d8e" '
        'data-position="left" async></script>'
        "</body></html>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{site.server_address[1]}"
    finally:
        site.shutdown()
        site.server_close()
        thread.join(5)


def test_embedded_on_another_origin_talks_to_its_own_server(web_server, other_site, browser):
    """The base URL comes from the script's src, not from the page that embeds it."""
    context = browser.new_context()
    try:
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(other_site + "/")
        launcher = page.locator(".bk-launcher")
        expect(launcher).to_be_visible()
        # Styled by the server's stylesheet, in this page's accent (set through the CSSOM).
        expect(launcher).to_have_css("background-color", "rgb(123, 45, 142)")
        box = launcher.bounding_box()
        assert box is not None
        assert box["x"] < 200  # data-position="left"
        launcher.click()
        expect(page.locator(".bk-panel")).to_be_visible()
        expect(page.locator(".bk-notice")).to_be_visible()  # refused: not an allowed origin
        assert web_server.url + "/widget/widget.css" in requests
        assert web_server.url + "/widget/api/sessions" in requests, requests
        assert not any(u.startswith(other_site + "/widget") for u in requests), requests
    finally:
        context.close()


def _wait_for(
    condition: Callable[[], bool], show: Callable[[], Any], timeout_s: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out; last seen: {show()!r}"
        time.sleep(0.05)


def _event_id(block: str) -> int:
    """The ``id:`` of one server-sent event (0 for a block without one)."""
    found = re.search(r"^id: (\d+)$", block, re.MULTILINE)
    return int(found[1]) if found else 0
