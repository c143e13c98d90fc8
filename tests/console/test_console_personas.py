"""The console's persona editor over real HTTP: drafts refused by field with the input
kept, previews that change nothing, hot publishing, the history with its changes,
rollback, and who may do any of it. The browser test is at the end."""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import Browser, BrowserContext, expect

from botkit.console.persona_form import dump_toml, source_from_fields, toml_string
from botkit.console.web import CSP
from botkit.server.app import create_app
from botkit.testing import PINE_TEST_PERSONA
from tests.console import test_console_browser as console_browser
from tests.console.helpers import add_user, ask, client_for, form_fields, login
from tests.console.test_console_browser import ConsoleTab, new_context, shoot
from tests.live_server import LiveServer

# The console browser tests' Chromium (one per module) and browser contexts.
browser = console_browser.browser
contexts = console_browser.contexts

PERSONA_ROUTES = {
    ("GET", "/console/personas"),
    ("GET", "/console/personas/{name}"),
    ("POST", "/console/personas/{name}"),
    ("GET", "/console/personas/{name}/rollback"),
    ("POST", "/console/personas/{name}/rollback"),
    ("POST", "/console/api/personas/{name}/preview"),
}
LIVE_PROMPT = "You are Pine, the Harbor & Pine virtual assistant."
EDITED = PINE_TEST_PERSONA.replace(LIVE_PROMPT, "You are Pine, edited.")
EDITOR = "/console/personas/pine"
PREVIEW = "/console/api/personas/pine/preview"


class Operator:
    """An operator's logged-in HTTP client on a live server."""

    def __init__(self, server: LiveServer, client: httpx.Client) -> None:
        self.server = server
        self.client = client
        add_user(server, "olga", "operator", display_name="Olga")
        self.csrf = login(client, "olga")

    def page(self, path: str = EDITOR) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, response.text
        return response.text

    def form(self, form_id: str = "persona-form") -> dict[str, str]:
        return form_fields(self.page(), form_id)

    def publish(self, form_id: str = "persona-form", **changes: str) -> httpx.Response:
        """Submit the editor's form ``form_id`` as loaded now, with ``changes``."""
        data = {**self.form(form_id), **changes}
        return self.client.post(EDITOR, data=data)

    def preview(self, text: str, form_id: str = "persona-form", **changes: str
                ) -> httpx.Response:
        draft = {k: v for k, v in self.form(form_id).items() if k != "csrf_token"}
        return self.client.post(PREVIEW, json={"form": {**draft, **changes}, "text": text},
                                headers={"X-CSRF-Token": self.csrf})

    def history(self) -> list[tuple[int, str, str | None]]:
        records = self.server.call(lambda: self.server.store.persona_versions("pine"))
        return [(r.version, r.author, r.comment) for r in records]

    def live_prompt(self) -> str:
        assert self.server.engine is not None
        return self.server.engine.persona("pine").system_prompt


@pytest.fixture
def operator(web_server: LiveServer) -> Iterator[Operator]:
    with client_for(web_server) as client:
        yield Operator(web_server, client)


def concrete(path: str) -> str:
    return path.replace("{name}", "pine")


def test_every_persona_route_is_for_operators_and_refuses_everyone_else(
    web_server: LiveServer, operator: Operator,
) -> None:
    assert web_server.engine is not None
    app = create_app(web_server.engine, web_server.config)
    found = {}
    for route in app.routes:
        path = getattr(route, "path", "")
        if "/personas" in path:
            for method in set(getattr(route, "methods", None) or ()) - {"HEAD"}:
                found[(method, path)] = route.endpoint.console_access  # type: ignore[attr-defined]
    assert found == dict.fromkeys(PERSONA_ROUTES, "operator")

    add_user(web_server, "bea", "agent")
    with client_for(web_server) as anonymous, client_for(web_server) as agent:
        agent_csrf = login(agent, "bea")
        for method, template in sorted(PERSONA_ROUTES):
            path = concrete(template)
            api = "/api/" in path
            # What would publish (or preview) if the gate let it through.
            draft = {"mode": "toml", "source": EDITED, "base_version": "0"}
            body = {"json": {"form": draft, "text": "hi"}} if api \
                else {"data": {**draft, "version": "file", "confirm": "yes"}}
            if method == "GET":
                body = {}
            response = anonymous.request(method, path, **body)
            if api:
                assert response.status_code == 401, (method, path)
                assert response.json()["error"]["code"] == "unauthorized"
            else:
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/console/login?next=")

            headers = {"X-CSRF-Token": agent_csrf} if api else {}
            if method == "POST" and not api:
                body["data"]["csrf_token"] = agent_csrf
            response = agent.request(method, path, headers=headers, **body)
            assert response.status_code == 403, (method, path)
            assert "for operators only" in response.text

            if method == "POST":  # an operator, without the page's token
                if not api:
                    body["data"].pop("csrf_token")
                response = operator.client.request(method, path, **body)
                assert response.status_code == 403, (method, path)
                if api:
                    assert response.json()["error"]["code"] == "csrf_failed"
                else:
                    assert "security token" in response.text

        # The nav shows the page to operators only.
        assert 'href="/console/personas"' not in agent.get("/console").text
    assert 'href="/console/personas"' in operator.page("/console")
    assert operator.history() == []
    assert operator.live_prompt() == LIVE_PROMPT
    assert web_server.generator.requests == []
    # The same draft with the page's token is published: the token alone made the difference.
    published = operator.client.post(EDITOR, data={
        "mode": "toml", "source": EDITED, "base_version": "0", "csrf_token": operator.csrf})
    assert published.status_code == 303
    assert operator.live_prompt() == "You are Pine, edited."


