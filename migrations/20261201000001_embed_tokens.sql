-- Embed tokens (RAGFlow's `beta` token): authorise only the embedded chatbot and searchbot
-- routes (`/api/v1/chatbots/*`, `/api/v1/searchbots/*`) of one tenant, never its API. Stored
-- hashed (SHA-256 hex) like api_keys; the token itself is shown once at creation.
CREATE TABLE embed_tokens (
    id              text PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE,
    tenant_id       text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    label           text NOT NULL DEFAULT '',
    -- Requests per minute this token may make (its own rate limit).
    rate_per_minute integer NOT NULL DEFAULT 60 CHECK (rate_per_minute > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set by a revoke; a revoked token authorises nothing.
    revoked_at      timestamptz
);
CREATE INDEX embed_tokens_tenant ON embed_tokens(tenant_id);
