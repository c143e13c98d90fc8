"""Human handoff in the web widget, end to end: a real headless Chromium, a real server.

The visitor asks for a person: the bot's handoff notice streams in and a status line says
a person is on the way; the bot says nothing more (no empty bubble, no model call). The
test then plays the support agent through the engine on the server's loop (claim, reply,
hand back, close): the widget, which has no push on the web channel, picks the team's
messages up by polling ``GET /widget/api/conversation`` (every 3 s, only while the page
is visible), shows each once with the agent's name, announces it in the live region and
counts it as unread while the panel is shut; handed back, the bot answers again.

Browser set-up and helpers come from ``test_widget_browser`` (Debian's
``/usr/bin/chromium``; skipped where it is missing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, expect

from botkit.memory.store import ConsoleUserRecord
from tests.adapters.web import test_widget_browser as widget_tests
from tests.adapters.web.test_widget_browser import (
    GREETING,
    TOKEN_KEY,
    WATCH_ANNOUNCER,
    Shop,
    _wait_for,
)
from tests.live_server import LiveServer

# The same browser fixtures as the widget's other tests.
browser = widget_tests.browser
open_shop = widget_tests.open_shop
_expect_timeout = widget_tests._expect_timeout

NOTICE = "passing you to a person from our team"
JOINED = "Bea from our team has joined the chat."

# Records, from now on, whether a typing indicator or a bot bubble other than the ones
# already there ever shows up in the log.
WATCH_LOG = """
() => {
  const log = document.querySelector("botkit-widget").shadowRoot.querySelector(".bk-log");
  window.__typingSeen = false;
  window.__botRowsAdded = 0;
  new MutationObserver((records) => {
    if (log.querySelector(".bk-typing")) window.__typingSeen = true;
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (n.classList && n.classList.contains("bk-msg-bot")) window.__botRowsAdded++;
      }
    }
  }).observe(log, { subtree: true, childList: true });
}
"""

# Makes the page report itself hidden or visible (as switching tabs would).
SET_VISIBILITY = """
(state) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""


class Polls:
    """Counts the widget's ``GET /widget/api/conversation`` answers."""

    def __init__(self, shop: Shop) -> None:
        self.count = 0
        shop.page.on("response", self._seen)

    def wait_for_more(self, shop: Shop, more: int, timeout_s: float = 5.0) -> None:
        """Wait for ``more`` answers (Playwright reports events only while it is called)."""
        goal = self.count + more
        for _ in range(int(timeout_s * 20)):
            if self.count >= goal:
                return
            shop.page.wait_for_timeout(50)
        raise AssertionError(f"{self.count} polls, expected {goal}")

    def _seen(self, response: Any) -> None:
        if response.request.method == "GET" and response.url.endswith("/widget/api/conversation"):
            self.count += 1


@pytest.fixture
def open_clocked_shop(browser: Browser) -> Iterator[Callable[..., Shop]]:
    """Like ``open_shop``, with the page's clock faked from the start: time flows as usual,
    and ``page.clock.run_for(ms)`` jumps ahead (waiting out poll intervals in no time).
    ``init_script`` runs in the page before the widget."""
    contexts: list[BrowserContext] = []

    def open_(server: LiveServer, init_script: str | None = None) -> Shop:
        context = browser.new_context(locale="en-US")
        contexts.append(context)
        context.set_default_timeout(10_000)
        context.clock.install()
        if init_script:
            context.add_init_script(init_script)
        return Shop(context, server.url)

    yield open_
    for context in contexts:
        context.close()


def status(shop: Shop) -> Locator:
    return shop.page.locator(".bk-status")


def agent_rows(shop: Shop) -> Locator:
    return shop.page.locator(".bk-log .bk-msg-agent")


def make_agent(server: LiveServer) -> ConsoleUserRecord:
    return server.call(lambda: server.store.add_console_user(
        "bea", role="agent", password_hash="x", display_name="Bea"
    ))


