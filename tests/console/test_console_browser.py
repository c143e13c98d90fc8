"""The console end to end: a widget visitor asks for a person, an agent takes over in the
console (a second browser context), they talk live, the agent hands back and the bot
answers again. Real headless Chromium (Debian's ``/usr/bin/chromium``), real server.

With ``UPDATE_SCREENSHOTS=1`` the test also saves the screenshots of ``docs/console.md``
(``docs/console-queue.png``, ``docs/console-transcript.png``, ``docs/console-browser.png``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.adapters.web import test_widget_browser as widget_tests
from tests.adapters.web.test_widget_browser import CSP_WATCH, Shop
from tests.console.helpers import PASSWORD, add_user, ask
from tests.live_server import LiveServer

# The widget tests' browser: one headless Chromium per module.
browser = widget_tests.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
NOTICE = "passing you to a person from our team"


@pytest.fixture(autouse=True)
def _expect_timeout() -> None:
    expect.set_options(timeout=10_000)


class ConsoleTab:
    """A console user's browser tab, with what went wrong on it."""

    def __init__(self, context: BrowserContext, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        context.add_init_script(CSP_WATCH)
        self.page: Page = context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)

    def log_in(self, username: str) -> None:
        self.page.goto(self.url + "/console")
        expect(self.page).to_have_url(re.compile(r"/console/login\?next="))
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page).to_have_url(self.url + "/console")

    def assert_clean(self) -> None:
        assert self.page.evaluate("window.__cspViolations || []") == []
        assert self.errors == []


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []
    yield made
    for context in made:
        context.close()


def new_context(browser: Browser, made: list[BrowserContext]) -> BrowserContext:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 820})
    context.set_default_timeout(10_000)
    made.append(context)
    return context


def shoot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / name), full_page=True)


def seed(server: LiveServer) -> None:
    """Other chats, so that the queue and the browser look like a working day."""
    server.generator.replies.extend([
        "Our Driftwood 2 tent weighs 1.9 kg.",
        "Returns are free within 45 days of delivery.",
    ])
    ask(server, "How heavy is the Driftwood 2 tent?", chat="ann", user_name="Ann Lee")
    ask(server, "Can I return boots I wore once indoors?", chat="42", channel="telegram",
        user_name="Marco")
    ask(server, "My tent pole snapped on day two. Can a replacement be sent to a campsite? "
        "I need a human, please.", chat="dm:7", channel="discord", user_name="Dana Whitfield")

    async def rate() -> None:
        store = server.store
        for chat, channel, score in (("ann", "web", 1), ("42", "telegram", -1)):
            conversation = await store.latest_conversation(channel, chat)
            assert conversation is not None
            bot = [m for m in await store.messages(conversation.id) if m.role == "assistant"]
            await store.add_feedback(bot[0].id, user_id=conversation.user_id, score=score)

    server.call(rate)


def test_an_agent_takes_a_widget_chat_over_live_and_hands_it_back(
    web_server: LiveServer, browser: Browser, contexts: list[BrowserContext]
) -> None:
    server = web_server
    add_user(server, "bea", display_name="Bea")
    add_user(server, "olga", "operator", display_name="Olga")
    seed(server)
    generated = len(server.generator.requests)

    agent = ConsoleTab(new_context(browser, contexts), server.url)
    agent.log_in("bea")
    waiting = agent.page.locator("#waiting tbody tr")
    expect(waiting).to_have_count(1)  # Dana, on Discord
    expect(agent.page.locator("#waiting-count")).to_have_text("1")

    shop = Shop(new_context(browser, contexts), server.url)
    shop.open()
    shop.send("I want a human")
    expect(shop.page.locator(".bk-log")).to_contain_text(NOTICE)

    # The new chat shows up in the agent's queue without a reload.
    expect(waiting).to_have_count(2)
    row = waiting.filter(has_text="I want a human")
    expect(row.locator("td.channel")).to_have_text("web")
    expect(row.locator("td.wait")).to_have_text(re.compile(r"^\d+ s$"))
    expect(agent.page).to_have_title("(2) Queue · botkit console")
    shoot(agent.page, "console-queue.png")

    row.get_by_role("button", name=re.compile("^Claim")).click()
    expect(agent.page).to_have_url(re.compile(r"/console/conversations/\d+$"))
    page = agent.page
    transcript = page.locator("#transcript")
    expect(page.locator("#state")).to_have_text("with an agent")
    expect(page.locator("#owner")).to_have_text("by you")
    expect(transcript.locator(".msg-user").first).to_contain_text("I want a human")
    expect(transcript.locator(".msg-assistant").first).to_contain_text(NOTICE)
    expect(transcript.locator(".msg-agent").first).to_contain_text(
        "Bea from our team has joined the chat.")
    expect(page.locator("#events")).to_contain_text("taken over — bea")

    page.locator("#reply-text").fill("Hi, Bea here")
    page.locator("#reply-text").press("Enter")
    expect(transcript.locator(".msg-agent").last).to_contain_text("Hi, Bea here")
    expect(transcript.locator(".msg-agent").last.locator(".msg-author")).to_have_text(
        "Bea · agent")
    expect(page.locator("#reply-text")).to_have_value("")

    # The widget picks the agent's reply up; the visitor's answer reaches the agent live.
    expect(shop.page.locator(".bk-log")).to_contain_text("Hi, Bea here")
    shop.send("My order #1042 never arrived")
    expect(transcript.locator(".msg-user").last).to_contain_text("My order #1042 never arrived")
    assert len(server.generator.requests) == generated  # the bot stayed silent
    shoot(page, "console-transcript.png")
    # What users write is shown as text, never run as HTML.
    shop.send('<img src=x onerror="document.title=1"> still there?')
    expect(transcript.locator(".msg-user").last).to_have_text(
        re.compile(r'<img src=x onerror="document.title=1"> still there\?$'))
    expect(transcript.locator("img")).to_have_count(0)

    page.get_by_role("button", name="Hand back to the bot").click()
    expect(page.locator("#state")).to_have_text("with the bot")
    expect(transcript.locator(".msg-system").last).to_contain_text(
        "has handed the conversation back to you")
    expect(page.locator("#reply-form")).to_be_hidden()

    server.generator.replies.append("Let me look up order 1042 for you.")
    shop.send("Is it on its way?")
    expect(shop.page.locator(".bk-log")).to_contain_text("Let me look up order 1042 for you.")
    assert len(server.generator.requests) == generated + 1
    expect(transcript.locator(".msg-assistant").last).to_contain_text(
        "Let me look up order 1042 for you.")
    agent.assert_clean()

    # An operator browses the conversations.
    operator = ConsoleTab(new_context(browser, contexts), server.url)
    operator.log_in("olga")
    operator.page.get_by_role("link", name="Conversations").click()
    rows = operator.page.locator("table.browse tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("web")
    shoot(operator.page, "console-browser.png")
    operator.page.get_by_label("Feedback").select_option("up")
    operator.page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ann Lee")
    operator.page.get_by_role("link", name="Adapters").click()
    expect(operator.page.get_by_role("heading", level=1)).to_have_text("Adapters")
    operator.assert_clean()
