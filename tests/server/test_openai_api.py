"""The OpenAI-compatible API, driven by the official ``openai`` client over real HTTP.

Each test runs against ``web_server`` (tests/live_server.py): uvicorn on loopback with the
scripted generator as the model, so every reply and every GenerationRequest is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from botkit.errors import GeneratorBusy
from botkit.generation import ChatMessage, GenerationRequest
from botkit.testing import ScriptedGenerator
from tests.live_server import LiveServer

USER = [{"role": "user", "content": "Where is my order?"}]


def client_for(server: LiveServer, api_key: str = "sk-unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0,
                         timeout=10)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module's tests that need no settings of their own (starting
    one takes a third of a second); ``web_server`` below hands it out reset."""
    server = LiveServer(tmp_path_factory.mktemp("openai-api")).start()
    yield server
    server.stop()


@pytest.fixture
def web_server(shared_server: LiveServer) -> Iterator[LiveServer]:
    """Overrides tests/conftest.py's: the shared server, its scripted generator reset."""
    assert shared_server.engine is not None
    adapters = dict(shared_server.engine._adapter_versions)
    generator = shared_server.generator
    fresh = ScriptedGenerator()
    generator.replies.clear()
    generator.requests.clear()
    generator.default, generator.delay_s = fresh.default, fresh.delay_s
    generator.stall_after = fresh.stall_after
    yield shared_server
    shared_server.engine._adapter_versions.clear()
    shared_server.engine._adapter_versions.update(adapters)


@pytest.fixture
def client(web_server: LiveServer) -> openai.OpenAI:
    return client_for(web_server)


def system_prompt(server: LiveServer) -> str:
    assert server.engine is not None
    return server.engine.persona("pine").system_prompt


def last_request(server: LiveServer) -> GenerationRequest:
    return server.generator.requests[-1]


# -- non-streaming ---------------------------------------------------------------------


def test_completion_returns_the_reply_with_usage(web_server: LiveServer,
                                                 client: openai.OpenAI) -> None:
    reply = "Your order ships tomorrow, by noon."
    web_server.generator.replies.append(reply)

    result = client.chat.completions.create(model="pine", messages=USER)

    gen = web_server.generator
    assert result.object == "chat.completion"
    assert result.model == "pine"
    assert result.id.startswith("chatcmpl-")
    assert len(result.choices) == 1
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == reply
    assert choice.finish_reason == "stop"
    expected_prompt = gen.count_tokens([
        ChatMessage("system", system_prompt(web_server)),
        ChatMessage("user", "Where is my order?"),
    ])
    assert result.usage is not None
    assert result.usage.prompt_tokens == expected_prompt
    assert result.usage.completion_tokens == gen.count_text(reply)
    assert result.usage.total_tokens == expected_prompt + gen.count_text(reply)
    # Stateless, like OpenAI's API: nothing lands in conversation memory.
    assert web_server.messages() == []


def test_content_parts_are_joined(web_server: LiveServer, client: openai.OpenAI) -> None:
    web_server.generator.replies.append("ok")
    client.chat.completions.create(model="pine", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hello "}, {"type": "text", "text": "there"},
    ]}])
    assert last_request(web_server).messages[-1] == ChatMessage("user", "Hello there")


# -- streaming -------------------------------------------------------------------------


