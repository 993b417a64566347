//! Document rows: their RAGFlow shape, reading one, and the sweep that fails parses whose job
//! outlived its deadline.
//!
//! Where this sits in the job path: a parse's progress is written by the ingest worker into the
//! row; the ingress reads it here (and gives up on a lost job, [`sweep_expired`]).

use chrono::{DateTime, Utc};
use ragq_common::ids::{DatasetId, DocumentId};
use ragq_common::json::short_f32;
use ragq_common::status::RunStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::response::{ms, rfc822};

/// Marks the dataset's parses that outlived their job's deadline as `FAIL` (their job expired
/// in the queue, was dead-lettered, or its worker vanished).
pub async fn sweep_expired(db: &PgPool, dataset_id: &DatasetId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents SET run = $2, progress = -1,
                progress_msg = 'Parsing did not finish before its deadline.', updated_at = now()
         WHERE dataset_id = $1 AND run = $3 AND task_deadline < now()",
    )
    .bind(dataset_id)
    .bind(RunStatus::Fail.as_str())
    .bind(RunStatus::Running.as_str())
    .execute(db)
    .await?;
    Ok(())
}

/// A `documents` row without its content.
#[derive(sqlx::FromRow)]
pub struct DocRow {
    pub id: String,
    pub dataset_id: String,
    pub tenant_id: String,
    pub name: String,
    pub doc_type: String,
    pub suffix: String,
    pub size: i64,
    pub run: String,
    pub progress: f32,
    pub progress_msg: String,
    pub chunk_count: i32,
    pub token_count: i32,
    pub chunk_method: String,
    pub parser_config: Json<Value>,
    pub created_by: String,
    pub meta_fields: Json<Value>,
    pub process_begin_at: Option<DateTime<Utc>>,
    pub process_duration: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const SELECT_DOC: &str = "SELECT id, dataset_id, tenant_id, name, doc_type, suffix, size, run,
        progress, progress_msg, chunk_count, token_count, chunk_method, parser_config, created_by,
        meta_fields, process_begin_at, process_duration, created_at, updated_at
    FROM documents";

impl DocRow {
    /// RAGFlow's document dict (its `Document.to_dict()` order, renamed keys).
    pub fn json(&self) -> Value {
        let created_by = if self.created_by.is_empty() {
            &self.tenant_id
        } else {
            &self.created_by
        };
        json!({
            "id": self.id,
            "thumbnail": "",
            "dataset_id": self.dataset_id,
            "chunk_method": self.chunk_method,
            "pipeline_id": null,
            "parser_config": self.parser_config.0,
            "source_type": "local",
            "type": self.doc_type,
            "created_by": created_by,
            "name": self.name,
            "location": self.name,
            "size": self.size,
            "token_count": self.token_count,
            "chunk_count": self.chunk_count,
            "progress": short_f32(self.progress),
            "progress_msg": self.progress_msg,
            "process_begin_at": self.process_begin_at.map(rfc822),
            "process_duration": self.process_duration,
            "meta_fields": self.meta_fields.0,
            "suffix": self.suffix,
            "run": self.run,
            "status": "1",
            "create_time": ms(self.created_at),
            "create_date": rfc822(self.created_at),
            "update_time": ms(self.updated_at),
            "update_date": rfc822(self.updated_at),
        })
    }
}

/// The document, if it is in the dataset and the dataset is the tenant's.
pub async fn fetch_doc(
    db: &PgPool,
    tenant: &str,
    dataset_id: &DatasetId,
    document_id: &DocumentId,
) -> Result<Option<DocRow>, sqlx::Error> {
    sqlx::query_as::<_, DocRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DOC} WHERE id = $1 AND dataset_id = $2 AND tenant_id = $3"
    )))
    .bind(document_id)
    .bind(dataset_id)
    .bind(tenant)
    .fetch_optional(db)
    .await
}
