-- Vector fallback of retrieval: "the newest top_k available chunks of a dataset" is read per
-- dataset from this index instead of sorting the whole dataset.
CREATE INDEX chunks_dataset_recent ON chunks (dataset_id, created_at DESC) WHERE available;
