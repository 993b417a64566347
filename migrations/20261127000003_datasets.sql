-- Datasets, documents and chunks managed over the HTTP API (RAGFlow §6): the fields RAGFlow
-- returns that the initial schema did not keep, and what asynchronous parsing needs.

ALTER TABLE datasets
    ADD COLUMN pagerank integer NOT NULL DEFAULT 0;

ALTER TABLE documents
    -- Copied from the dataset at upload time, as RAGFlow does (parser_id, parser_config).
    ADD COLUMN chunk_method     text NOT NULL DEFAULT 'naive',
    ADD COLUMN parser_config    jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The uploaded part's Content-Type: picks the text format when the name has no known suffix.
    ADD COLUMN content_type     text NOT NULL DEFAULT '',
    ADD COLUMN created_by       text NOT NULL DEFAULT '',
    ADD COLUMN meta_fields      jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN process_begin_at timestamptz,
    ADD COLUMN process_duration double precision NOT NULL DEFAULT 0,
    -- The ingest job that owns the current parse. A worker writes progress and results only
    -- while `run = 'RUNNING' AND task_id = <its job id>`, so a cancel or a newer parse wins.
    ADD COLUMN task_id          uuid,
    -- When the current parse is given up: a RUNNING document past it is marked FAIL.
    ADD COLUMN task_deadline    timestamptz;

CREATE INDEX documents_running ON documents(task_deadline) WHERE run = 'RUNNING';

ALTER TABLE chunks
    ADD COLUMN questions text[] NOT NULL DEFAULT '{}',
    -- Position of the chunk in its document (chunk lists are in document order).
    ADD COLUMN ord       integer NOT NULL DEFAULT 0;

CREATE INDEX chunks_document_ord ON chunks(document_id, ord);
