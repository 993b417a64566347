//! Datasets, documents, parsing, chunks and retrieval over HTTP (RAGFlow §6), end to end on real
//! PostgreSQL, RabbitMQ and Redis: upload → parse (an ingest job on its own lane) → chunks →
//! retrieval (a job on the interactive lane), cancel, bad input and tenant isolation.

use std::time::{Duration, Instant};

use ragq_tests::{EnvOptions, TestEnv};
use reqwest::Method;
use serde_json::{Value, json};

const BOUNDARY: &str = "ragq-test-boundary-5f0c2a";

const LIGHTHOUSE_MD: &str = "# Falstaff lighthouse\n\nThe Falstaff lighthouse stands on the northern cape. \
Its keeper, Marguerite Olsen, cleans the great lamp every Tuesday at dawn.\n\n## Fog signal\n\n\
When fog rolls in, the foghorn sounds two short blasts every thirty seconds.\n";

const TIDES_HTML: &str = "<html><head><style>p{color:red}</style><script>var x = '<p>hidden</p>';</script></head>\
<body><h1>Harbour tides</h1><p>High tide in the harbour arrives about fifty minutes later each day \
&amp; spring tides peak after a full moon.</p></body></html>";

/// One multipart part: (field name, file name, content type, bytes).
type Part<'a> = (&'a str, Option<&'a str>, &'a str, &'a [u8]);

