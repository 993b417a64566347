"""ragq's OpenAI Batch API driven by the official ``openai`` Python client.

Same ``base_url`` as the completion tests (``{RAGQ_API_URL}/api/v1/chats_openai/{chat_id}``):
``files.create(purpose="batch")`` uploads a JSONL of chat completion requests, one per fact of
``kb_chat``'s dataset (conftest.py) and some repeated; ``batches.create`` runs it on the batch
lane; ``batches.retrieve`` is polled to ``completed``; ``files.content(output_file_id)`` gives
one line per ``custom_id`` whose body is a ``chat.completion`` stating the fact, with the
``reference`` extension naming the document that states it.
"""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from conftest import FACTS
from test_openai_sdk import client_for


@pytest.fixture(scope="module")
def client(api_url, api_key, kb_chat):
    return client_for(api_url, api_key, kb_chat.id)


def request_line(custom_id: str, question: str) -> str:
    body = {"model": "any-model", "messages": [{"role": "user", "content": question}],
            "reference": True}
    return json.dumps({"custom_id": custom_id, "method": "POST",
                       "url": "/v1/chat/completions", "body": body})


def test_batch_answers_every_line_once(client):
    lines = {f"{f.doc_name}-{i}": f for i in range(3) for f in FACTS}
    data = "\n".join(request_line(cid, f.question) for cid, f in lines.items()) + "\n"
    upload = client.files.create(file=("questions.jsonl", io.BytesIO(data.encode())),
                                 purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(data.encode())

    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"suite": "compat"})
    assert batch.status in ("validating", "in_progress")
    deadline = time.monotonic() + 45
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == len(lines)
    assert batch.request_counts.completed == len(lines) and batch.request_counts.failed == 0
    assert batch.metadata == {"suite": "compat"}

    out = client.files.content(batch.output_file_id).text
    results = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert sorted(r["custom_id"] for r in results) == sorted(lines)
    for r in results:
        fact = lines[r["custom_id"]]
        assert r["error"] is None and r["response"]["status_code"] == 200
        message = r["response"]["body"]["choices"][0]["message"]
        assert fact.sentence.rstrip(".") in message["content"], message["content"]
        assert message["reference"][0]["document_name"] == fact.doc_name

    assert any(b.id == batch.id for b in client.batches.list(limit=10).data)


def test_bad_batch_input_is_rejected(client):
    line = request_line("same", FACTS[0].question)
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("dup.jsonl", io.BytesIO(f"{line}\n{line}\n".encode())),
                            purpose="batch")
    assert e.value.code == "duplicate_custom_id"

    bad = json.loads(line)
    bad["url"] = "/v1/embeddings"
    upload = client.files.create(file=("bad.jsonl", io.BytesIO((json.dumps(bad) + "\n").encode())),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "failed"
    assert batch.errors.data[0].line == 1 and batch.errors.data[0].code == "invalid_url"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_does_not_exist")
