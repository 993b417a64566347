"""ragq's OpenAI-compatible endpoint driven by the official ``openai`` Python client.

``base_url = {RAGQ_API_URL}/api/v1/chats_openai/{chat_id}``; the client appends
``/chat/completions``. The chat is ``kb_chat`` (conftest.py), a chat on the run's own dataset,
so every answer can be checked for the fact its question asks about.

What is checked: streamed deltas add up to an answer that states the fact; a call without
``stream`` is a plain (non-streamed) completion (ragq defaults ``stream`` to false, unlike
RAGFlow 0.22.1, so that this SDK works); ``extra_body={"reference": True}`` adds RAGFlow's
``reference`` chunks (and ``final_content`` when streaming), read through the SDK's extra
fields; and errors are real HTTP errors, so the SDK raises its typed exceptions.
"""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from conftest import FACTS, Fact

FACT = FACTS[0]


def client_for(api_url: str, api_key: str, chat_id: str) -> OpenAI:
    # No retries: a failure must show up as it is, not be retried into a pass.
    return OpenAI(
        api_key=api_key,
        base_url=f"{api_url}/api/v1/chats_openai/{chat_id}",
        max_retries=0,
        timeout=30,
    )


@pytest.fixture(scope="module")
def client(api_url, api_key, kb_chat) -> OpenAI:
    return client_for(api_url, api_key, kb_chat.id)


def ask(fact: Fact) -> list[dict]:
    return [{"role": "user", "content": fact.question}]


def extra(obj, name):
    """A field the OpenAI schema does not define (ragq/RAGFlow's `reference`, `final_content`)."""
    return (obj.model_extra or {}).get(name)


@pytest.mark.parametrize("fact", FACTS, ids=[f.doc_name for f in FACTS])
def test_stream_deltas_add_up_to_the_answer(client, kb_chat, fact: Fact):
    stream = client.chat.completions.create(model="any-model", messages=ask(fact), stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3, f"expected a streamed answer, got {len(chunks)} chunk(s)"
    for c in chunks:
        assert c.object == "chat.completion.chunk"
        assert c.id == f"chatcmpl-{kb_chat.id}"
        assert len(c.choices) == 1 and c.choices[0].index == 0

    text_chunks, last = chunks[:-1], chunks[-1]
    deltas = [c.choices[0].delta.content for c in text_chunks]
    assert all(isinstance(d, str) and d for d in deltas), deltas
    assert all(c.choices[0].finish_reason is None for c in text_chunks)
    answer = "".join(deltas)
    assert fact.sentence in answer, answer
    assert answer.startswith(f"According to {fact.doc_name},"), "the best chunk is the fact's"

    # The final chunk: no content, finish_reason "stop", usage in characters (as RAGFlow).
    assert last.choices[0].delta.content is None
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.completion_tokens == len(answer)
    assert last.usage.prompt_tokens == len(fact.question)
    assert last.usage.total_tokens == len(answer) + len(fact.question)
    # Without `reference` nothing extra is added.
    assert extra(last.choices[0].delta, "reference") is None


def test_non_stream_when_stream_is_omitted(client):
    completion = client.chat.completions.create(model="any-model", messages=ask(FACT))
    assert completion.object == "chat.completion"
    assert completion.model == "any-model", "the request's model is echoed"
    [choice] = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert FACT.sentence in choice.message.content
    assert "[ID:0]" in choice.message.content
    assert extra(choice.message, "reference") is None
    assert completion.usage.completion_tokens == len(choice.message.content)


def test_stream_false_matches_the_streamed_answer(client):
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="m", messages=ask(FACT), stream=True)
    )
    completion = client.chat.completions.create(model="m", messages=ask(FACT), stream=False)
    assert completion.choices[0].message.content.split() == streamed.split()


def test_stream_with_reference_on_the_final_delta(client, kb):
    stream = client.chat.completions.create(
        model="m", messages=ask(FACT), stream=True, extra_body={"reference": True}
    )
    chunks = list(stream)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks)
    final = chunks[-1].choices[0]
    assert final.finish_reason == "stop"
    # Attribute access works too: the SDK's models keep unknown fields.
    reference = final.delta.reference
    assert reference == extra(final.delta, "reference")
    assert isinstance(reference, list) and reference, reference
    best = reference[0]
    assert best["document_name"] == FACT.doc_name
    assert best["document_id"] == kb.doc_id(FACT.doc_name)
    assert best["dataset_id"] == kb.dataset.id
    assert FACT.sentence in " ".join(best["content"].split())
    final_content = extra(final.delta, "final_content")
    assert FACT.sentence in final_content
    assert final_content.split() == answer.split()
    # Only the final chunk carries the reference.
    assert all(extra(c.choices[0].delta, "reference") is None for c in chunks[:-1])


def test_non_stream_with_reference_on_the_message(client, kb):
    completion = client.chat.completions.create(
        model="m", messages=ask(FACT), extra_body={"reference": True}
    )
    message = completion.choices[0].message
    assert FACT.sentence in message.content
    reference = extra(message, "reference")
    assert reference and reference[0]["document_id"] == kb.doc_id(FACT.doc_name)
    assert reference[0]["document_name"] == FACT.doc_name


def test_conversation_history_and_system_messages_are_accepted(client):
    other = FACTS[1]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": other.question},
        {"role": "assistant", "content": "Every 19 days."},
        {"role": "user", "content": FACT.question},
    ]
    completion = client.chat.completions.create(model="m", messages=messages)
    # The last user message is the question that retrieval answers.
    content = completion.choices[0].message.content
    assert content.startswith(f"According to {FACT.doc_name},")
    assert FACT.sentence in content


def test_empty_messages_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[])
    assert e.value.status_code == 400
    assert "You have to provide messages." in str(e.value)


def test_last_message_not_from_user_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="m",
            messages=[*ask(FACT), {"role": "assistant", "content": "Port 7443."}],
        )
    assert "The last content of this conversation is not from user." in str(e.value)


def test_unknown_chat_is_not_found(api_url, api_key):
    unknown = "0" * 32
    with pytest.raises(openai.NotFoundError) as e:
        client_for(api_url, api_key, unknown).chat.completions.create(
            model="m", messages=ask(FACT)
        )
    assert e.value.status_code == 404
    assert f"You don't own the chat {unknown}" in str(e.value)


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
def test_bad_api_key_is_authentication_error(api_url, kb_chat, stream):
    bad = client_for(api_url, "ragq-" + "0" * 64, kb_chat.id)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="m", messages=ask(FACT), stream=stream)
    assert e.value.status_code == 401
    assert "API key is invalid" in str(e.value)