def waiting_conversation(server: LiveServer) -> int:
    queue = server.call(lambda: server.store.handoff_queue())
    assert len(queue) == 1, queue
    return queue[0].conversation.id


def ask_for_a_person(shop: Shop) -> None:
    row = shop.ask("I want a human")
    expect(row.locator(".bk-content")).to_contain_text(NOTICE)
    expect(status(shop)).to_be_visible()


# ---------------------------------------------------------------------------------------


def test_handoff_to_a_person_and_back(web_server, open_clocked_shop):
    server = web_server
    shop = open_clocked_shop(server)
    page = shop.page
    polls = Polls(shop)
    shop.open()
    expect(status(shop)).to_be_hidden()

    # The visitor asks for a person: the notice streams in as a normal bot reply.
    ask_for_a_person(shop)
    expect(status(shop)).to_have_text("Waiting for a person from our team…")
    expect(shop.replies).to_have_count(1)
    assert server.generator.requests == []  # the notice is no model reply
    page.evaluate(WATCH_ANNOUNCER)

    # A further message: the bot stays silent, and leaves no bubble and no typing dots.
    page.evaluate(WATCH_LOG)
    shop.send("Are you there?")
    expect(shop.user_messages).to_have_count(2)
    _wait_for(lambda: server.messages()[-1] == ("user", "Are you there?"), server.messages)
    expect(shop.replies).to_have_count(1)
    expect(page.locator(".bk-log .bk-typing")).to_have_count(0)
    expect(page.locator(".bk-log")).not_to_have_attribute("aria-busy", "true")
    expect(shop.input).to_have_value("")
    assert page.evaluate("window.__typingSeen") is False
    assert server.generator.requests == []
    assert [role for role, _ in server.messages()] == ["user", "assistant", "user"]
    expect(status(shop)).to_have_text("Waiting for a person from our team…")

    # A hidden page does not poll; the agent joins and answers meanwhile.
    page.evaluate(SET_VISIBILITY, "hidden")
    page.wait_for_timeout(300)  # a poll already on its way comes back
    before = polls.count
    conv_id = waiting_conversation(server)
    agent = make_agent(server)
    server.call(lambda: server.engine.claim(conv_id, agent))
    server.call(lambda: server.engine.agent_reply(
        conv_id, agent, "Hi, I'm Bea. What can I do for you?"
    ))
    page.clock.run_for(3500)
    page.wait_for_timeout(100)
    assert polls.count == before
    expect(agent_rows(shop)).to_have_count(0)

    # Visible again: it polls at once, and the team's messages appear, with the name.
    page.evaluate(SET_VISIBILITY, "visible")
    expect(agent_rows(shop)).to_have_count(2, timeout=2_000)
    expect(agent_rows(shop).nth(0).locator(".bk-content")).to_have_text(JOINED)
    expect(agent_rows(shop).nth(1).locator(".bk-content")).to_have_text(
        "Hi, I'm Bea. What can I do for you?"
    )
    for row in agent_rows(shop).all():
        expect(row.locator(".bk-author")).to_have_text("Bea · Support team")
        expect(row.locator(".bk-thumb")).to_have_count(0)  # feedback rates the bot only
    expect(agent_rows(shop).nth(1)).to_contain_text("Bea from the support team:")  # for readers
    expect(status(shop)).to_have_text("You're chatting with Bea")
    # The agent's bubble looks different from the bot's.
    bot_bg = shop.replies.first.locator(".bk-bubble").evaluate(
        "(e) => getComputedStyle(e).backgroundColor")
    agent_bg = agent_rows(shop).first.locator(".bk-bubble").evaluate(
        "(e) => getComputedStyle(e).backgroundColor")
    assert bot_bg != agent_bg

    # The next polls show nothing twice, and each message was announced once.
    polls.wait_for_more(shop, 1)
    page.wait_for_timeout(100)
    expect(agent_rows(shop)).to_have_count(2)
    announced = "\n".join(page.evaluate("window.__announced"))
    assert announced.count("Bea: " + JOINED) == 1, announced
    assert announced.count("Bea: Hi, I'm Bea. What can I do for you?") == 1, announced

    # The visitor writes to the agent: still no bot bubble; the agent's answer comes by polling.
    shop.send("My tent pole snapped.")
    expect(shop.user_messages).to_have_count(3)
    server.call(lambda: server.engine.agent_reply(conv_id, agent, "Send us a photo, please."))
    expect(agent_rows(shop)).to_have_count(3, timeout=5_000)
    expect(agent_rows(shop).last.locator(".bk-content")).to_have_text("Send us a photo, please.")
    expect(shop.replies).to_have_count(1)
    assert page.evaluate("window.__botRowsAdded") <= 2  # quiet turns, each removed again
    assert page.evaluate("window.__typingSeen") is False

    # Handed back: the status line goes, polling stops, and the bot answers again.
    server.call(lambda: server.engine.hand_back(conv_id, agent))
    expect(status(shop)).to_be_hidden(timeout=5_000)
    expect(page.locator(".bk-log .bk-system")).to_have_text("Pine is back to help you.")
    assert "Pine is back to help you." in page.evaluate("window.__announced")
    server.generator.replies.append("Pine again: the pole is covered by our warranty.")
    row = shop.ask("Thanks! Is that covered?")
    expect(row.locator(".bk-content")).to_have_text(
        "Pine again: the pole is covered by our warranty.")
    expect(row.get_by_role("button", name="Helpful", exact=True)).to_be_visible()
    assert len(server.generator.requests) == 1
    expect(status(shop)).to_be_hidden()
    stopped = polls.count
    page.clock.run_for(3500)
    page.wait_for_timeout(100)
    assert polls.count == stopped  # no polling while the bot owns the chat
    expect(agent_rows(shop)).to_have_count(3)
    shop.assert_clean()