fn multipart_body(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, file, ctype, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{field}\"; filename=\"{f}\"\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{field}\"\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(format!("Content-Type: {ctype}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Sends a request with `key` (see [`TestEnv::call`]).
async fn call(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    env.call(key, method, path, body).await
}

async fn upload(env: &TestEnv, key: &str, dataset: &str, parts: &[Part<'_>]) -> Value {
    let resp = env
        .http
        .post(format!("{}/api/v1/datasets/{dataset}/documents", env.url))
        .header("Authorization", format!("Bearer {key}"))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        // An oversized upload is answered before its body is read and the connection closed:
        // never reuse an upload's connection for the next request.
        .header("Connection", "close")
        .body(multipart_body(parts))
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    assert_eq!(status, 200, "upload: {text}");
    serde_json::from_str(&text).expect("upload answer is JSON")
}

fn assert_code(v: &Value, code: i64, needle: &str) {
    assert_eq!(v["code"], code, "{v}");
    if !needle.is_empty() {
        let m = v["message"].as_str().unwrap_or_default();
        assert!(
            m.contains(needle),
            "message {m:?} should contain {needle:?}"
        );
    }
}

async fn create_dataset(env: &TestEnv, body: Value) -> Value {
    let v = call(
        env,
        &env.api_key,
        Method::POST,
        "/api/v1/datasets",
        Some(body),
    )
    .await;
    assert_code(&v, 0, "");
    v["data"].clone()
}

async fn documents(env: &TestEnv, key: &str, dataset: &str) -> Value {
    call(
        env,
        key,
        Method::GET,
        &format!("/api/v1/datasets/{dataset}/documents?page=1&page_size=100&orderby=create_time&desc=False"),
        None,
    )
    .await
}

/// Polls the documents list until every id has left `RUNNING` (at most `limit`).
async fn wait_until_settled(
    env: &TestEnv,
    dataset: &str,
    ids: &[&str],
    limit: Duration,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let list = documents(env, &env.api_key, dataset).await;
        assert_code(&list, 0, "");
        let docs: Vec<Value> = list["data"]["docs"]
            .as_array()
            .expect("docs")
            .iter()
            .filter(|d| ids.contains(&d["id"].as_str().unwrap_or_default()))
            .cloned()
            .collect();
        assert_eq!(docs.len(), ids.len(), "{list}");
        if docs.iter().all(|d| d["run"] != "RUNNING") {
            return docs;
        }
        assert!(start.elapsed() < limit, "documents still RUNNING: {docs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn chunks(env: &TestEnv, dataset: &str, doc: &str, query: &str) -> Value {
    let v = call(
        env,
        &env.api_key,
        Method::GET,
        &format!("/api/v1/datasets/{dataset}/documents/{doc}/chunks?{query}"),
        None,
    )
    .await;
    assert_code(&v, 0, "");
    v["data"].clone()
}

/// The ragflow-sdk's `retrieve` body: all twelve keys, nulls included.
fn sdk_retrieve(dataset_ids: Value, question: &str) -> Value {
    json!({
        "dataset_ids": dataset_ids, "document_ids": [], "question": question, "page": 1,
        "page_size": 30, "similarity_threshold": 0.2, "vector_similarity_weight": 0.3,
        "top_k": 1024, "rerank_id": null, "keyword": false, "cross_languages": null,
        "metadata_condition": null,
    })
}

/// Create → upload .md and .html → parse → chunks → retrieval → add/delete chunks → delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_parse_list_chunks_and_retrieve() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let key = env.api_key.clone();

    // Datasets: RAGFlow's fields, model name@factory resolved, default model, de-duplicated names.
    let ds = create_dataset(
        &env,
        json!({"name": " handbook ", "avatar": null, "description": "Keepers' notes",
               "embedding_model": "sim-embed@OpenAI", "permission": "me", "chunk_method": "naive"}),
    )
    .await;
    let ds_id = ds["id"].as_str().expect("id").to_string();
    assert_eq!(ds_id.len(), 32);
    assert_eq!(ds["name"], "handbook");
    assert_eq!(ds["embedding_model"], "sim-embed");
    assert_eq!(ds["tenant_id"], env.tenant_id.as_str());
    assert_eq!(ds["created_by"], env.tenant_id.as_str());
    assert_eq!(
        (
            ds["chunk_count"].clone(),
            ds["document_count"].clone(),
            ds["token_num"].clone()
        ),
        (json!(0), json!(0), json!(0))
    );
    assert_eq!(ds["chunk_method"], "naive");
    assert_eq!(ds["permission"], "me");
    assert_eq!(ds["status"], "1");
    assert_eq!(ds["pagerank"], 0);
    assert_eq!(ds["similarity_threshold"], 0.2);
    assert_eq!(ds["vector_similarity_weight"], 0.3);
    assert_eq!(ds["parser_config"]["chunk_token_num"], 512);
    assert!(ds["create_date"].as_str().unwrap().ends_with(" GMT"));
    let dup = create_dataset(&env, json!({"name": "Handbook", "embedding_model": null})).await;
    assert_eq!(dup["name"], "Handbook(1)");
    assert_eq!(
        dup["embedding_model"], "sim-embed",
        "the tenant's first embedding model"
    );
    let listed = call(
        &env,
        &key,
        Method::GET,
        "/api/v1/datasets?name=handbook",
        None,
    )
    .await;
    assert_eq!(listed["total_datasets"], 1, "{listed}");
    assert_eq!(listed["data"][0]["id"], ds_id.as_str());
    let renamed = call(
        &env,
        &key,
        Method::PUT,
        &format!("/api/v1/datasets/{}", dup["id"].as_str().unwrap()),
        Some(json!({"name": "spare", "description": "x", "pagerank": 3})),
    )
    .await;
    assert_code(&renamed, 0, "");
    assert_eq!(
        (
            renamed["data"]["name"].clone(),
            renamed["data"]["pagerank"].clone()
        ),
        (json!("spare"), json!(3))
    );

    // Upload: both files in one request, RAGFlow's document fields.
    let up = upload(
        &env,
        &key,
        &ds_id,
        &[
            (
                "file",
                Some("lighthouse.md"),
                "text/markdown",
                LIGHTHOUSE_MD.as_bytes(),
            ),
            (
                "file",
                Some("tides.html"),
                "text/html",
                TIDES_HTML.as_bytes(),
            ),
        ],
    )
    .await;
    assert_code(&up, 0, "");
    let docs = up["data"].as_array().expect("list of documents");
    assert_eq!(docs.len(), 2, "{up}");
    assert_eq!(docs[0]["name"], "lighthouse.md");
    assert_eq!(docs[0]["suffix"], "md");
    assert_eq!(docs[0]["size"], LIGHTHOUSE_MD.len());
    assert_eq!(docs[0]["run"], "UNSTART");
    assert_eq!(docs[0]["dataset_id"], ds_id.as_str());
    assert_eq!(docs[0]["source_type"], "local");
    assert_eq!(docs[0]["type"], "doc");
    assert_eq!(docs[0]["chunk_method"], "naive");
    assert_eq!(docs[0]["location"], "lighthouse.md");
    assert_eq!(docs[1]["name"], "tides.html");
    let md_id = docs[0]["id"].as_str().unwrap().to_string();
    let html_id = docs[1]["id"].as_str().unwrap().to_string();

    // The same name again is de-duplicated; deleting it leaves the other two.
    let again = upload(
        &env,
        &key,
        &ds_id,
        &[("file", Some("lighthouse.md"), "text/plain", b"copy")],
    )
    .await;
    assert_eq!(again["data"][0]["name"], "lighthouse(1).md", "{again}");
    let copy_id = again["data"][0]["id"].as_str().unwrap().to_string();
    let del = call(
        &env,
        &key,
        Method::DELETE,
        &format!("/api/v1/datasets/{ds_id}/documents"),
        Some(json!({"ids": [copy_id]})),
    )
    .await;
    assert_code(&del, 0, "");
    let list = documents(&env, &key, &ds_id).await;
    assert_eq!(list["data"]["total"], 2, "{list}");

    // Parse both and wait for DONE.
    let parse = call(
        &env,
        &key,
        Method::POST,
        &format!("/api/v1/datasets/{ds_id}/chunks"),
        Some(json!({"document_ids": [md_id, html_id]})),
    )
    .await;
    assert_eq!(parse, json!({"code": 0}));
    let settled =
        wait_until_settled(&env, &ds_id, &[&md_id, &html_id], Duration::from_secs(20)).await;
    for d in &settled {
        assert_eq!(d["run"], "DONE", "{d}");
        assert_eq!(d["progress"], 1.0);
        assert!(d["chunk_count"].as_i64().unwrap() >= 1, "{d}");
        assert!(d["token_count"].as_i64().unwrap() > 0, "{d}");
        assert!(
            d["process_begin_at"].as_str().unwrap().ends_with(" GMT"),
            "{d}"
        );
    }
    let md_doc = settled.iter().find(|d| d["id"] == md_id.as_str()).unwrap();
    assert_eq!(
        md_doc["chunk_count"], 2,
        "markdown headings start chunks: {md_doc}"
    );

    // The dataset's counts are its documents' sums.
    let listed = call(
        &env,
        &key,
        Method::GET,
        &format!("/api/v1/datasets?id={ds_id}"),
        None,
    )
    .await;
    let total_chunks: i64 = settled
        .iter()
        .map(|d| d["chunk_count"].as_i64().unwrap())
        .sum();
    assert_eq!(listed["data"][0]["document_count"], 2);
    assert_eq!(listed["data"][0]["chunk_count"], total_chunks);

    // Chunks in document order, with the document; keyword filter; HTML tags stripped.
    let md_chunks = chunks(&env, &ds_id, &md_id, "page=1&page_size=30").await;
    assert_eq!(md_chunks["total"], 2, "{md_chunks}");
    assert_eq!(md_chunks["doc"]["id"], md_id.as_str());
    assert_eq!(md_chunks["doc"]["run"], "DONE");
    let first = &md_chunks["chunks"][0];
    assert!(
        first["content"]
            .as_str()
            .unwrap()
            .starts_with("# Falstaff lighthouse"),
        "{first}"
    );
    assert!(
        first["content"]
            .as_str()
            .unwrap()
            .contains("every Tuesday at dawn")
    );
    assert_eq!(first["docnm_kwd"], "lighthouse.md");
    assert_eq!(first["dataset_id"], ds_id.as_str());
    assert_eq!(first["available"], true);
    assert!(
        md_chunks["chunks"][1]["content"]
            .as_str()
            .unwrap()
            .starts_with("## Fog signal")
    );
    let fog = chunks(&env, &ds_id, &md_id, "keywords=foghorn").await;
    assert_eq!(fog["total"], 1, "{fog}");
    assert!(
        fog["chunks"][0]["content"]
            .as_str()
            .unwrap()
            .contains("foghorn")
    );
    let html_chunks = chunks(&env, &ds_id, &html_id, "").await;
    let html_text = html_chunks["chunks"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        html_text.contains("High tide in the harbour") && html_text.contains('&'),
        "{html_text}"
    );
    assert!(
        !html_text.contains('<') && !html_text.contains("hidden"),
        "{html_text}"
    );

    // Retrieval (the SDK's body, nulls included): the lamp question finds the markdown chunk.
    let question = "How often does the keeper clean the Falstaff lighthouse lamp?";
    let r = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(sdk_retrieve(json!([ds_id]), question)),
    )
    .await;
    assert_code(&r, 0, "");
    let top = &r["data"]["chunks"][0];
    assert_eq!(top["document_id"], md_id.as_str(), "{r}");
    assert!(
        top["content"]
            .as_str()
            .unwrap()
            .contains("cleans the great lamp"),
        "{top}"
    );
    assert_eq!(top["document_keyword"], "lighthouse.md");
    assert_eq!(top["dataset_id"], ds_id.as_str());
    assert!(top["similarity"].as_f64().unwrap() >= 0.2, "{top}");
    assert!(top["term_similarity"].as_f64().unwrap() > 0.5, "{top}");
    assert!(top["vector_similarity"].is_number());
    assert!(
        top["content_ltks"]
            .as_str()
            .unwrap()
            .starts_with("falstaff lighthouse"),
        "{top}"
    );
    assert!(
        top["highlight"].as_str().unwrap().contains("<em>lamp</em>"),
        "{top}"
    );
    assert!(r["data"]["total"].as_i64().unwrap() >= 1);
    assert_eq!(r["data"]["doc_aggs"][0]["doc_name"], "lighthouse.md", "{r}");
    assert_eq!(r["data"]["doc_aggs"][0]["doc_id"], md_id.as_str());
    // Restricted to the HTML document, only its chunks can come back.
    let mut only_html = sdk_retrieve(json!([ds_id]), "When does high tide arrive in the harbour?");
    only_html["document_ids"] = json!([html_id]);
    only_html["rerank_id"] = json!("sim-rerank");
    let r = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(only_html),
    )
    .await;
    assert_code(&r, 0, "");
    let hits = r["data"]["chunks"].as_array().unwrap();
    assert!(!hits.is_empty(), "{r}");
    assert!(
        hits.iter().all(|c| c["document_id"] == html_id.as_str()),
        "{r}"
    );

    // Add a chunk (embedded by a worker), find it, delete it.
    let added = call(
        &env,
        &key,
        Method::POST,
        &format!("/api/v1/datasets/{ds_id}/documents/{md_id}/chunks"),
        Some(json!({"content": "The keeper's dog is called Biscuit and sleeps below the lamp room.",
                    "important_keywords": ["dog", "Biscuit"], "questions": ["What is the dog called?"]})),
    )
    .await;
    assert_code(&added, 0, "");
    let chunk = &added["data"]["chunk"];
    let chunk_id = chunk["id"].as_str().expect("chunk id").to_string();
    assert!(chunk["content"].as_str().unwrap().contains("Biscuit"));
    assert_eq!(chunk["document_id"], md_id.as_str());
    assert_eq!(chunk["important_keywords"], json!(["dog", "Biscuit"]));
    assert_eq!(chunk["questions"], json!(["What is the dog called?"]));
    let listed = chunks(&env, &ds_id, &md_id, "").await;
    assert_eq!(listed["total"], 3);
    assert_eq!(
        listed["chunks"][2]["id"],
        chunk_id.as_str(),
        "added chunks go last"
    );
    assert_eq!(listed["doc"]["chunk_count"], 3);
    let one = chunks(&env, &ds_id, &md_id, &format!("id={chunk_id}")).await;
    assert_eq!(
        one["chunks"][0]["important_keywords"],
        json!(["dog", "Biscuit"])
    );
    let r = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(sdk_retrieve(
            json!([ds_id]),
            "What is the keeper's dog called?",
        )),
    )
    .await;
    assert_eq!(r["data"]["chunks"][0]["id"], chunk_id.as_str(), "{r}");
    assert_eq!(
        r["data"]["chunks"][0]["important_keywords"],
        json!(["dog", "Biscuit"])
    );
    let path = format!("/api/v1/datasets/{ds_id}/documents/{md_id}/chunks");
    let del = call(
        &env,
        &key,
        Method::DELETE,
        &path,
        Some(json!({"chunk_ids": [chunk_id]})),
    )
    .await;
    assert_eq!(del, json!({"code": 0}));
    let del = call(
        &env,
        &key,
        Method::DELETE,
        &path,
        Some(json!({"chunk_ids": [chunk_id]})),
    )
    .await;
    assert_code(&del, 102, "rm_chunk deleted chunks 0, expect 1");
    assert_eq!(chunks(&env, &ds_id, &md_id, "").await["total"], 2);

    // Deleting the dataset takes its documents and chunks along.
    let del = call(
        &env,
        &key,
        Method::DELETE,
        "/api/v1/datasets",
        Some(json!({"ids": [ds_id]})),
    )
    .await;
    assert_eq!(del, json!({"code": 0}));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE document_id = ANY($1)")
        .bind(vec![md_id.clone(), html_id.clone()])
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let gone = call(
        &env,
        &key,
        Method::GET,
        &format!("/api/v1/datasets?id={ds_id}"),
        None,
    )
    .await;
    assert_code(&gone, 108, "lacks permission");
    env.stop().await;
}

