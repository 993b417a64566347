"""ragq driven by the official ``ragflow-sdk`` 0.22.1 client: datasets, documents, parsing,
chat assistants, sessions, native completions (streamed and not) and retrieval.

Every test asserts on what the SDK returns (names, ids, states, answer text, reference chunks),
not only on the absence of an exception. The fixtures ``kb`` and ``kb_chat`` (conftest.py)
create the dataset and the chat with the SDK; the tests here check those steps' results and go
on from there.
"""

from __future__ import annotations

import re

import pytest

from conftest import DOCS, FACTS, Fact, unique

FACTS_BY_DOC = {f.doc_name: f for f in FACTS}


def contents(messages) -> list[str]:
    return [m.content for m in messages]


def without_citations(text: str) -> list[str]:
    """The words of an answer without `[ID:n]` markers (the final answer may insert them)."""
    return re.sub(r"\s*\[ID:\d+\]", " ", text).split()


# ---------------------------------------------------------------------------------------------
# Datasets, documents, parsing


def test_upload_returns_documents_of_the_dataset(kb):
    assert set(kb.docs) == {f.doc_name for f in FACTS}
    for name, doc in kb.docs.items():
        assert len(doc.id) == 32, doc.id
        # The SDK's Document needs `dataset_id` for every later call (list_chunks, update, …).
        assert doc.dataset_id == kb.dataset.id
        assert doc.name == name
        assert doc.size == len((DOCS / name).read_bytes())
    assert kb.dataset.embedding_model == "demo-embed", "the tenant's embedding model by default"


def test_parse_documents_reaches_done_with_chunks(kb):
    by_id = {doc_id: (run, chunks, tokens) for doc_id, run, chunks, tokens in kb.parsed}
    assert set(by_id) == {d.id for d in kb.docs.values()}
    for name, doc in kb.docs.items():
        run, chunks, tokens = by_id[doc.id]
        assert run == "DONE", f"{name}: {run}"
        assert chunks > 0, f"{name} has no chunks"
        assert tokens > 0, f"{name} has no tokens"

    listed = {d.id: d for d in kb.dataset.list_documents()}
    assert set(listed) == {d.id for d in kb.docs.values()}
    for doc in listed.values():
        assert doc.run == "DONE" and doc.progress == 1.0 and doc.chunk_count > 0, doc.to_json()


def test_parsed_chunks_hold_the_document_text(kb):
    for fact in FACTS:
        doc = kb.docs[fact.doc_name]
        chunks = doc.list_chunks()
        assert chunks, fact.doc_name
        text = " ".join(" ".join(c.content.split()) for c in chunks)
        assert fact.sentence in text, (fact.doc_name, text)
        assert "<p>" not in text, "HTML tags are stripped"


def test_list_datasets_counts_documents_and_chunks(rag, kb):
    [listed] = rag.list_datasets(name=kb.dataset.name)
    assert listed.id == kb.dataset.id
    assert listed.document_count == len(FACTS)
    assert listed.chunk_count == sum(chunks for _, _, chunks, _ in kb.parsed)


# ---------------------------------------------------------------------------------------------
# Chat assistants


def test_create_chat_uses_the_dataset_and_the_tenant_default_model(kb, kb_chat):
    assert len(kb_chat.id) == 32
    assert kb_chat.dataset_ids == [kb.dataset.id]
    # No `llm.model_name` was sent: the tenant's (only) chat model, registered by up.sh.
    assert kb_chat.llm.model_name == "demo-llm"
    assert kb_chat.prompt.show_quote is True
    # SDK default 0.7 is read back as sent (RAGFlow itself would answer 0.30000000000000004).
    assert kb_chat.prompt.keywords_similarity_weight == pytest.approx(0.7)


def test_list_chats_finds_ours_by_name_and_id(rag, kb, kb_chat):
    [by_name] = rag.list_chats(name=kb_chat.name)
    assert by_name.id == kb_chat.id
    # The list answers full dataset objects under `datasets` (RAGFlow's shape), not dataset_ids.
    assert [d["id"] for d in by_name.datasets] == [kb.dataset.id]
    [by_id] = rag.list_chats(id=kb_chat.id)
    assert by_id.name == kb_chat.name
    assert kb_chat.id in {c.id for c in rag.list_chats(page_size=100)}


def test_chat_update_and_delete(rag, kb):
    chat = rag.create_chat(unique("compat-tmp"), dataset_ids=[kb.dataset.id])
    try:
        new_name = unique("compat-tmp-renamed")
        chat.update({"name": new_name})
        [listed] = rag.list_chats(id=chat.id)
        assert listed.name == new_name
        # A name-only update keeps the datasets (RAGFlow 0.22.1 would unlink them).
        assert [d["id"] for d in listed.datasets] == [kb.dataset.id]
    finally:
        rag.delete_chats(ids=[chat.id])
    with pytest.raises(Exception, match="doesn't exist"):
        rag.list_chats(id=chat.id)


# ---------------------------------------------------------------------------------------------
# Sessions and completions