def test_the_list_and_the_editor_show_the_live_persona_under_a_strict_csp(
    operator: Operator,
) -> None:
    listing = operator.client.get("/console/personas")
    editor = operator.client.get(EDITOR)
    unknown = operator.client.get("/console/personas/spruce")
    unknown_api = operator.client.post("/console/api/personas/spruce/preview",
                                       json={"form": {}, "text": "hi"},
                                       headers={"X-CSRF-Token": operator.csrf})

    assert listing.status_code == 200
    row = re.search(r"<tr>\s*<td><a href=\"/console/personas/pine\">.*?</tr>", listing.text,
                    re.S)
    assert row is not None
    assert "Pine" in row.group(0)
    assert re.search(r'class="live-version">file\b', row.group(0))
    for response in (listing, editor):
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["cache-control"] == "no-store"
        assert "style=" not in response.text
        assert "<style" not in response.text
        assert re.findall(r"<script[^>]*>", response.text) == [
            '<script src="/console/static/console.js" defer>'
        ]
    fields = form_fields(editor.text, "persona-form")
    assert fields["system_prompt"] == LIVE_PROMPT
    assert fields["escalation_keywords"] == "agent, human"
    assert fields["generation.temperature"] == "0.0"
    assert fields["generation.top_p"] == ""  # not in the file: the default applies
    assert fields["base_version"] == "0"
    assert form_fields(editor.text, "toml-form")["source"] == PINE_TEST_PERSONA
    assert unknown.status_code == 404
    assert unknown_api.status_code == 404
    assert unknown_api.json()["error"]["code"] == "not_found"


def test_an_invalid_draft_is_refused_by_field_keeps_the_input_and_publishes_nothing(
    operator: Operator,
) -> None:
    cold = operator.publish(**{"generation.temperature": "-1",
                               "system_prompt": "You are Pine, <b>cold</b>."})
    words = operator.publish(**{"generation.top_p": "lots", "generation.max_new_tokens": "1.5"})
    empty = operator.publish(system_prompt="   ")
    hours = operator.publish(support_hours="whenever")
    toml = operator.publish("toml-form", source='name = "pine"\nsystem_prompt = "unclosed\n',
                            comment="my TOML")
    renamed = operator.publish("toml-form",
                               source=PINE_TEST_PERSONA.replace('"pine"', '"spruce"'))

    for response in (cold, words, empty, hours, toml, renamed):
        assert response.status_code == 400, response.text
        assert "Nothing was published" in response.text
    # Next to its field, with what the operator typed kept (and escaped).
    kept = form_fields(cold.text, "persona-form")
    assert kept["generation.temperature"] == "-1"
    assert kept["system_prompt"] == "You are Pine, <b>cold</b>."
    assert "You are Pine, &lt;b&gt;cold&lt;/b&gt;." in cold.text
    assert error_of(cold.text, "generation.temperature") == "[generation] temperature must " \
        "be 0 or more"
    assert error_of(words.text, "generation.top_p") == "must be a number, like 0.7"
    assert error_of(words.text, "generation.max_new_tokens") == \
        "must be a whole number, like 256"
    assert error_of(empty.text, "system_prompt") == "system_prompt must not be empty"
    assert error_of(hours.text, "support_hours").startswith(
        "Support hours 'whenever' need days, hours and a time zone")
    assert error_of(hours.text, "generation.temperature") == ""
    # The whole TOML: errors beside the text, which is kept; the fields show the live one.
    toml_errors = re.search(r'<div class="error" role="alert" id="toml-errors">(.*?)</div>',
                            toml.text, re.S)
    assert toml_errors is not None
    assert "not valid TOML" in toml_errors.group(1)
    assert form_fields(toml.text, "toml-form")["source"] == \
        'name = "pine"\nsystem_prompt = "unclosed\n'
    assert form_fields(toml.text, "toml-form")["comment"] == "my TOML"
    assert form_fields(toml.text, "persona-form")["system_prompt"] == LIVE_PROMPT
    assert "<details class=\"panel advanced\" id=\"advanced\" open>" in toml.text
    assert "the name cannot change" in renamed.text

    assert operator.history() == []
    assert operator.live_prompt() == LIVE_PROMPT


