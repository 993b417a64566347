-- Per-tenant fairness at the ingress: overrides of the api's defaults
-- (RAGQ_TENANT_RATE_PER_MINUTE, RAGQ_TENANT_MAX_JOBS). NULL = the configured default,
-- 0 = unlimited, N > 0 = the limit. Set with `ragq set-tenant-limits`.
ALTER TABLE tenants
    ADD COLUMN rate_per_minute     integer CHECK (rate_per_minute >= 0),
    ADD COLUMN max_concurrent_jobs integer CHECK (max_concurrent_jobs >= 0);