def test_reload_while_waiting_restores_the_handoff(web_server, open_shop):
    server = web_server
    shop = open_shop(server)
    shop.open()
    ask_for_a_person(shop)
    token = shop.page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})")

    # Reloaded with the panel shut: the widget still polls, and counts the team's messages.
    shop.reload()
    assert shop.page.evaluate(f"localStorage.getItem({TOKEN_KEY!r})") == token
    shop.page.evaluate(WATCH_ANNOUNCER)
    badge = shop.page.locator(".bk-badge")
    expect(badge).to_be_hidden()
    conv_id = waiting_conversation(server)
    agent = make_agent(server)
    server.call(lambda: server.engine.claim(conv_id, agent))
    server.call(lambda: server.engine.agent_reply(conv_id, agent, "Hello, Bea here."))
    expect(badge).to_have_text("2", timeout=5_000)
    expect(shop.launcher).to_have_attribute("aria-label", re.compile("2 unread"))
    announced = "\n".join(shop.page.evaluate("window.__announced"))
    assert announced.count("Bea: " + JOINED) == 1, announced
    assert announced.count("Bea: Hello, Bea here.") == 1, announced

    shop.launcher.click()
    expect(shop.panel).to_be_visible()
    expect(badge).to_be_hidden()
    expect(shop.page.locator(".bk-greeting")).to_contain_text(GREETING)
    expect(shop.user_messages).to_have_count(1)
    expect(shop.user_messages.locator(".bk-content")).to_have_text("I want a human")
    expect(shop.replies).to_have_count(1)
    expect(shop.replies.locator(".bk-content")).to_contain_text(NOTICE)
    expect(agent_rows(shop)).to_have_count(2)
    expect(status(shop)).to_have_text("You're chatting with Bea")

    # Once more: a reload while the agent owns the chat shows the same, each message once.
    shop.reload()
    shop.open()
    expect(agent_rows(shop)).to_have_count(2)
    expect(agent_rows(shop).last.locator(".bk-author")).to_have_text("Bea · Support team")
    expect(status(shop)).to_have_text("You're chatting with Bea")
    expect(shop.replies).to_have_count(1)
    expect(shop.user_messages).to_have_count(1)
    shop.assert_clean()