def error_of(page: str, field: str) -> str:
    found = re.search(rf'<p class="field-error" id="[^"]+" data-error-for="{re.escape(field)}"'
                      rf'( hidden)?>(.*?)</p>', page, re.S)
    assert found is not None, field
    return html.unescape(found.group(2))


def test_a_preview_answers_with_the_draft_and_changes_nothing_live(
    web_server: LiveServer, operator: Operator,
) -> None:
    web_server.generator.replies.extend(["Ahoy! Pine the pirate here.", "Arr, from TOML."])

    fields = operator.preview("hello", system_prompt="You are Pine, a pirate.")
    toml = operator.preview("hello", "toml-form",
                            source=PINE_TEST_PERSONA.replace(LIVE_PROMPT, "You are TOML Pine."))
    invalid = operator.preview("hello", **{"generation.temperature": "-2"})
    empty = operator.preview("  ")

    assert fields.status_code == 200, fields.text
    assert fields.json() == {"reply": "Ahoy! Pine the pirate here.", "persona": "pine",
                             "display_name": "Pine"}
    assert toml.json()["reply"] == "Arr, from TOML."
    requests = web_server.generator.requests
    assert [r.messages[0].content for r in requests] == ["You are Pine, a pirate.",
                                                         "You are TOML Pine."]
    assert requests[0].messages[-1].content == "hello"
    assert requests[0].sampling.max_new_tokens == 64  # the rest of the persona as it is
    assert invalid.status_code == 400
    assert invalid.json()["error"]["code"] == "invalid_draft"
    assert invalid.json()["error"]["fields"] == {
        "generation.temperature": "[generation] temperature must be 0 or more"}
    assert empty.status_code == 400
    assert len(requests) == 2
    # Nothing live changed, nothing was stored.
    assert operator.live_prompt() == LIVE_PROMPT
    assert operator.history() == []
    assert web_server.messages() == []


def test_publishing_changes_the_next_reply_without_a_restart(
    web_server: LiveServer, operator: Operator,
) -> None:
    response = operator.publish(system_prompt="You are Pine.\nAnswer in one \"short\" line.",
                                display_name="Pine \\ Co", escalation_keywords="human, agent ,",
                                comment="  shorter   answers ")

    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/personas/pine?published=1"
    ask(web_server, "hi")
    sent = web_server.generator.requests[-1].messages[0].content
    assert sent == "You are Pine.\nAnswer in one \"short\" line."
    assert operator.history() == [(1, "olga", "shorter answers")]
    live = web_server.engine.persona("pine")  # type: ignore[union-attr]
    assert live.display_name == "Pine \\ Co"
    assert live.escalation_keywords == ("human", "agent")
    assert live.memory.history_tokens == 512  # what the form does not show is kept
    assert live.generation.temperature == 0.0
    page = operator.page(response.headers["location"])
    assert "Version 1 is live: the next replies use it." in page
    assert form_fields(page, "persona-form")["base_version"] == "1"
    assert form_fields(page, "persona-form")["system_prompt"] == sent
    source = form_fields(page, "toml-form")["source"]
    assert tomllib.loads(source)["system_prompt"] == sent

    # The same form again: nothing changed, nothing published.
    again = operator.publish()
    assert again.status_code == 400
    assert "Nothing changed" in again.text
    # A form from before someone else's publish is refused, and the edit is kept.
    stale = {**form_fields(page, "persona-form"), "system_prompt": "You are Pine, late."}
    operator.publish(greeting="Hello from version 2!")
    late = operator.client.post(EDITOR, data=stale)
    assert late.status_code == 409
    assert "olga published version 2 after you opened this page" in late.text
    assert form_fields(late.text, "persona-form")["system_prompt"] == "You are Pine, late."
    assert form_fields(late.text, "persona-form")["base_version"] == "2"
    assert [v for v, _, _ in operator.history()] == [2, 1]
    # ... and goes through when sent again from that page.
    resent = operator.client.post(EDITOR, data=form_fields(late.text, "persona-form"))
    assert resent.status_code == 303
    assert operator.live_prompt() == "You are Pine, late."