def test_stream_delivers_the_reply_in_chunks(web_server: LiveServer,
                                             client: openai.OpenAI) -> None:
    reply = "Sure, I can help with that order today."
    web_server.generator.replies.append(reply)

    chunks = list(client.chat.completions.create(
        model="pine", messages=USER, stream=True,
    ))

    assert all(c.object == "chat.completion.chunk" and c.model == "pine" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == reply
    content_chunks = [c for c in with_choices if c.choices[0].delta.content]
    assert len(content_chunks) > 1, "the reply should stream in pieces"
    finishes = [c.choices[0].finish_reason for c in with_choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked for"


def test_stream_with_include_usage_ends_with_a_usage_chunk(web_server: LiveServer,
                                                           client: openai.OpenAI) -> None:
    reply = "Two words."
    web_server.generator.replies.append(reply)

    chunks = list(client.chat.completions.create(
        model="pine", messages=USER, stream=True,
        stream_options={"include_usage": True},
    ))

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    gen = web_server.generator
    prompt = gen.count_tokens(last_request(web_server).messages)
    assert usage_chunk.usage.prompt_tokens == prompt
    assert usage_chunk.usage.completion_tokens == gen.count_text(reply)
    assert usage_chunk.usage.total_tokens == prompt + gen.count_text(reply)
    assert [c for c in chunks[:-1] if c.usage is not None] == []


def test_stream_is_server_sent_events_ending_with_done(web_server: LiveServer) -> None:
    web_server.generator.replies.append("Hello there.")
    with httpx.stream("POST", web_server.url + "/v1/chat/completions", json={
        "model": "pine", "messages": USER, "stream": True,
    }, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"


# -- stop strings ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("reply", "stop", "expected"),
    [
        ("Alpha beta STOP gamma", ["STOP"], "Alpha beta "),
        ("Alpha beta STOP gamma", "STOP", "Alpha beta "),
        # "beta gam" spans two of the generator's pieces ("beta ", "gamma ").
        ("Alpha beta gamma delta", ["beta gam"], "Alpha "),
        # The earliest of several stop strings wins.
        ("one two three four", ["four", "two"], "one "),
        # A stop string that never appears leaves the reply whole, held-back text included.
        ("Alpha beta gamma", ["gamma!"], "Alpha beta gamma"),
    ],
)
def test_stop_strings_cut_the_reply(
    web_server: LiveServer, client: openai.OpenAI, stream: bool,
    reply: str, stop: str | list[str], expected: str,
) -> None:
    web_server.generator.replies.append(reply)

    if stream:
        chunks = list(client.chat.completions.create(
            model="pine", messages=USER, stop=stop, stream=True,
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        result = client.chat.completions.create(
            model="pine", messages=USER, stop=stop,
        )
        text = result.choices[0].message.content or ""
        finish = result.choices[0].finish_reason
        assert result.usage is not None
        assert result.usage.completion_tokens == web_server.generator.count_text(expected)

    assert text == expected
    assert finish == "stop"
    sent = [stop] if isinstance(stop, str) else stop
    assert set(sent) <= set(last_request(web_server).sampling.stop)


# -- sampling --------------------------------------------------------------------------


def test_sampling_parameters_reach_the_generator(web_server: LiveServer,
                                                 client: openai.OpenAI) -> None:
    client.chat.completions.create(
        model="pine", messages=USER,
        temperature=0.7, top_p=0.85, seed=1234, max_tokens=40,
    )
    sampling = last_request(web_server).sampling
    assert sampling.temperature == pytest.approx(0.7)
    assert sampling.top_p == pytest.approx(0.85)
    assert sampling.seed == 1234
    assert sampling.max_new_tokens == 40


def test_max_completion_tokens_is_honoured_and_defaults_come_from_the_persona(
    web_server: LiveServer, client: openai.OpenAI,
) -> None:
    client.chat.completions.create(model="pine", messages=USER,
                                   max_completion_tokens=17)
    assert last_request(web_server).sampling.max_new_tokens == 17

    client.chat.completions.create(model="pine", messages=USER)
    sampling = last_request(web_server).sampling
    # The test persona: temperature 0.0, max_new_tokens 64.
    assert sampling.temperature == 0.0
    assert sampling.max_new_tokens == 64
    assert sampling.seed is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_max_tokens_shorter_than_the_reply_ends_with_length(
    web_server: LiveServer, client: openai.OpenAI, stream: bool,
) -> None:
    reply = "one two three four five six seven eight"
    web_server.generator.replies.append(reply)
    count = web_server.generator.count_text

    if stream:
        chunks = list(client.chat.completions.create(
            model="pine", messages=USER, max_tokens=3, stream=True,
            stream_options={"include_usage": True},
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
    else:
        result = client.chat.completions.create(
            model="pine", messages=USER, max_tokens=3,
        )
        text = result.choices[0].message.content or ""
        finish = result.choices[0].finish_reason
        usage = result.usage

    assert last_request(web_server).sampling.max_new_tokens == 3
    assert finish == "length"
    # What a client expects from max_tokens=3: at most 3 tokens of the reply, counted so.
    assert reply.startswith(text)
    assert count(text) <= 3, f"max_tokens=3 but the reply has {count(text)} tokens: {text!r}"
    assert usage is not None
    assert usage.completion_tokens <= 3


def test_a_reply_of_exactly_max_tokens_is_not_cut(web_server: LiveServer,
                                                  client: openai.OpenAI) -> None:
    web_server.generator.replies.append("one two three")
    result = client.chat.completions.create(model="pine", messages=USER,
                                            max_tokens=3)
    assert result.choices[0].message.content == "one two three"


# -- prompts and models ----------------------------------------------------------------


def test_persona_system_prompt_is_prepended_without_a_system_message(
    web_server: LiveServer, client: openai.OpenAI,
) -> None:
    client.chat.completions.create(model="pine", messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Where is my order?"},
    ])
    assert last_request(web_server).messages == (
        ChatMessage("system", system_prompt(web_server)),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "Where is my order?"),
    )


@pytest.mark.parametrize("role", ["system", "developer"])
def test_the_clients_system_message_is_used_as_is(web_server: LiveServer,
                                                  client: openai.OpenAI, role: str) -> None:
    client.chat.completions.create(model="pine", messages=[
        {"role": role, "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
    ])
    messages = last_request(web_server).messages
    assert messages == (ChatMessage("system", "Answer in French."), ChatMessage("user", "Hello"))
    assert all(system_prompt(web_server) not in m.content for m in messages)


def test_base_model_uses_no_adapter(web_server: LiveServer, client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model="pine/base", messages=USER)
    assert result.model == "pine/base"
    request = last_request(web_server)
    assert request.adapter is None
    assert request.messages[0] == ChatMessage("system", system_prompt(web_server))


def test_persona_with_an_adapter_uses_it_and_base_does_not(web_server: LiveServer,
                                                           client: openai.OpenAI) -> None:
    # The test persona has no LoRA; record one as loaded, as DialogueEngine.load_adapters
    # does, to see the API route "pine" through it and "pine/base" around it (the
    # web_server fixture restores the engine's adapters afterwards).
    assert web_server.engine is not None
    web_server.engine._adapter_versions["pine"] = "v7"

    client.chat.completions.create(model="pine", messages=USER)
    assert last_request(web_server).adapter == "pine"
    client.chat.completions.create(model="pine/base", messages=USER)
    assert last_request(web_server).adapter is None
    client.chat.completions.create(model="pine/v7", messages=USER)
    assert last_request(web_server).adapter == "pine"
    assert [m.id for m in client.models.list()] == ["pine", "pine/base"]


def test_models_lists_the_personas(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == ["pine"]
    assert models[0].object == "model"
    assert models[0].owned_by == "botkit"
    assert client.models.retrieve("pine").id == "pine"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("cedar")


# -- errors ----------------------------------------------------------------------------


def test_a_wrong_api_key_is_refused(make_web_server: Callable[..., LiveServer]) -> None:
    server = make_web_server(api_keys=("sk-test",))

    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(server, "sk-wrong").chat.completions.create(
            model="pine", messages=USER,
        )
    assert caught.value.status_code == 401
    body = caught.value.response.json()
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "sk-wrong").models.list()
    assert server.generator.requests == []

    server.generator.replies.append("Welcome.")
    good = client_for(server, "sk-test")
    result = good.chat.completions.create(model="pine", messages=USER)
    assert result.choices[0].message.content == "Welcome."
    assert [m.id for m in good.models.list()] == ["pine"]


def test_a_missing_api_key_is_refused(make_web_server: Callable[..., LiveServer]) -> None:
    server = make_web_server(api_keys=("sk-test",))
    for method, path, body in (
        ("POST", "/v1/chat/completions", {"model": "pine", "messages": USER}),
        ("GET", "/v1/models", None),
    ):
        response = httpx.request(method, server.url + path, json=body, timeout=10)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        assert "Authorization: Bearer" in error["message"]
    assert server.generator.requests == []


def test_keys_are_required_beyond_loopback(make_web_server: Callable[..., LiveServer]) -> None:
    server = make_web_server(server_settings={"host": "0.0.0.0"})
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(server, "anything").chat.completions.create(
            model="pine", messages=USER,
        )
    assert caught.value.status_code == 401
    assert "BOTKIT_API_KEYS" in caught.value.message
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "anything").models.list()
    assert server.generator.requests == []


def test_keys_work_beyond_loopback(make_web_server: Callable[..., LiveServer]) -> None:
    server = make_web_server(api_keys=("sk-a", "sk-b"), server_settings={"host": "0.0.0.0"})
    assert [m.id for m in client_for(server, "sk-b").models.list()] == ["pine"]
    with pytest.raises(openai.AuthenticationError):
        client_for(server, "sk-c").models.list()


@pytest.mark.parametrize("model", ["cedar", "pine/v9", "cedar/base"])
def test_an_unknown_model_is_not_found(web_server: LiveServer, client: openai.OpenAI,
                                       model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=model, messages=USER)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "pine" in caught.value.message
    assert web_server.generator.requests == []


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}]},
         "messages[0].content"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": "x"}, "seed"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ],
)
def test_invalid_parameters_are_bad_requests(
    web_server: LiveServer, client: openai.OpenAI, overrides: dict[str, object], param: str,
) -> None:
    kwargs: dict[str, object] = {"model": "pine", "messages": USER, **overrides}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**kwargs)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.message
    assert web_server.generator.requests == []


