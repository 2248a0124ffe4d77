//! The REST API over real HTTP against a real worker: every endpoint, its error cases,
//! authentication, and persistence of what the API changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use plexus_config::{Config, ConfigSchema, ConnectorKind, FieldKind, FieldSpec, Settings};
use plexus_connector::{ConnectorError, ConnectorFactory, Sink, SinkContext, SinkOffsets, SinkRecord, async_trait};
use plexus_runtime::{Registry, RestServer, Worker};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A sink type with a secret setting; it remembers the settings it was created with.
struct Vault {
    seen: Arc<Mutex<Vec<String>>>,
}

static VAULT_SCHEMA: LazyLock<ConfigSchema> = LazyLock::new(|| {
    ConfigSchema::new()
        .field(FieldSpec::new("password", FieldKind::String).secret().required())
        .field(FieldSpec::new("note", FieldKind::String).with_default("none"))
});

impl ConnectorFactory for Vault {
    fn type_name(&self) -> &str {
        "vault"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn schema(&self) -> &ConfigSchema {
        &VAULT_SCHEMA
    }
    fn create_sink(&self, settings: &Settings) -> Result<Box<dyn Sink>, ConnectorError> {
        let password = settings
            .secret("password")
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(password);
        Ok(Box::new(Drop))
    }
}

struct Drop;

#[async_trait]
impl Sink for Drop {
    async fn start(&mut self, _ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        Ok(None)
    }
    async fn write(&mut self, _ctx: &SinkContext, _records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn flush(&mut self, _ctx: &SinkContext, _offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        Ok(())
    }
}

struct Api {
    worker: Arc<Worker>,
    server: Option<RestServer>,
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Api {
    async fn start(data: &Path, connectors: &str, rest: &str) -> Api {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::builtin();
        registry.register(Arc::new(Vault {
            seen: Arc::clone(&seen),
        }));
        let text = format!(
            "[worker]\ndata_dir = \"{}\"\n[worker.restart]\ninitial_backoff = \"50ms\"\n[worker.rest]\n{rest}\n{connectors}",
            data.display()
        );
        let config = Config::load_str(&[("pipeline.toml".into(), text)], &registry, &|_| None).unwrap();
        let worker = Arc::new(Worker::start(&config, registry).await.unwrap());
        let server = RestServer::start(Arc::clone(&worker), &config.worker.rest, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let token = config.worker.rest.token.as_ref().map(|t| t.expose().to_owned());
        Api {
            base: format!("http://{}", server.addr),
            worker,
            server: Some(server),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            token,
            seen,
        }
    }

    async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.worker.shutdown().await.unwrap();
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn state(&self, name: &str) -> String {
        let (_, status) = self.get(&format!("/connectors/{name}/status")).await;
        status["connector"]["state"].as_str().unwrap_or("?").to_owned()
    }

    /// Polls until the connector reaches `state`.
    async fn wait_state(&self, name: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.state(name).await;
            if now == state {
                return;
            }
            assert!(Instant::now() < deadline, "{name} stayed {now}, expected {state}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for(&self, what: &str, mut check: impl AsyncFnMut(&Api) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check(self).await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn end_offset(worker: &Worker, topic: &str) -> i64 {
    worker
        .log()
        .topic(topic)
        .map_or(0, |t| t.partitions().iter().map(|p| p.end_offset()).sum())
}

const PIPELINE: &str = r#"
[[connector]]
name = "gen"
type = "datagen"
topic = "shop.{table}"
settings = { count = 300, tables = ["orders"], batch_size = 50, tombstones = false }

[[connector]]
name = "out"
type = "discard"
topics = ["shop.orders"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_describes_itself_and_answers_errors_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), PIPELINE, "").await;

    let (status, root) = api.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        root["worker_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", api.base.rsplit(':').next().unwrap()))
    );
    assert_eq!(root["data_dir"], dir.path().display().to_string());

    let (status, health) = api.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["reasons"], json!([]));

    let (status, body) = api.get("/no/such/thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error_code"], 404);
    assert_eq!(body["message"], "no such endpoint: /no/such/thing");