def test_waiting_after_a_reload_in_german_then_closed(web_server, open_shop):
    server = web_server
    shop = open_shop(server, locale="de-DE")
    shop.open()
    ask_for_a_person(shop)
    expect(status(shop)).to_have_text("Warten auf eine Person aus unserem Team…")
    shop.reload()
    shop.open()
    expect(shop.replies).to_have_count(1)
    expect(status(shop)).to_have_text("Warten auf eine Person aus unserem Team…")

    conv_id = waiting_conversation(server)
    agent = make_agent(server)
    server.call(lambda: server.engine.claim(conv_id, agent))
    expect(agent_rows(shop)).to_have_count(1, timeout=5_000)
    expect(agent_rows(shop).locator(".bk-author")).to_have_text("Bea · Support-Team")
    expect(status(shop)).to_have_text("Sie chatten mit Bea")

    # The agent closes the conversation: the widget says so, stops waiting for the team,
    # and the next message starts a new conversation that the bot answers.
    server.call(lambda: server.engine.close(conv_id, agent))
    closed = shop.page.locator(".bk-log .bk-system")
    expect(closed).to_have_text(
        "Dieses Gespräch wurde beendet. Schreiben Sie jederzeit wieder, um ein neues zu "
        "beginnen.",
        timeout=5_000,
    )
    expect(status(shop)).to_be_hidden()
    server.generator.replies.append("Hallo again, Pine here.")
    row = shop.ask("Noch eine Frage")
    expect(row.locator(".bk-content")).to_have_text("Hallo again, Pine here.")
    expect(status(shop)).to_be_hidden()
    expect(closed).to_have_count(1)

    shop.reload()  # the new conversation only
    shop.open()
    expect(shop.user_messages).to_have_count(1)
    expect(shop.user_messages.locator(".bk-content")).to_have_text("Noch eine Frage")
    expect(agent_rows(shop)).to_have_count(0)
    expect(status(shop)).to_be_hidden()
    shop.assert_clean()


# When each GET /widget/api/conversation left, by the page's (fake) clock.
RECORD_POLLS = """
window.__polls = [];
const realFetch = window.fetch;
window.fetch = function (input, init) {
  const url = String((input && input.url) || input);
  if (url.endsWith("/widget/api/conversation") && init && init.method === "GET") {
    window.__polls.push(Date.now());
  }
  return realFetch.apply(this, arguments);
};
"""


def test_polling_backs_off_on_errors_and_recovers(web_server, open_clocked_shop):
    """Every 3 s while waiting; 6, then 12 s apart while the server fails; 3 s again after."""
    shop = open_clocked_shop(web_server, RECORD_POLLS)
    page = shop.page
    shop.open()
    ask_for_a_person(shop)
    page.wait_for_timeout(500)  # the look right after the handoff notice

    failing = True

    def answer(route: Any) -> None:
        if failing and route.request.method == "GET":
            route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "down"}})
        else:
            route.continue_()

    page.route("**/widget/api/conversation", answer)
    start = page.evaluate("Date.now()")
    page.clock.pause_at(start + 100)

    def run(seconds: int) -> list[int]:
        for _ in range(seconds):
            page.clock.run_for(1000)
            page.wait_for_timeout(30)  # the answer comes back (in real time)
        return [t for t in page.evaluate("window.__polls") if t > start]

    polls = run(3 + 6 + 12 + 1)  # three failures
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert len(polls) == 3, (polls, gaps)
    assert 6000 <= gaps[0] <= 7100, gaps
    assert 12000 <= gaps[1] <= 13100, gaps

    failing = False  # the server is back: the next try (24 s on) works, then every 3 s
    polls = run(24 + 7)
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert len(polls) >= 6, gaps
    assert 24000 <= gaps[2] <= 25100, gaps
    assert all(3000 <= gap <= 4100 for gap in gaps[3:]), gaps
    assert shop.csp_violations() == []
    assert shop.page_errors == []
