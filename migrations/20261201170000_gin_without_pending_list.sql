-- The full-text index without a pending list.
--
-- With GIN's default `fastupdate = on`, new entries go to a pending list that every search
-- scans linearly until a VACUUM (or autovacuum, when it runs and is on) merges it into the
-- index. A dataset just loaded has all its chunks in that list: measured on the benchmark
-- corpus (1,953 chunks, autovacuum off), the keyword query's index scan took 0.68 ms instead of
-- 0.01 ms and the planner preferred a sequential scan of every chunk, 2.5 ms per question in
-- all. Inserting straight into the index costs ingest a little more per chunk and makes search
-- cost independent of when the table was last vacuumed.
ALTER INDEX chunks_tsv SET (fastupdate = off);
-- Merge what is pending now (a no-op on an empty list).
SELECT gin_clean_pending_list('chunks_tsv'::regclass);