    let (status, body) = api.call(Method::DELETE, "/topics", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["message"], "DELETE is not allowed on /topics");

    // Malformed JSON, a wrong content type, an empty body, an oversized body.
    let raw = |method: Method, path: &str| api.http.request(method, format!("{}{path}", api.base));
    let response = raw(Method::POST, "/connectors")
        .header("content-type", "application/json")
        .body("{\"name\": \"x\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("the request body is not valid JSON: EOF while parsing"),
        "{body}"
    );
    let response = raw(Method::POST, "/connectors")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let response = raw(Method::POST, "/connectors").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let response = raw(Method::POST, "/connectors")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The unread rest of the body ends the connection: the client is told.
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_code"], 413);

    let (status, body) = api.get("/connectors/nope/status").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "connector `nope` not found");
    let (status, _) = api.get("/connectors?expand=everything").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .call(Method::POST, "/connectors/gen/restart?includeTasks=maybe", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "query parameter `includeTasks` must be true or false, found `maybe`"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_are_listed_inspected_and_steered() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), PIPELINE, "").await;

    let (status, names) = api.get("/connectors").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names, json!(["gen", "out"]));

    let (_, expanded) = api.get("/connectors?expand=status&expand=info").await;
    assert_eq!(expanded["gen"]["info"]["type"], "source");
    assert_eq!(expanded["gen"]["info"]["config"]["topic"], "shop.{table}");
    assert_eq!(expanded["out"]["status"]["type"], "sink");
    assert_eq!(expanded["out"]["status"]["connector_type"], "discard");
    assert_eq!(expanded["out"]["status"]["origin"], "file:pipeline.toml");
    assert!(expanded["gen"].get("status").is_some() && expanded["gen"].get("info").is_some());

    let (_, info) = api.get("/connectors/gen").await;
    assert_eq!(info["name"], "gen");
    assert_eq!(info["tasks"], json!([{"connector": "gen", "task": 0}]));
    assert_eq!(info["config"]["settings"]["count"], 300);
    assert_eq!(info["config"]["errors"]["tolerance"], "fail");
    let (_, tasks) = api.get("/connectors/gen/tasks").await;
    assert_eq!(tasks[0]["id"], json!({"connector": "gen", "task": 0}));

    api.wait_state("gen", "FINISHED").await;
    let (_, status) = api.get("/connectors/out/status").await;
    assert_eq!(status["connector"]["state"], "RUNNING");
    assert_eq!(status["tasks"][0]["state"], "RUNNING");
    assert_eq!(status["tasks"][0]["worker_id"], status["connector"]["worker_id"]);
    assert_eq!(status["last_error"], Value::Null);

    // Pause: the task stays, nothing is read; resume: it reads again.
    let (code, _) = api.call(Method::PUT, "/connectors/out/pause", None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    api.wait_state("out", "PAUSED").await;
    let (code, _) = api.call(Method::PUT, "/connectors/out/resume", None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    api.wait_state("out", "RUNNING").await;

    // Restart: only a failed one with onlyFailed; with includeTasks, the status comes back.
    let (code, body) = api
        .call(Method::POST, "/connectors/out/restart?onlyFailed=true", None)
        .await;
    assert_eq!((code, body), (StatusCode::NO_CONTENT, Value::Null));
    let (code, body) = api
        .call(Method::POST, "/connectors/out/restart?includeTasks=true", None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(body["name"], "out");

    // Stop: the task goes away; restart is refused until resumed.
    let (code, _) = api.call(Method::PUT, "/connectors/out/stop", None).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    assert_eq!(api.state("out").await, "STOPPED");
    let (code, body) = api.call(Method::POST, "/connectors/out/restart", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "connector `out` is STOPPED; resume it to start it again"
    );
    let (code, _) = api.call(Method::PUT, "/connectors/out/pause", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = api.call(Method::PUT, "/connectors/out/resume", None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    api.wait_state("out", "RUNNING").await;

    // Plugins, validation and topics.
    let (_, plugins) = api.get("/connector-plugins").await;
    let datagen = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "datagen")
        .unwrap();
    assert_eq!(datagen["kind"], "source");
    assert!(
        datagen["config"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "count")
    );
    let vault = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "vault")
        .unwrap();
    assert_eq!(
        vault["config"][0],
        json!({"name": "password", "kind": "string", "required": true, "secret": true, "default": null, "doc": ""})
    );

    let (code, ok) = api
        .call(
            Method::PUT,
            "/connector-plugins/datagen/config/validate",
            Some(json!({"topic": "t", "settings": {"count": 5}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(ok["valid"], true);
    let (_, bad) = api
        .call(
            Method::PUT,
            "/connector-plugins/datagen/config/validate",
            Some(json!({"topic": "t", "settings": {"cont": 5}})),
        )
        .await;
    assert_eq!(bad["valid"], false);
    assert_eq!(bad["error_count"], 1);
    let error = bad["errors"][0].as_str().unwrap();
    assert!(error.contains("connectors/validate.toml:"), "{error}");
    assert!(
        error.contains("error: unknown setting `cont` for connector type `datagen`\n  hint: did you mean `count`?"),
        "{error}"
    );
    let (code, _) = api
        .call(Method::PUT, "/connector-plugins/nope/config/validate", Some(json!({})))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let (_, topics) = api.get("/topics").await;
    let orders = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shop.orders")
        .unwrap();
    assert_eq!(orders["records"], 300);
    assert!(orders["bytes"].as_u64().unwrap() > 0);
    assert_eq!(orders["internal"], false);
    assert!(
        topics
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "__source_positions" && t["internal"] == true)
    );
    let (_, topic) = api.get("/topics/shop.orders").await;
    assert_eq!(topic["partitions"][0]["end_offset"], 300);
    assert_eq!(topic["config"]["cleanup_policy"], "delete");
    let (code, _) = api.get("/topics/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let response = api.http.get(format!("{}/metrics", api.base)).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("plexus_connector_records_in_total{connector=\"gen\""),
        "{text}"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_are_created_changed_and_deleted_and_secrets_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), PIPELINE, "").await;
    let vault = json!({"type": "vault", "topics": ["shop.orders"], "settings": {"password": "hunter2"}});

    let (code, info) = api
        .call(Method::POST, "/connectors", Some(json!({"name": "v", "config": vault})))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{info}");
    assert_eq!(info["config"]["settings"]["password"], "***");
    assert_eq!(info["config"]["settings"]["note"], "none");
    api.wait_state("v", "RUNNING").await;
    assert_eq!(api.seen.lock().unwrap().last().map(String::as_str), Some("hunter2"));

    let (code, body) = api
        .call(Method::POST, "/connectors", Some(json!({"name": "v", "config": vault})))
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(body["message"], "connector `v` already exists");

    // An invalid configuration: every problem, located in the file it would be stored in.
    let (code, body) = api
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "w", "config": {"type": "vault", "topics": ["t"], "settings": {"pasword": "x"}}})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let problems: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("unknown setting `pasword`") && p.contains("did you mean `password`?"))
    );
    assert!(
        problems
            .iter()
            .all(|p| p.starts_with(&dir.path().join("connectors/w.toml").display().to_string()))
    );
    let (code, _) = api
        .call(Method::POST, "/connectors", Some(json!({"config": vault})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = api
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "bad/name", "config": vault})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = api
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "w", "config": {"type": "vault", "settings": {"password": null}}})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "`settings.password` is null; leave the key out instead"
    );

    // GET config never shows the secret; a PUT that sends "***" back keeps it.
    let (_, config) = api.get("/connectors/v/config").await;
    assert_eq!(config["settings"]["password"], "***");
    let mut changed = config.clone();
    changed["settings"]["note"] = json!("rotated");
    let (code, info) = api.call(Method::PUT, "/connectors/v/config", Some(changed)).await;
    assert_eq!(code, StatusCode::OK, "{info}");
    assert_eq!(info["config"]["settings"]["note"], "rotated");
    api.wait_state("v", "RUNNING").await;
    assert_eq!(api.seen.lock().unwrap().last().map(String::as_str), Some("hunter2"));
    let stored = std::fs::read_to_string(dir.path().join("connectors/v.toml")).unwrap();
    assert!(
        stored.contains("password = \"hunter2\"") && stored.contains("note = \"rotated\""),
        "{stored}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("connectors/v.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "stored configurations are private to their owner");
    for path in [
        "/connectors/v",
        "/connectors/v/status",
        "/connectors?expand=info",
        "/connectors/v/tasks",
    ] {
        let (_, body) = api.get(path).await;
        assert!(!body.to_string().contains("hunter2"), "{path} shows the secret: {body}");
    }

    // PATCH merges; null removes a key (back to its default).
    let (code, info) = api
        .call(
            Method::PATCH,
            "/connectors/v/config",
            Some(json!({"settings": {"note": null}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{info}");
    assert_eq!(info["config"]["settings"]["note"], "none");
    let (code, _) = api
        .call(Method::PATCH, "/connectors/v/config", Some(json!({"name": "other"})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = api
        .call(Method::PATCH, "/connectors/nope/config", Some(json!({})))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // PUT on a new name creates.
    let (code, info) = api
        .call(
            Method::PUT,
            "/connectors/v2/config",
            Some(json!({"type": "discard", "topics": ["shop.orders"]})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{info}");
    let (code, body) = api
        .call(
            Method::PUT,
            "/connectors/v2/config",
            Some(json!({"name": "v3", "type": "discard", "topics": ["x"]})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "the configuration names connector `v3`, but the request is for `v2`"
    );

    let (code, _) = api.call(Method::DELETE, "/connectors/v2", None).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    let (code, _) = api.call(Method::DELETE, "/connectors/v2", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, names) = api.get("/connectors").await;
    assert_eq!(names, json!(["gen", "out", "v"]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_change_only_while_stopped_and_move_sinks_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(dir.path(), PIPELINE, "").await;
    api.wait_state("gen", "FINISHED").await;
    api.wait_for("the sink to commit everything", async |api: &Api| {
        api.worker
            .log()
            .groups()
            .committed("out", "shop.orders", 0)
            .map(|c| c.offset)
            == Some(300)
    })
    .await;

    let (code, running) = api.get("/connectors/out/offsets").await;
    assert_eq!(code, StatusCode::OK, "offsets can be read at any time");
    assert_eq!(running["offsets"][0]["offset"]["kafka_offset"], 300);
    let (code, body) = api.call(Method::DELETE, "/connectors/out/offsets", None).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        "cannot reset the offsets of connector `out` while it is RUNNING; stop it first (`plexus connectors stop out` or PUT /connectors/out/stop)"
    );
    let patch =
        json!({"offsets": [{"partition": {"kafka_topic": "shop.orders", "kafka_partition": 0}, "offset": null}]});
    let (code, _) = api.call(Method::PATCH, "/connectors/out/offsets", Some(patch)).await;
    assert_eq!(code, StatusCode::CONFLICT);

    // A sink: committed offsets per partition; moved back, it reads again from there.
    api.call(Method::PUT, "/connectors/out/stop", None).await;
    let (code, offsets) = api.get("/connectors/out/offsets").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        offsets,
        json!({"offsets": [{"partition": {"kafka_topic": "shop.orders", "kafka_partition": 0}, "offset": {"kafka_offset": 300}}]})
    );
    let read_before = api
        .worker
        .connector("out")
        .unwrap()
        .metrics
        .records
        .load(std::sync::atomic::Ordering::Relaxed);
    let patch = json!({"offsets": [{"partition": {"kafka_topic": "shop.orders", "kafka_partition": 0}, "offset": {"kafka_offset": 100}}]});
    let (code, body) = api.call(Method::PATCH, "/connectors/out/offsets", Some(patch)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        body["message"],
        "The offsets for this connector have been altered successfully"
    );
    for (bad, message) in [
        (
            json!({"offsets": [{"partition": {"kafka_topic": "other", "kafka_partition": 0}, "offset": {"kafka_offset": 1}}]}),
            "does not read topic `other`",
        ),
        (
            json!({"offsets": [{"partition": {"kafka_topic": "shop.orders", "kafka_partition": 7}, "offset": {"kafka_offset": 1}}]}),
            "has no partition 7",
        ),
        (
            json!({"offsets": [{"partition": {"kafka_topic": "shop.orders", "kafka_partition": 0}, "offset": {"kafka_offset": -5}}]}),
            "must be {\"kafka_offset\": N} with N >= 0",
        ),
        (json!({"offsets": []}), "nothing to change"),
        (json!({"offsets": 3}), "the body must be"),
    ] {
        let (code, body) = api.call(Method::PATCH, "/connectors/out/offsets", Some(bad)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["message"].as_str().unwrap().contains(message), "{body}");
    }
    api.call(Method::PUT, "/connectors/out/resume", None).await;
    api.wait_for("the sink to read the last 200 records again", async |api: &Api| {
        api.worker
            .connector("out")
            .unwrap()
            .metrics
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
            >= read_before + 200
            && api
                .worker
                .log()
                .groups()
                .committed("out", "shop.orders", 0)
                .map(|c| c.offset)
                == Some(300)
    })
    .await;
    // DELETE: back to the beginning.
    api.call(Method::PUT, "/connectors/out/stop", None).await;
    let (code, _) = api.call(Method::DELETE, "/connectors/out/offsets", None).await;
    assert_eq!(code, StatusCode::OK);
    let (_, offsets) = api.get("/connectors/out/offsets").await;
    assert_eq!(offsets, json!({"offsets": []}));

    // A source: its position as its type describes it; moved back, it writes again.
    api.call(Method::PUT, "/connectors/gen/stop", None).await;
    let (_, offsets) = api.get("/connectors/gen/offsets").await;
    assert_eq!(
        offsets,
        json!({"offsets": [{"partition": {"connector": "gen"}, "offset": {"last_event": 299}}]})
    );
    let (code, body) = api
        .call(
            Method::PATCH,
            "/connectors/gen/offsets",
            Some(json!({"offsets": [{"partition": {"connector": "gen"}, "offset": {"last": 1}}]})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("not a position of a `datagen` source: expected {\"last_event\": N}"),
        "{body}"
    );
    let (code, _) = api
        .call(
            Method::PATCH,
            "/connectors/gen/offsets",
            Some(json!({"offsets": [{"partition": {"connector": "gen"}, "offset": {"last_event": 249}}]})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, offsets) = api.get("/connectors/gen/offsets").await;
    assert_eq!(offsets["offsets"][0]["offset"], json!({"last_event": 249}));
    api.call(Method::PUT, "/connectors/gen/resume", None).await;
    api.wait_state("gen", "FINISHED").await;
    assert_eq!(
        end_offset(&api.worker, "shop.orders"),
        350,
        "events 250..299 were written again"
    );

    // DELETE: from the very beginning, all written again.
    api.call(Method::PUT, "/connectors/gen/stop", None).await;
    api.call(Method::DELETE, "/connectors/gen/offsets", None).await;
    let (_, offsets) = api.get("/connectors/gen/offsets").await;
    assert_eq!(offsets, json!({"offsets": []}));
    api.call(Method::PUT, "/connectors/gen/resume", None).await;
    api.wait_state("gen", "FINISHED").await;
    assert_eq!(end_offset(&api.worker, "shop.orders"), 650);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured_and_outside_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = Api::start(dir.path(), PIPELINE, "token = \"sesame\"").await;
    let (code, _) = api.get("/connectors").await;
    assert_eq!(code, StatusCode::OK);
    let token = api.token.take();
    let (code, body) = api.get("/connectors").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error_code"], 401);
    api.token = Some("sesame2".into());
    let (code, _) = api.get("/metrics").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    api.token = None;
    // The page holds no data and asks for the token itself.
    let page = api.http.get(format!("{}/ui", api.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (code, _) = api.get("/ui/history").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    api.token = token;

    // Outside loopback without a token: refused before binding.
    let open = plexus_config::RestConfig::default();
    let err = RestServer::start(Arc::clone(&api.worker), &open, "0.0.0.0:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("refusing to serve the REST API on 0.0.0.0:0 without a token"),
        "{err}"
    );
    // A token file works like a token.
    std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
    let with_file = plexus_config::RestConfig {
        token_file: Some(dir.path().join("token")),
        ..plexus_config::RestConfig::default()
    };
    let server = RestServer::start(Arc::clone(&api.worker), &with_file, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}/connectors", server.addr);
    assert_eq!(
        api.http.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.http
            .get(&url)
            .bearer_auth("from-file")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    server.stop();
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_survive_restarts_and_the_most_recent_change_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = |count: u32, out_topic: &str| {
        format!(
            "[[connector]]\nname = \"gen\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\nsettings = {{ count = {count}, rate = 1000 }}\n\n[[connector]]\nname = \"out\"\ntype = \"discard\"\ntopics = [\"{out_topic}\"]\n"
        )
    };
    let api = Api::start(&data, &file(100, "shop.orders"), "").await;
    // Through the API: a new connector, a changed file connector, a deleted one, a paused one.
    let (code, _) = api
        .call(
            Method::POST,
            "/connectors",
            Some(json!({"name": "extra", "config": {"type": "discard", "topics": ["shop.customers"]}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, _) = api
        .call(
            Method::PATCH,
            "/connectors/gen/config",
            Some(json!({"settings": {"count": 5}})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    api.call(Method::PUT, "/connectors/extra/pause", None).await;
    let (code, _) = api.call(Method::DELETE, "/connectors/out", None).await;
    assert_eq!(code, StatusCode::NO_CONTENT);
    api.stop().await;

    // Same files: the API's changes stay.
    let api = Api::start(&data, &file(100, "shop.orders"), "").await;
    let (_, names) = api.get("/connectors").await;
    assert_eq!(names, json!(["extra", "gen"]));
    let (_, config) = api.get("/connectors/gen/config").await;
    assert_eq!(config["settings"]["count"], 5);
    let (_, status) = api.get("/connectors/gen/status").await;
    assert_eq!(status["origin"], "api");
    api.wait_state("extra", "PAUSED").await;
    api.stop().await;

    // Only gen's definition changed in the file: the file wins for gen; out stays
    // deleted, its definition being the one the API deleted.
    let api = Api::start(&data, &file(200, "shop.orders"), "").await;
    let (_, names) = api.get("/connectors").await;
    assert_eq!(names, json!(["extra", "gen"]));
    let (_, config) = api.get("/connectors/gen/config").await;
    assert_eq!(config["settings"]["count"], 200);
    let (_, status) = api.get("/connectors/gen/status").await;
    assert_eq!(status["origin"], "file:pipeline.toml");
    assert!(!data.join("connectors/gen.toml").exists());
    api.wait_state("extra", "PAUSED").await;
    api.stop().await;

    // Now out's definition changed too: it is back.
    let api = Api::start(&data, &file(200, "shop.customers"), "").await;
    let (_, names) = api.get("/connectors").await;
    assert_eq!(names, json!(["extra", "gen", "out"]));
    assert!(!data.join("connectors/out.deleted").exists());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_arrives_ends_instead_of_hanging() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    // The limit is shutdown_timeout + 10 s.
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\nshutdown_timeout = \"1s\"\n",
        dir.path().display()
    );
    let registry = Registry::builtin();
    let config = Config::load_str(&[("p.toml".into(), text)], &registry, &|_| None).unwrap();
    let worker = Arc::new(Worker::start(&config, registry).await.unwrap());
    let server = RestServer::start(Arc::clone(&worker), &config.worker.rest, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /connectors HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("the request did not complete within 11 s"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(10), "it waited for the limit");
    server.stop();
    worker.shutdown().await.unwrap();
}