/// Parsing is refused while running, a cancel wins over the queued job, a re-parse after a
/// cancel completes without interference, and a cancel racing a running parse ends CANCEL or
/// DONE — never stuck RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_reparse() {
    // No worker yet: jobs wait in the ingest queue, so the states below are deterministic.
    let mut env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let key = env.api_key.clone();
    let ds = create_dataset(
        &env,
        json!({"name": "big", "parser_config": {"chunk_token_num": 16}}),
    )
    .await;
    let ds_id = ds["id"].as_str().unwrap().to_string();
    let text: String = (0..300)
        .map(|i| format!("Paragraph {i} describes beacon number {i} and its colour.\n\n"))
        .collect();
    let up = upload(
        &env,
        &key,
        &ds_id,
        &[("file", Some("beacons.txt"), "text/plain", text.as_bytes())],
    )
    .await;
    let doc = up["data"][0]["id"].as_str().unwrap().to_string();
    let chunks_path = format!("/api/v1/datasets/{ds_id}/chunks");
    let body = json!({"document_ids": [doc]});

    let cancel = call(&env, &key, Method::DELETE, &chunks_path, Some(body.clone())).await;
    assert_code(&cancel, 102, "has not started or already completed");
    assert_eq!(
        call(&env, &key, Method::POST, &chunks_path, Some(body.clone())).await,
        json!({"code": 0})
    );
    let list = documents(&env, &key, &ds_id).await;
    assert_eq!(list["data"]["docs"][0]["run"], "RUNNING");
    assert_eq!(list["data"]["docs"][0]["progress_msg"], "Queued");
    let again = call(&env, &key, Method::POST, &chunks_path, Some(body.clone())).await;
    assert_code(&again, 102, "currently being processed");
    assert_eq!(
        call(&env, &key, Method::DELETE, &chunks_path, Some(body.clone())).await,
        json!({"code": 0})
    );
    let list = documents(&env, &key, &ds_id).await;
    assert_eq!(list["data"]["docs"][0]["run"], "CANCEL", "{list}");
    assert_eq!(list["data"]["docs"][0]["progress"], 0.0);

    // Parse again, then start a worker: the cancelled job finds itself superseded and stops;
    // the new one parses the document.
    assert_eq!(
        call(&env, &key, Method::POST, &chunks_path, Some(body.clone())).await,
        json!({"code": 0})
    );
    env.add_worker("late").await;
    let settled = wait_until_settled(&env, &ds_id, &[&doc], Duration::from_secs(20)).await;
    assert_eq!(settled[0]["run"], "DONE", "{settled:?}");
    let n = settled[0]["chunk_count"].as_i64().unwrap();
    assert!(
        n >= 100,
        "300 short paragraphs at 16 tokens make many chunks: {n}"
    );
    let listed = chunks(&env, &ds_id, &doc, "page=1&page_size=1000").await;
    assert_eq!(listed["total"], n, "exactly one parse wrote the chunks");
    assert!(
        listed["chunks"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Paragraph 0 ")
    );

    // A cancel racing a running parse: either side may win, but the end state is settled.
    assert_eq!(
        call(&env, &key, Method::POST, &chunks_path, Some(body.clone())).await,
        json!({"code": 0})
    );
    let cancel = call(&env, &key, Method::DELETE, &chunks_path, Some(body.clone())).await;
    let settled = wait_until_settled(&env, &ds_id, &[&doc], Duration::from_secs(20)).await;
    let run = settled[0]["run"].as_str().unwrap().to_string();
    match cancel["code"].as_i64() {
        Some(0) => assert_eq!(run, "CANCEL", "{settled:?}"),
        _ => assert_eq!(
            run, "DONE",
            "a refused cancel means the parse had finished: {cancel}"
        ),
    }
    // Give a stray worker write a moment to show up; the state must not change any more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = wait_until_settled(&env, &ds_id, &[&doc], Duration::from_secs(1)).await;
    assert_eq!(later[0]["run"], run.as_str());
    let total = chunks(&env, &ds_id, &doc, "page_size=1000").await["total"]
        .as_i64()
        .unwrap();
    if run == "CANCEL" {
        assert_eq!(total, 0, "a cancelled parse leaves no chunks");
        assert_eq!(later[0]["chunk_count"], 0);
    } else {
        assert_eq!(total, n);
    }
    env.stop().await;
}

