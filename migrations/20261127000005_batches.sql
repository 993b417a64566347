-- OpenAI Batch API over a chat (issue 13): uploaded JSONL files, batches and one row per line.
-- Output and error files are rows of batch_files with `content` NULL and `batch_id` set: their
-- JSONL is composed on read from the batch's lines (see api/src/routes/batch/).

CREATE TABLE batch_files (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    filename    text NOT NULL,
    -- batch (uploaded input) | batch_output | batch_error
    purpose     text NOT NULL,
    bytes       bigint NOT NULL DEFAULT 0,
    -- The uploaded JSONL; NULL for output and error files (composed from batch_lines).
    content     bytea,
    batch_id    text,
    deleted     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_files_tenant ON batch_files(tenant_id, created_at DESC, id DESC) WHERE NOT deleted;

CREATE TABLE batches (
    id                text PRIMARY KEY,
    tenant_id         text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    chat_id           text NOT NULL,
    input_file_id     text NOT NULL,
    endpoint          text NOT NULL,
    completion_window text NOT NULL,
    -- validating | failed | in_progress | finalizing | completed | expired | cancelling | cancelled
    status            text NOT NULL,
    metadata          jsonb,
    -- Validation errors: [{code, line, message, param}]
    errors            jsonb,
    total             integer NOT NULL DEFAULT 0,
    completed         integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    output_file_id    text,
    error_file_id     text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    in_progress_at    timestamptz,
    expires_at        timestamptz NOT NULL,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    failed_at         timestamptz,
    expired_at        timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz
);
CREATE INDEX batches_tenant ON batches(tenant_id, created_at DESC, id DESC);

CREATE TABLE batch_lines (
    id          uuid PRIMARY KEY,
    batch_id    text NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    -- 1-based line number in the input file.
    line_no     integer NOT NULL,
    custom_id   text NOT NULL,
    -- The request body's `model` (echoed in the answer) and whether it asked for `reference`.
    model       text NOT NULL DEFAULT '',
    reference   boolean NOT NULL DEFAULT false,
    prompt_chars bigint NOT NULL DEFAULT 0,
    -- pending | running | completed | failed | skipped
    status      text NOT NULL DEFAULT 'pending',
    -- completed: {"done": Done event, "reference": Reference|null}; failed: the error event.
    result      jsonb,
    attempts    integer NOT NULL DEFAULT 0,
    finished_at timestamptz,
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX batch_lines_batch ON batch_lines(batch_id, line_no);
CREATE INDEX batch_lines_open ON batch_lines(batch_id) WHERE status IN ('pending', 'running');