def test_the_history_shows_every_version_and_rollback_restores_one_as_a_new_version(
    web_server: LiveServer, operator: Operator,
) -> None:
    operator.publish(system_prompt="You are Pine, brief.", comment="brief")
    first_source = web_server.call(lambda: web_server.store.persona_versions("pine"))[0].source
    edited = PINE_TEST_PERSONA.replace(LIVE_PROMPT, "You are Pine <script>alert(1)</script>.")
    assert operator.publish("toml-form", source=edited, comment="by hand").status_code == 303

    page = operator.page()
    versions = re.findall(r'<li class="version( live)?" id="version-(\d+)">', page)
    assert versions == [(" live", "2"), ("", "1")]
    assert "by olga" in page
    assert '<p class="comment">by hand</p>' in page
    # The changes, escaped: version 2 from version 1 (from TOML written by the fields form).
    changes = re.search(r'id="version-2">.*?<pre class="diff">(.*?)</pre>', page, re.S)
    assert changes is not None
    assert '<span class="d-add">+system_prompt = &#34;You are Pine &lt;script&gt;alert(1)' \
        '&lt;/script&gt;.&#34;</span>' in changes.group(1)
    assert '<span class="d-del">-system_prompt = &#34;You are Pine, brief.&#34;</span>' \
        in changes.group(1)
    assert "<script>alert" not in page
    assert 'href="/console/personas/pine/rollback?version=1"' in page
    assert 'href="/console/personas/pine/rollback?version=2"' not in page  # live

    confirm = operator.client.get("/console/personas/pine/rollback?version=1")
    assert confirm.status_code == 200
    assert "Roll Pine back to version 1?" in confirm.text
    assert '<span class="d-add">+system_prompt = &#34;You are Pine, brief.&#34;</span>' \
        in confirm.text
    unconfirmed = operator.client.post("/console/personas/pine/rollback",
                                       data={"csrf_token": operator.csrf, "version": "1"})
    assert unconfirmed.status_code == 400
    assert operator.history()[0][0] == 2
    missing = operator.client.get("/console/personas/pine/rollback?version=7")
    assert missing.status_code == 404

    response = operator.client.post("/console/personas/pine/rollback", data={
        "csrf_token": operator.csrf, "version": "1", "confirm": "yes"})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/personas/pine?published=3&rolled_back=1"
    assert operator.history() == [(3, "olga", "rollback to version 1"), (2, "olga", "by hand"),
                                  (1, "olga", "brief")]
    records = web_server.call(lambda: web_server.store.persona_versions("pine"))
    assert records[0].source == first_source
    assert operator.live_prompt() == "You are Pine, brief."
    ask(web_server, "hi")
    assert web_server.generator.requests[-1].messages[0].content == "You are Pine, brief."
    page = operator.page(response.headers["location"])
    assert "Rolled back to version 1, published again as version 3." in page
    # Only versions that differ from the live one offer a rollback.
    assert re.findall(r'/rollback\?version=(\w+)"', page) == ["2", "file"]
    # Rolling back to what is live changes nothing; the file brings the start back.
    same = operator.client.post("/console/personas/pine/rollback", data={
        "csrf_token": operator.csrf, "version": "1", "confirm": "yes"})
    assert same.status_code == 400
    assert "is what is live already" in same.text
    to_file = operator.client.post("/console/personas/pine/rollback", data={
        "csrf_token": operator.csrf, "version": "file", "confirm": "yes"})
    assert to_file.status_code == 303
    assert operator.history()[0] == (4, "olga", "rollback to the file")
    assert web_server.call(lambda: web_server.store.persona_versions("pine"))[0].source == \
        PINE_TEST_PERSONA
    assert operator.live_prompt() == LIVE_PROMPT
    listing = operator.page("/console/personas")
    assert re.search(r'class="live-version">version 4<', listing)
    assert "olga, " in listing


# -- the TOML the fields form writes ----------------------------------------------------------


@given(st.text())
def test_any_text_survives_a_toml_string(text: str) -> None:
    for multiline in (True, False):
        assert tomllib.loads("k = " + toml_string(text, multiline=multiline))["k"] == text


