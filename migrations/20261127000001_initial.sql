-- ragq initial schema.
-- Ids are RAGFlow-style 32-hex strings; times are timestamptz (the API renders epoch ms and RFC-822).

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored hashed (SHA-256 hex); the key itself is shown once at creation.
CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

-- Model settings per tenant. `name` is what chats and datasets refer to (RAGFlow llm_id,
-- embd_id, rerank_id). `provider` picks the client implementation.
CREATE TABLE models (
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('chat', 'embedding', 'rerank')),
    provider    text NOT NULL,
    base_url    text NOT NULL DEFAULT '',
    model       text NOT NULL,
    api_key     text NOT NULL DEFAULT '',
    max_tokens  integer NOT NULL DEFAULT 8192 CHECK (max_tokens > 0),
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, name)
);

CREATE TABLE datasets (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text,
    avatar              text NOT NULL DEFAULT '',
    language            text NOT NULL DEFAULT 'English',
    embedding_model     text NOT NULL,
    permission          text NOT NULL DEFAULT 'me',
    chunk_method        text NOT NULL DEFAULT 'naive',
    parser_config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    similarity_threshold real NOT NULL DEFAULT 0.2,
    vector_similarity_weight real NOT NULL DEFAULT 0.3,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX datasets_tenant ON datasets(tenant_id);

CREATE TABLE documents (
    id              text PRIMARY KEY,
    dataset_id      text NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    name            text NOT NULL,
    doc_type        text NOT NULL DEFAULT 'doc',
    suffix          text NOT NULL DEFAULT '',
    size            bigint NOT NULL DEFAULT 0,
    content         text NOT NULL DEFAULT '',
    run             text NOT NULL DEFAULT 'UNSTART',
    progress        real NOT NULL DEFAULT 0,
    progress_msg    text NOT NULL DEFAULT '',
    chunk_count     integer NOT NULL DEFAULT 0,
    token_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_dataset ON documents(dataset_id);

-- Chunks: text, a generated full-text vector (GIN-indexed) and the embedding as little-endian
-- f32 bytes (no pgvector here: vector similarity is computed in the worker).
CREATE TABLE chunks (
    id                  text PRIMARY KEY,
    dataset_id          text NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    document_id         text NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    content             text NOT NULL,
    important_keywords  text[] NOT NULL DEFAULT '{}',
    available           boolean NOT NULL DEFAULT true,
    tsv                 tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    embedding           bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chunks_tsv ON chunks USING gin(tsv);
CREATE INDEX chunks_dataset ON chunks(dataset_id);
CREATE INDEX chunks_document ON chunks(document_id);

-- Chats = RAGFlow chat assistants.
CREATE TABLE chats (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text NOT NULL DEFAULT 'A helpful Assistant',
    avatar              text NOT NULL DEFAULT '',
    language            text NOT NULL DEFAULT 'English',
    llm_model           text NOT NULL,
    llm_setting         jsonb NOT NULL DEFAULT '{"temperature":0.1,"top_p":0.3,"frequency_penalty":0.7,"presence_penalty":0.4,"max_tokens":512}'::jsonb,
    -- system prompt (with {knowledge}), prologue (opener), empty_response, quote, parameters,
    -- refine_multiturn, tts …, as RAGFlow's prompt_config.
    prompt_config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    similarity_threshold real NOT NULL DEFAULT 0.2,
    vector_similarity_weight real NOT NULL DEFAULT 0.3,
    top_n               integer NOT NULL DEFAULT 6 CHECK (top_n >= 0),
    top_k               integer NOT NULL DEFAULT 1024 CHECK (top_k >= 0),
    rerank_model        text NOT NULL DEFAULT '',
    dataset_ids         text[] NOT NULL DEFAULT '{}',
    do_refer            text NOT NULL DEFAULT '1',
    prompt_type         text NOT NULL DEFAULT 'simple',
    status              text NOT NULL DEFAULT '1',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_tenant ON chats(tenant_id);
CREATE UNIQUE INDEX chats_tenant_name ON chats(tenant_id, name) WHERE status = '1';

CREATE TABLE sessions (
    id          text PRIMARY KEY,
    chat_id     text NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    user_id     text NOT NULL DEFAULT '',
    prologue    text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_chat ON sessions(chat_id, created_at);

-- One row per answered question. `job_id` is unique: a redelivered job never saves twice.
CREATE TABLE turns (
    seq         bigserial PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    job_id      uuid NOT NULL UNIQUE,
    message_id  text NOT NULL,
    question    text NOT NULL,
    answer      text NOT NULL,
    reference   jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL CHECK (status IN ('done', 'stopped', 'error')),
    worker_id   text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX turns_session ON turns(session_id, seq);