/// Bad input on every route gets RAGFlow's envelope (HTTP 200, code 101/102/108), never a 5xx,
/// and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_envelope() {
    let env = TestEnv::start(EnvOptions {
        workers: 0,
        ..Default::default()
    })
    .await;
    let key = env.api_key.clone();
    let demo = env.dataset_id.clone();
    let post = |body: Value| call(&env, &key, Method::POST, "/api/v1/datasets", Some(body));

    // Create.
    assert_code(
        &post(json!({})).await,
        101,
        "Field: <name> - Message: <Field required>",
    );
    assert_code(
        &post(json!({"name": "  "})).await,
        101,
        "at least 1 character",
    );
    assert_code(&post(json!({"name": 5})).await, 101, "valid string");
    assert_code(
        &post(json!({"name": "x".repeat(129)})).await,
        101,
        "at most 128",
    );
    assert_code(
        &post(json!({"name": "a", "permission": "all"})).await,
        101,
        "'me' or 'team'",
    );
    assert_code(
        &post(json!({"name": "a", "chunk_method": "magic"})).await,
        101,
        "chunk_method",
    );
    assert_code(
        &post(json!({"name": "a", "embedding_model": "nope@X"})).await,
        101,
        "Unsupported model: <nope@X>",
    );
    assert_code(
        &post(json!({"name": "a", "parser_config": {"chunk_token_num": 0}})).await,
        101,
        "chunk_token_num",
    );
    assert_code(
        &post(json!({"name": "a", "parser_config": "x"})).await,
        101,
        "parser_config",
    );
    assert_code(
        &post(json!({"name": "a", "chunk_count": 1})).await,
        101,
        "Extra inputs are not permitted",
    );
    assert_code(&post(json!([1, 2])).await, 101, "JSON object");
    let raw = env
        .http
        .post(format!("{}/api/v1/datasets", env.url))
        .header("Authorization", env.auth())
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200);
    assert_code(&raw.json::<Value>().await.unwrap(), 101, "not valid JSON");
    // An oversized JSON body is refused by the global limit, still without a 5xx.
    let big = env
        .http
        .post(format!("{}/api/v1/datasets", env.url))
        .header("Authorization", env.auth())
        // Answered before the body is read, then closed: keep it out of the client's pool.
        .header("Connection", "close")
        .json(&json!({"name": "big", "description": "d".repeat(2 << 20)}))
        .send()
        .await
        .unwrap();
    assert!(big.status().as_u16() < 500, "{}", big.status());
    let big: Value = big.json().await.expect("an envelope, not plain text");
    assert_ne!(big["code"], 0, "{big}");

    // List, update, delete.
    let get = |q: &'static str| call(&env, &key, Method::GET, q, None);
    assert_code(
        &get("/api/v1/datasets?page=0").await,
        101,
        "greater than or equal to 1",
    );
    assert_code(
        &get("/api/v1/datasets?page_size=abc").await,
        101,
        "page_size",
    );
    assert_code(
        &get("/api/v1/datasets?orderby=name").await,
        101,
        "create_time",
    );
    assert_code(
        &get("/api/v1/datasets?id=0123").await,
        108,
        "lacks permission for dataset '0123'",
    );
    assert_code(
        &get("/api/v1/datasets?name=nothing").await,
        108,
        "lacks permission",
    );
    let (e, k) = (&env, &key);
    let put = move |path: String, body: Value| async move {
        call(e, k, Method::PUT, &path, Some(body)).await
    };
    assert_code(
        &put("/api/v1/datasets/0123".into(), json!({"name": "x"})).await,
        108,
        "lacks permission",
    );
    assert_code(
        &put(format!("/api/v1/datasets/{demo}"), json!({})).await,
        101,
        "No properties were modified",
    );
    assert_code(
        &put(format!("/api/v1/datasets/{demo}"), json!({"name": ""})).await,
        101,
        "at least 1 character",
    );
    assert_code(
        &put(format!("/api/v1/datasets/{demo}"), json!({"id": "x"})).await,
        101,
        "Extra inputs",
    );
    assert_code(
        &put(
            format!("/api/v1/datasets/{demo}"),
            json!({"embedding_model": "local"}),
        )
        .await,
        102,
        "embedding_model must remain sim-embed",
    );
    create_dataset(&env, json!({"name": "taken"})).await;
    assert_code(
        &put(format!("/api/v1/datasets/{demo}"), json!({"name": "TAKEN"})).await,
        102,
        "already exists",
    );
    let del = |body: Value| call(&env, &key, Method::DELETE, "/api/v1/datasets", Some(body));
    assert_code(&del(json!({})).await, 102, "`ids` is required");
    assert_code(&del(json!({"ids": null})).await, 102, "`ids` is required");
    assert_code(&del(json!({"ids": "x"})).await, 101, "should be a list");
    assert_code(
        &del(json!({"ids": [demo, "0123"]})).await,
        108,
        "lacks permission for datasets: '0123'",
    );
    assert_eq!(del(json!({"ids": []})).await, json!({"code": 0}));

    // Upload.
    let unknown = upload(
        &env,
        &key,
        "0123",
        &[("file", Some("a.md"), "text/markdown", b"x")],
    )
    .await;
    assert_code(&unknown, 102, "You don't own the dataset 0123");
    let cases: Vec<(Vec<Part<'_>>, &str)> = vec![
        (
            vec![("file", Some("report.pdf"), "application/pdf", b"%PDF-1.4")],
            "not been supported",
        ),
        (
            vec![("file", Some("noext"), "application/octet-stream", b"x")],
            "not been supported",
        ),
        (
            vec![("file", Some("latin1.txt"), "text/plain", b"caf\xe9")],
            "not UTF-8",
        ),
        (
            vec![("file", Some(""), "text/plain", b"x")],
            "No file selected!",
        ),
        (
            vec![("name", None, "text/plain", b"just a field")],
            "No file part!",
        ),
        (vec![], "No file part!"),
        // A good file next to a bad one: nothing is stored.
        (
            vec![
                ("file", Some("ok.md"), "text/markdown", b"fine"),
                ("file", Some("bad.exe"), "application/x-msdownload", b"MZ"),
            ],
            "bad.exe",
        ),
    ];
    for (parts, needle) in cases {
        assert_code(&upload(&env, &key, &demo, &parts).await, 101, needle);
    }
    let huge = vec![b'a'; (10 << 20) + 1];
    let too_big = upload(
        &env,
        &key,
        &demo,
        &[("file", Some("huge.txt"), "text/plain", &huge)],
    )
    .await;
    assert_code(
        &too_big,
        101,
        "larger than the upload limit of 10485760 bytes",
    );
    let not_multipart = call(
        &env,
        &key,
        Method::POST,
        &format!("/api/v1/datasets/{demo}/documents"),
        Some(json!({"file": "a.md"})),
    )
    .await;
    assert_code(&not_multipart, 101, "No file part!");
    let docs = documents(&env, &key, &demo).await;
    assert_eq!(docs["data"]["total"], 4, "only the demo documents: {docs}");

    // Documents list and delete.
    let path = |q: &str| format!("/api/v1/datasets/{demo}/documents{q}");
    assert_code(
        &call(&env, &key, Method::GET, &path("?id=0123"), None).await,
        102,
        "You don't own the document 0123.",
    );
    assert_code(
        &call(&env, &key, Method::GET, &path("?page=-1"), None).await,
        101,
        "negative",
    );
    assert_code(
        &call(&env, &key, Method::GET, &path("?page=x"), None).await,
        101,
        "`page` must be an integer",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::GET,
            "/api/v1/datasets/0123/documents",
            None,
        )
        .await,
        102,
        "You don't own the dataset 0123",
    );
    let docs_path = path("");
    let del_docs = |body: Value| call(&env, &key, Method::DELETE, &docs_path, Some(body));
    assert_code(
        &del_docs(json!({"ids": ["0123"]})).await,
        102,
        "Documents not found: ['0123']",
    );
    assert_code(&del_docs(json!({"ids": 5})).await, 102, "should be a list");
    assert_eq!(del_docs(json!({})).await, json!({"code": 0}));

    // Parse and cancel.
    let chunks_path = format!("/api/v1/datasets/{demo}/chunks");
    for method in [Method::POST, Method::DELETE] {
        let c = |body: Value| call(&env, &key, method.clone(), &chunks_path, Some(body));
        assert_code(&c(json!({})).await, 102, "`document_ids` is required");
        assert_code(
            &c(json!({"document_ids": []})).await,
            102,
            "`document_ids` is required",
        );
        assert_code(
            &c(json!({"document_ids": "x"})).await,
            102,
            "should be a list",
        );
        assert_code(
            &c(json!({"document_ids": ["0123"]})).await,
            102,
            "You don't own the document 0123.",
        );
    }

    // Chunks.
    let doc: String =
        sqlx::query_scalar("SELECT id FROM documents WHERE dataset_id = $1 ORDER BY name LIMIT 1")
            .bind(&demo)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let cpath = format!("/api/v1/datasets/{demo}/documents/{doc}/chunks");
    assert_code(
        &call(
            &env,
            &key,
            Method::GET,
            &format!("/api/v1/datasets/{demo}/documents/0123/chunks"),
            None,
        )
        .await,
        102,
        "You don't own the document 0123.",
    );
    assert_code(
        &call(&env, &key, Method::GET, &format!("{cpath}?id=nope"), None).await,
        102,
        "Chunk `nope` not found.",
    );
    assert_code(
        &call(&env, &key, Method::POST, &cpath, Some(json!({}))).await,
        102,
        "`content` is required",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::POST,
            &cpath,
            Some(json!({"content": "  "})),
        )
        .await,
        102,
        "`content` is required",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::POST,
            &cpath,
            Some(json!({"content": "x", "important_keywords": "k"})),
        )
        .await,
        102,
        "`important_keywords` is required to be a list",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::DELETE,
            &cpath,
            Some(json!({"chunk_ids": ["nope"]})),
        )
        .await,
        102,
        "rm_chunk deleted chunks 0, expect 1",
    );

    // Retrieval.
    let local = create_dataset(&env, json!({"name": "lexical", "embedding_model": "local"})).await;
    let retrieve = |body: Value| call(&env, &key, Method::POST, "/api/v1/retrieval", Some(body));
    assert_code(
        &retrieve(json!({"question": "q"})).await,
        102,
        "`dataset_ids` is required.",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": []})).await,
        102,
        "`dataset_ids` is required.",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": "x"})).await,
        102,
        "should be a list",
    );
    assert_code(
        &retrieve(json!({"dataset_ids": [demo]})).await,
        102,
        "`question` is required.",
    );
    assert_code(
        &retrieve(json!({"question": 5, "dataset_ids": [demo]})).await,
        102,
        "should be a string",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": [demo], "page": 0})).await,
        101,
        "`page`",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": [demo], "similarity_threshold": 2})).await,
        101,
        "similarity_threshold",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": ["0123"]})).await,
        102,
        "You don't own the dataset 0123.",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": [demo, local["id"]]})).await,
        102,
        "Datasets use different embedding models.",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": [local["id"]], "document_ids": [doc]}))
            .await,
        102,
        "The datasets don't own the document",
    );
    assert_code(
        &retrieve(json!({"question": "q", "dataset_ids": [demo], "rerank_id": "nope"})).await,
        102,
        "`rerank_id` nope doesn't exist",
    );
    let empty = json!({"code": 0, "data": {"total": 0, "chunks": [], "doc_aggs": []}});
    assert_eq!(
        retrieve(json!({"question": " ", "dataset_ids": [demo]})).await,
        empty
    );
    let meta = json!({"question": "q", "dataset_ids": [demo],
                      "metadata_condition": {"conditions": [{"name": "author", "comparison_operator": "is", "value": "x"}]}});
    assert_eq!(retrieve(meta).await, empty);
    env.stop().await;
}