def test_a_context_too_long_is_a_bad_request(web_server: LiveServer,
                                             client: openai.OpenAI) -> None:
    # 3,000 characters, under the 4,000-character message limit, but 3,000 tokens to the
    # scripted model's counting (each letter and each dot), over its 2,048-token window.
    text = "a." * 1500
    assert len(text) <= 4000
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="pine", messages=[
            {"role": "user", "content": text},
        ])
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert "2048" in caught.value.message
    assert web_server.generator.requests == []


def test_a_message_over_the_character_limit_is_a_bad_request(
    web_server: LiveServer, client: openai.OpenAI,
) -> None:
    text = " ".join(["word"] * 3000)  # 14,999 characters, also ~3,000 tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="pine", messages=[
            {"role": "user", "content": text},
        ])
    assert caught.value.code == "message_too_long"
    assert "4,000" in caught.value.message
    assert web_server.generator.requests == []


def test_an_oversize_body_is_refused_with_413(web_server: LiveServer,
                                              client: openai.OpenAI) -> None:
    big = "x " * 40_000  # 80,000 bytes, over max_body_bytes (65,536)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="pine", messages=[
            {"role": "user", "content": big},
        ])
    assert caught.value.status_code == 413
    assert caught.value.response.headers["content-type"].startswith("application/json")
    assert caught.value.code == "body_too_large"
    assert caught.value.message

    # Without Content-Length (chunked), the body is refused while it is read.
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "pine", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}]}'

    response = httpx.post(web_server.url + "/v1/chat/completions", content=chunks(),
                          headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert web_server.generator.requests == []


def test_bad_json_and_wrong_content_type(web_server: LiveServer) -> None:
    url = web_server.url + "/v1/chat/completions"
    response = httpx.post(url, content=b"{not json", timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = httpx.post(url, content=b"{}", headers={"content-type": "text/plain"},
                          timeout=10)
    assert response.status_code == 415


def _busy(request: GenerationRequest) -> str:
    raise GeneratorBusy("the queue is full")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_busy_model_is_503_with_retry_after(web_server: LiveServer, client: openai.OpenAI,
                                              stream: bool) -> None:
    web_server.generator.replies.append(_busy)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="pine", messages=USER,
                                       stream=stream)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "overloaded"
    assert caught.value.type == "server_error"

    # The next request is served normally.
    web_server.generator.replies.append("Back again.")
    result = client.chat.completions.create(model="pine", messages=USER)
    assert result.choices[0].message.content == "Back again."


async def test_async_client_streams_concurrently(web_server: LiveServer) -> None:
    import asyncio

    web_server.generator.delay_s = 0.01
    web_server.generator.default = lambda request: f"Echo: {request.messages[-1].content}"
    client = openai.AsyncOpenAI(base_url=web_server.url + "/v1", api_key="x", max_retries=0)

    async def ask(text: str) -> str:
        stream = await client.chat.completions.create(
            model="pine", messages=[{"role": "user", "content": text}], stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    try:
        answers = await asyncio.gather(*(ask(f"question {i}") for i in range(4)))
    finally:
        await client.close()
    assert answers == [f"Echo: question {i}" for i in range(4)]
