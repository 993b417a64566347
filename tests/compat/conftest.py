"""Shared fixtures of the compatibility tests: a running ragq, driven by the official clients.

The tests talk to the ragq started by ``scripts/compat.sh`` (``scripts/up.sh``), found through
the variables of ``.ragq/run.env``: ``RAGQ_API_URL``, ``RAGQ_API_KEY`` (a key of the demo
tenant, which has the chat model ``demo-llm`` and the embedding model ``demo-embed`` served by
the simulator). Everything the tests need beyond that they create with ``ragflow-sdk`` itself,
once per run:

- ``kb``: a dataset with a unique name holding the three documents of ``tests/compat/docs/``
  (one ``.md``, one ``.txt``, one ``.html``), each stating one distinctive fact, uploaded and
  parsed through the SDK;
- ``kb_chat``: a chat assistant on that dataset, created with the SDK's defaults (no ``llm``:
  the tenant's default chat model answers).

Both are deleted again, by explicit id, when the run ends.

The simulator answers deterministically: ``According to <title of the best chunk>,`` followed
by the words of the retrieved chunks, best first, and a ``[ID:0]`` citation. So an answer to a
question about one fact contains that fact verbatim, and its first reference chunk is the
document that states it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ragflow_sdk import RAGFlow

DOCS = Path(__file__).parent / "docs"

#: Seconds a single test may take before it is failed (the SDKs' HTTP calls have no timeout).
TEST_TIME_LIMIT_S = 60
#: Seconds the upload + parse of the fixture documents may take.
PARSE_TIME_LIMIT_S = 90


@dataclass(frozen=True)
class Fact:
    """One document of ``docs/``, the sentence it states and a question only it answers."""

    doc_name: str
    sentence: str
    question: str


FACTS = [
    Fact(
        "zephyr.md",
        "The Zephyr gateway listens on port 7443.",
        "Which port does the Zephyr gateway listen on?",
    ),
    Fact(
        "orchid.txt",
        "The Orchid scheduler rotates its signing keys every 19 days.",
        "How often does the Orchid scheduler rotate its signing keys?",
    ),
    Fact(
        "kestrel.html",
        "The Kestrel archive keeps nightly snapshots for 45 days.",
        "How long does the Kestrel archive keep nightly snapshots?",
    ),
]


@dataclass
class KnowledgeBase:
    """The run's dataset: the SDK objects and what parsing reported."""

    dataset: object
    #: Document name → SDK ``Document`` as returned by ``upload_documents``.
    docs: dict = field(default_factory=dict)
    #: ``parse_documents`` result: ``[(doc_id, run, chunk_count, token_count), …]``.
    parsed: list = field(default_factory=list)

    def doc_id(self, name: str) -> str:
        return self.docs[name].id


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the compatibility tests with scripts/compat.sh", 2)
    return value


def unique(prefix: str) -> str:
    """A name no earlier run has used (datasets and chats live on in the demo tenant's DB)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    """Fails with ``TimeoutError`` after ``seconds`` (SIGALRM; the tests run in the main thread).

    ``ragflow-sdk`` calls ``requests`` without a timeout and ``parse_documents`` polls until
    every document reaches a final state, so a server that never answers would otherwise hang
    the run instead of failing it.
    """

    def expired(_signum, _frame):
        raise TimeoutError(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _test_time_limit(request):
    with time_limit(TEST_TIME_LIMIT_S, request.node.nodeid):
        yield


@pytest.fixture(scope="session")
def api_url() -> str:
    return env("RAGQ_API_URL").rstrip("/")


@pytest.fixture(scope="session")
def api_key() -> str:
    return env("RAGQ_API_KEY")


@pytest.fixture(scope="session")
def rag(api_url, api_key) -> RAGFlow:
    return RAGFlow(api_key=api_key, base_url=api_url)


@pytest.fixture(scope="session")
def kb(rag) -> KnowledgeBase:
    """Creates a dataset, uploads ``docs/*`` and parses them, all through ``ragflow-sdk``."""
    with time_limit(PARSE_TIME_LIMIT_S, "creating and parsing the fixture dataset"):
        dataset = rag.create_dataset(name=unique("compat-kb"))
        uploads = [
            {"display_name": f.doc_name, "blob": (DOCS / f.doc_name).read_bytes()} for f in FACTS
        ]
        docs = dataset.upload_documents(uploads)
        base = KnowledgeBase(dataset=dataset, docs={d.name: d for d in docs})
        try:
            base.parsed = dataset.parse_documents([d.id for d in docs])
        except BaseException:
            rag.delete_datasets(ids=[dataset.id])
            raise
    yield base
    rag.delete_datasets(ids=[dataset.id])


@pytest.fixture(scope="session")
def kb_chat(rag, kb):
    """A chat assistant on ``kb`` with the SDK's defaults (the tenant's default chat model)."""
    chat = rag.create_chat(unique("compat-chat"), dataset_ids=[kb.dataset.id])
    yield chat
    rag.delete_chats(ids=[chat.id])