/// A second tenant's key can neither see nor change the first tenant's datasets, documents or
/// chunks, on any route or verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_and_changes_nothing() {
    let env = TestEnv::start(EnvOptions::default()).await;
    let other = ragq_cli::admin::create_tenant(&env.db, "other")
        .await
        .expect("tenant");
    let lexical = ragq_cli::admin::NewModel {
        name: "lexical",
        kind: "embedding",
        provider: "local",
        base_url: "",
        model: "local",
        api_key: "",
        max_tokens: 8192,
    };
    ragq_cli::admin::put_model(&env.db, &env.secrets, &other.tenant_id, &lexical)
        .await
        .expect("model");
    let key = other.api_key.clone();
    let demo = env.dataset_id.clone();
    let doc: String =
        sqlx::query_scalar("SELECT id FROM documents WHERE dataset_id = $1 ORDER BY name LIMIT 1")
            .bind(&demo)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let chunk: String = sqlx::query_scalar("SELECT id FROM chunks WHERE document_id = $1 LIMIT 1")
        .bind(&doc)
        .fetch_one(&env.db)
        .await
        .unwrap();
    let before = documents(&env, &env.api_key, &demo).await;

    let list = call(&env, &key, Method::GET, "/api/v1/datasets", None).await;
    assert_eq!(list, json!({"code": 0, "data": [], "total_datasets": 0}));
    assert_code(
        &call(
            &env,
            &key,
            Method::GET,
            &format!("/api/v1/datasets?id={demo}"),
            None,
        )
        .await,
        108,
        "lacks permission",
    );
    assert_code(
        &call(&env, &key, Method::GET, "/api/v1/datasets?name=demo", None).await,
        108,
        "lacks permission",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::PUT,
            &format!("/api/v1/datasets/{demo}"),
            Some(json!({"name": "mine"})),
        )
        .await,
        108,
        "lacks permission",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::DELETE,
            "/api/v1/datasets",
            Some(json!({"ids": [demo]})),
        )
        .await,
        108,
        "lacks permission",
    );
    let up = upload(
        &env,
        &key,
        &demo,
        &[("file", Some("x.md"), "text/markdown", b"# x")],
    )
    .await;
    assert_code(&up, 102, "You don't own the dataset");
    assert_code(
        &documents(&env, &key, &demo).await,
        102,
        "You don't own the dataset",
    );
    let docs_path = format!("/api/v1/datasets/{demo}/documents");
    assert_code(
        &call(
            &env,
            &key,
            Method::DELETE,
            &docs_path,
            Some(json!({"ids": [doc]})),
        )
        .await,
        102,
        "You don't own the dataset",
    );
    let chunks_path = format!("/api/v1/datasets/{demo}/chunks");
    for method in [Method::POST, Method::DELETE] {
        let v = call(
            &env,
            &key,
            method,
            &chunks_path,
            Some(json!({"document_ids": [doc]})),
        )
        .await;
        assert_code(&v, 102, "You don't own the dataset");
    }
    let cpath = format!("/api/v1/datasets/{demo}/documents/{doc}/chunks");
    assert_code(
        &call(&env, &key, Method::GET, &cpath, None).await,
        102,
        "You don't own the dataset",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::POST,
            &cpath,
            Some(json!({"content": "mine now"})),
        )
        .await,
        102,
        "You don't own the dataset",
    );
    assert_code(
        &call(
            &env,
            &key,
            Method::DELETE,
            &cpath,
            Some(json!({"chunk_ids": [chunk]})),
        )
        .await,
        102,
        "You don't own the dataset",
    );
    let r = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/retrieval",
        Some(sdk_retrieve(json!([demo]), "delivery limit")),
    )
    .await;
    assert_code(&r, 102, &format!("You don't own the dataset {demo}."));

    // The other tenant's own dataset named "demo" is not a duplicate of the first tenant's.
    let mine = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/datasets",
        Some(json!({"name": "demo"})),
    )
    .await;
    assert_code(&mine, 0, "");
    assert_eq!(mine["data"]["name"], "demo");
    assert_eq!(
        mine["data"]["embedding_model"], "lexical",
        "its own model, not the first tenant's"
    );
    let sim = call(
        &env,
        &key,
        Method::POST,
        "/api/v1/datasets",
        Some(json!({"name": "s", "embedding_model": "sim-embed"})),
    )
    .await;
    assert_code(&sim, 101, "Unsupported model: <sim-embed>");
    // ...and the owner cannot reach it either.
    let theirs = mine["data"]["id"].as_str().unwrap();
    let r = call(
        &env,
        &env.api_key,
        Method::POST,
        "/api/v1/retrieval",
        Some(sdk_retrieve(json!([theirs]), "q")),
    )
    .await;
    assert_code(&r, 102, "You don't own the dataset");

    // Nothing changed for the owner, whose retrieval still works.
    assert_eq!(documents(&env, &env.api_key, &demo).await, before);
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chunks WHERE id = $1)")
        .bind(&chunk)
        .fetch_one(&env.db)
        .await
        .unwrap();
    assert!(exists);
    let r = call(
        &env,
        &env.api_key,
        Method::POST,
        "/api/v1/retrieval",
        Some(sdk_retrieve(
            json!([demo]),
            "What is the delivery limit of the job queue?",
        )),
    )
    .await;
    assert_code(&r, 0, "");
    assert_eq!(
        r["data"]["chunks"][0]["document_keyword"], "job-queue.md",
        "{r}"
    );
    env.stop().await;
}