@pytest.mark.parametrize("fact", FACTS, ids=[f.doc_name for f in FACTS])
def test_stream_ask_is_cumulative_and_cites_the_document(kb, kb_chat, fact: Fact):
    session = kb_chat.create_session(unique("compat-stream"))
    assert session.chat_id == kb_chat.id
    assert session.messages[0]["role"] == "assistant"

    messages = list(session.ask(fact.question, stream=True))
    texts = contents(messages)
    assert len(messages) >= 3, f"expected a streamed answer, got {texts!r}"
    partial, final = messages[:-1], messages[-1]

    # ragflow-sdk 0.22.1 expects cumulative answers: each event extends the previous one.
    for before, after in zip(texts, texts[1:-1]):
        assert after.startswith(before), (before, after)
    # Partial events carry no chunks; the final (decorated) message carries the reference.
    assert all(not m.reference for m in partial), [m.reference for m in partial]

    # The final message is the whole streamed answer, possibly with citations inserted.
    assert without_citations(final.content) == without_citations(texts[-2])
    assert fact.sentence in final.content, final.content
    assert "[ID:0]" in final.content
    assert final.reference, "the final message has reference chunks"
    best = final.reference[0]
    assert best["document_name"] == fact.doc_name
    assert best["document_id"] == kb.doc_id(fact.doc_name)
    assert best["dataset_id"] == kb.dataset.id
    assert fact.sentence in " ".join(best["content"].split())


def test_non_stream_ask_gives_the_same_answer(kb, kb_chat):
    fact = FACTS[0]
    session = kb_chat.create_session(unique("compat-nonstream"))
    streamed = list(session.ask(fact.question, stream=True))[-1]
    [answer] = list(session.ask(fact.question, stream=False))
    assert answer.content == streamed.content
    assert fact.sentence in answer.content
    assert answer.reference and answer.reference[0]["document_name"] == fact.doc_name
    assert [c["id"] for c in answer.reference] == [c["id"] for c in streamed.reference]

    # Both turns are saved in the session history, with their references.
    [listed] = kb_chat.list_sessions(id=session.id)
    roles = [m["role"] for m in listed.messages]
    assert roles == ["assistant", "user", "assistant", "user", "assistant"], listed.messages
    assert [m["content"] for m in listed.messages[1::2]] == [fact.question, fact.question]
    for saved in listed.messages[2::2]:
        assert saved["content"] == answer.content
        assert saved["reference"][0]["document_id"] == kb.doc_id(fact.doc_name)


def test_session_rename_list_and_delete(kb_chat):
    session = kb_chat.create_session(unique("compat-session"))
    keep = kb_chat.create_session(unique("compat-session-keep"))
    assert {session.id, keep.id} <= {s.id for s in kb_chat.list_sessions(page_size=100)}

    renamed = unique("renamed")
    session.update({"name": renamed})
    [listed] = kb_chat.list_sessions(name=renamed)
    assert listed.id == session.id
    assert listed.chat_id == kb_chat.id
    assert [s.name for s in kb_chat.list_sessions(id=session.id)] == [renamed]

    kb_chat.delete_sessions(ids=[session.id])
    remaining = {s.id for s in kb_chat.list_sessions(page_size=100)}
    assert session.id not in remaining
    assert keep.id in remaining, "deleting one session leaves the others"
    kb_chat.delete_sessions(ids=[keep.id])
    assert keep.id not in {s.id for s in kb_chat.list_sessions(page_size=100)}


def test_ask_in_a_deleted_session_is_refused(rag, kb_chat):
    session = kb_chat.create_session(unique("compat-gone"))
    kb_chat.delete_sessions(ids=[session.id])
    # RAGFlow answers a plain `{"code": 102, "message": …}` (no `data`), even for stream=True;
    # ragflow-sdk 0.22.1 then fails on the missing `data` key, exactly as against RAGFlow.
    for stream in (False, True):
        with pytest.raises(KeyError, match="data"):
            list(session.ask(FACTS[0].question, stream=stream))
    body = {"question": FACTS[0].question, "stream": False, "session_id": session.id}
    res = rag.post(f"/chats/{kb_chat.id}/completions", body).json()
    assert res == {"code": 102, "message": f"You don't own the session {session.id}"}


# ---------------------------------------------------------------------------------------------
# Retrieval


@pytest.mark.parametrize("fact", FACTS, ids=[f.doc_name for f in FACTS])
def test_retrieve_returns_the_chunk_with_the_fact(rag, kb, fact: Fact):
    chunks = rag.retrieve(dataset_ids=[kb.dataset.id], question=fact.question)
    assert chunks, "no chunk retrieved"
    best = chunks[0]
    assert best.document_id == kb.doc_id(fact.doc_name)
    assert best.dataset_id == kb.dataset.id
    assert fact.sentence in " ".join(best.content.split())
    assert 0 < best.similarity <= 1
    assert [c.similarity for c in chunks] == sorted((c.similarity for c in chunks), reverse=True)


def test_retrieve_limited_to_other_documents_misses_the_fact(rag, kb):
    fact = FACTS[0]
    others = [kb.doc_id(f.doc_name) for f in FACTS if f is not fact]
    chunks = rag.retrieve(dataset_ids=[kb.dataset.id], document_ids=others, question=fact.question)
    assert all(c.document_id in others for c in chunks)
    assert all(fact.sentence not in c.content for c in chunks)


# ---------------------------------------------------------------------------------------------
# Chunk updates (ragflow-sdk 0.22.1 sends PUT, >= 0.23 PATCH: both must work)


def test_chunk_update_replaces_content_and_keywords(kb):
    doc = next(iter(kb.docs.values()))
    chunk = doc.add_chunk(content="The zebra protocol retries seven times.", important_keywords=["zebra"])
    try:
        chunk.update({"content": "The okapi gateway answers within forty milliseconds.",
                      "important_keywords": ["okapi", "gateway"]})
        [listed] = doc.list_chunks(id=chunk.id)
        assert listed.content == "The okapi gateway answers within forty milliseconds."
        assert listed.important_keywords == ["okapi", "gateway"]
        chunk.update({"available": False})
        [listed] = doc.list_chunks(id=chunk.id)
        assert listed.available is False
    finally:
        doc.delete_chunks([chunk.id])
    assert not [c for c in doc.list_chunks(page_size=1024) if c.id == chunk.id]