def test_the_fields_form_rewrites_only_its_fields_and_keeps_the_rest() -> None:
    base = PINE_TEST_PERSONA + '\n# a comment\n[generation.extra]\nstop_words = ["x"]\n'
    base = base.replace("max_new_tokens = 64", 'max_new_tokens = 64\nstop = ["User:"]')

    written = source_from_fields(base, {
        "system_prompt": 'Say """hi""" \\ \u0007 bye\r\nLine two"', "greeting": "",
        "generation.top_p": "0.5", "escalation_keywords": " , ",
    })

    data = tomllib.loads(written)
    assert data == {
        "name": "pine", "display_name": "Pine",
        "system_prompt": 'Say """hi""" \\ \u0007 bye\nLine two"',
        "generation": {"temperature": 0.0, "top_p": 0.5, "max_new_tokens": 64,
                       "stop": ["User:"], "extra": {"stop_words": ["x"]}},
        "memory": {"history_tokens": 512},
    }
    assert dump_toml(data) == written
    assert written.startswith('name = "pine"\ndisplay_name = "Pine"\nsystem_prompt = """\n')


# -- in a browser -------------------------------------------------------------------------------


def test_an_operator_edits_previews_and_publishes_a_persona_in_the_browser(
    web_server: LiveServer, browser: Browser, contexts: list[BrowserContext],
) -> None:
    """With ``UPDATE_SCREENSHOTS=1`` it saves ``docs/console-persona.png``."""
    expect.set_options(timeout=10_000)
    server = web_server
    add_user(server, "olga", "operator", display_name="Olga")
    tab = ConsoleTab(new_context(browser, contexts), server.url)
    tab.log_in("olga")
    page = tab.page
    page.get_by_role("link", name="Personas").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Personas")
    page.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(server.url + EDITOR)

    prompt = page.get_by_label("System prompt")
    expect(prompt).to_have_value(LIVE_PROMPT)
    prompt.fill("You are Pine, the Harbor & Pine assistant. Answer in two sentences at "
                "most, and offer a person when you are unsure.")
    server.generator.replies.append(
        "Our Driftwood 2 tent weighs 1.9 kg. Anything else I can help with?")
    page.get_by_label("Test message").fill("How heavy is the Driftwood 2 tent?")
    page.get_by_role("button", name="Preview", exact=True).click()
    expect(page.locator("#preview-reply-text")).to_have_text(
        "Our Driftwood 2 tent weighs 1.9 kg. Anything else I can help with?")
    expect(page.locator("#status")).to_contain_text("the live persona has not changed")
    assert server.generator.requests[-1].messages[0].content.startswith(
        "You are Pine, the Harbor & Pine assistant. Answer in two")
    assert server.engine is not None
    assert server.engine.persona("pine").system_prompt == LIVE_PROMPT

    # An invalid value is shown next to its field, on a preview too.
    page.get_by_label("Temperature").fill("hot")
    page.get_by_role("button", name="Preview", exact=True).click()
    expect(page.locator('[data-error-for="generation.temperature"]')).to_have_text(
        "must be a number, like 0.7")
    page.get_by_label("Temperature").fill("0.2")

    page.locator("#p-comment").fill("shorter answers, offer a person")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(".notice")).to_have_text(
        "Version 1 is live: the next replies use it.")
    first = page.locator("#version-1")
    expect(first).to_contain_text("by olga")
    expect(first).to_contain_text("shorter answers, offer a person")
    assert server.engine.persona("pine").generation.temperature == 0.2

    # A second draft, previewed, with the first version's changes open: the screenshot.
    page.get_by_label("Greeting").fill("Hi! I'm Pine from Harbor & Pine. What are you "
                                       "planning?")
    server.generator.replies.append("Hi! I'm Pine. Planning a trip?")
    page.get_by_label("Test message").fill("hello")
    page.get_by_role("button", name="Preview", exact=True).click()
    expect(page.locator("#preview-reply-text")).to_have_text("Hi! I'm Pine. Planning a trip?")
    first.locator("summary").click()
    expect(first.locator("pre.diff")).to_contain_text("+system_prompt")
    page.evaluate("window.scrollTo(0, 0)")  # the preview panel sticks to the top
    shoot(page, "console-persona.png")
    # The refused preview's 400 is the only thing the browser complained about.
    tab.errors.remove("Failed to load resource: the server responded with a status of 400 "
                      "(Bad Request)")
    tab.assert_clean()

