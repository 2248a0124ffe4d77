//! `plexus status`, `plexus connectors ...` and `plexus offsets ...`: thin clients of a
//! running worker's REST API (docs/rest-api.md) that print tables, or the API's JSON.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Where the API is and how to reach it; flattened into each client subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The worker's REST API [env: PLEXUS_URL] (default http://127.0.0.1:8083).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token, for a worker that requires one [env: PLEXUS_TOKEN].
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum ConnectorsAction {
    /// List the connectors: type, kind, topics, state and where each is defined.
    List,
    /// Pause a connector: its task stays up but stops polling or writing.
    Pause {
        /// The connector's name.
        name: String,
    },
    /// Resume a paused or stopped connector.
    Resume {
        /// The connector's name.
        name: String,
    },
    /// Stop a connector: its task shuts down, its configuration stays.
    Stop {
        /// The connector's name.
        name: String,
    },
    /// Restart a connector.
    Restart {
        /// The connector's name.
        name: String,
        /// Restart its tasks too, and print the resulting status.
        #[arg(long)]
        include_tasks: bool,
        /// Only restart what has failed.
        #[arg(long)]
        only_failed: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum OffsetsAction {
    /// Print a stopped connector's offsets.
    Get {
        /// The connector's name; stop it first (`plexus connectors stop NAME`).
        name: String,
    },
    /// Delete a stopped connector's offsets, or set them with `--to`.
    Reset {
        /// The connector's name; stop it first (`plexus connectors stop NAME`).
        name: String,
        /// Set the offsets from this JSON (Kafka Connect's {"offsets": [...]} shape);
        /// without it, delete them.
        #[arg(long, value_name = "JSON")]
        to: Option<String>,
    },
}

/// `plexus status`: the worker, then one line per connector.
pub async fn status(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(api)?;
    let statuses = client.get(&["connectors"], &[("expand", "status")]).await?;
    if api.json {
        print_json(&statuses)?;
    } else {
        let worker = client.get(&[], &[]).await?;
        println!("{}", worker_line(&worker));
        print!("{}", status_table(&statuses));
    }
    // For scripts and health checks: the table shows which one failed.
    Ok(if any_failed(&statuses) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a connector, or one of its tasks, is `FAILED`.
fn any_failed(statuses: &Value) -> bool {
    statuses.as_object().is_some_and(|map| {
        map.values().any(|entry| {
            let status = &entry["status"];
            status["connector"]["state"] == "FAILED"
                || status["tasks"]
                    .as_array()
                    .is_some_and(|tasks| tasks.iter().any(|t| t["state"] == "FAILED"))
        })
    })
}

/// `plexus connectors ACTION`.
pub async fn connectors(api: &ApiArgs, action: ConnectorsAction) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(api)?;
    let (name, verb, answer) = match action {
        ConnectorsAction::List => {
            let all = client
                .get(&["connectors"], &[("expand", "status"), ("expand", "info")])
                .await?;
            if api.json {
                print_json(&all)?;
            } else {
                print!("{}", list_table(&all));
            }
            return Ok(ExitCode::SUCCESS);
        }
        ConnectorsAction::Pause { name } => {
            let answer = client
                .send(Method::PUT, &["connectors", &name, "pause"], &[], None)
                .await?;
            (name, "paused", answer)
        }
        ConnectorsAction::Resume { name } => {
            let answer = client
                .send(Method::PUT, &["connectors", &name, "resume"], &[], None)
                .await?;
            (name, "resumed", answer)
        }
        ConnectorsAction::Stop { name } => {
            let answer = client
                .send(Method::PUT, &["connectors", &name, "stop"], &[], None)
                .await?;
            (name, "stopped", answer)
        }
        ConnectorsAction::Restart {
            name,
            include_tasks,
            only_failed,
        } => {
            let query = [
                ("includeTasks", if include_tasks { "true" } else { "false" }),
                ("onlyFailed", if only_failed { "true" } else { "false" }),
            ];
            let answer = client
                .send(Method::POST, &["connectors", &name, "restart"], &query, None)
                .await?;
            (name, "restarted", answer)
        }
    };
    if api.json {
        // Pause, resume and stop answer with an empty body: nothing to print.
        if !answer.is_null() {
            print_json(&answer)?;
        }
    } else {
        println!("{verb} `{name}`");
        if answer.is_object() {
            println!("{name}: {}", state_summary(&answer));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plexus offsets ACTION`.
pub async fn offsets(api: &ApiArgs, action: OffsetsAction) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(api)?;
    match action {
        OffsetsAction::Get { name } => {
            let offsets = client.get(&["connectors", &name, "offsets"], &[]).await?;
            if api.json {
                print_json(&offsets)?;
            } else {
                print!("{}", offsets_table(&name, &offsets));
            }
        }
        OffsetsAction::Reset { name, to } => {
            let path = ["connectors", name.as_str(), "offsets"];
            let answer = match to {
                Some(to) => {
                    let body: Value = serde_json::from_str(&to).context(
                        "`--to` is not JSON; expected {\"offsets\": [{\"partition\": ..., \"offset\": ...}]}",
                    )?;
                    client.send(Method::PATCH, &path, &[], Some(&body)).await?
                }
                None => client.send(Method::DELETE, &path, &[], None).await?,
            };
            if api.json {
                print_json(&answer)?;
            } else {
                match answer.get("message").and_then(Value::as_str) {
                    Some(message) => println!("{message}"),
                    None => println!("reset the offsets of `{name}`"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

const DEFAULT_URL: &str = "http://127.0.0.1:8083";
const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest LAST ERROR a table shows; `--json` has the whole message.
const ERROR_WIDTH: usize = 60;

/// One worker's API: every request goes through [`ApiClient::send`].
struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl ApiClient {
    fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let url = flag_or_env(args.url.as_deref(), "PLEXUS_URL").unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .with_context(|| format!("`{url}` is not an http URL; set --url or PLEXUS_URL (e.g. {DEFAULT_URL})"))?;
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("set up the HTTP client")?;
        Ok(Self {
            http,
            base,
            token: flag_or_env(args.token.as_deref(), "PLEXUS_TOKEN"),
        })
    }

    async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(Method::GET, path, query, None).await
    }

    /// The answer's JSON (`null` for an empty body), or the API's error as a sentence.
    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = endpoint(&self.base, path, query)?;
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|err| self.transport_error(err))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|err| self.transport_error(err))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes, self.token.is_some()));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("the answer to {method} {url} is not JSON"))
    }

    fn transport_error(&self, err: reqwest::Error) -> anyhow::Error {
        let at = self.base.as_str().trim_end_matches('/');
        if err.is_connect() {
            anyhow!("cannot reach the plexus worker at {at}: is `plexus run` running? (set --url or PLEXUS_URL)")
        } else if err.is_timeout() {
            anyhow!("the plexus worker at {at} did not answer within {}s", TIMEOUT.as_secs())
        } else {
            anyhow::Error::new(err).context(format!("talk to the plexus worker at {at}"))
        }
    }
}

/// A flag's value, else the environment variable's, ignoring empty ones.
fn flag_or_env(flag: Option<&str>, var: &str) -> Option<String> {
    flag.map(str::to_owned)
        .or_else(|| std::env::var(var).ok())
        .filter(|value| !value.is_empty())
}

/// `base` with `path` appended as segments (so names are percent-encoded) and `query`.
fn endpoint(base: &Url, path: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.path_segments_mut()
        .map_err(|()| anyhow!("`{base}` cannot have a path"))?
        .pop_if_empty()
        .extend(path);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// The API's `{"error_code", "message"}` as one sentence.
fn api_error(status: StatusCode, body: &[u8], sent_token: bool) -> anyhow::Error {
    if status == StatusCode::UNAUTHORIZED {
        return if sent_token {
            anyhow!("the worker refused the token: check --token or PLEXUS_TOKEN (HTTP 401)")
        } else {
            anyhow!("the worker requires a token: set --token or PLEXUS_TOKEN")
        };
    }
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned));
    match message {
        Some(message) => anyhow!("{message} (HTTP {})", status.as_u16()),
        None => {
            let text = truncate(&String::from_utf8_lossy(body), 200);
            anyhow!("the worker answered HTTP {status}: {text}")
        }
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `GET /` as one line: `worker host:8083 (plexus 0.1.0, data in ./data)`.
fn worker_line(worker: &Value) -> String {
    format!(
        "worker {} (plexus {}, data in {})",
        text(&worker["worker_id"]),
        text(&worker["version"]),
        text(&worker["data_dir"])
    )
}

/// `GET /connectors?expand=status` as a table.
fn status_table(statuses: &Value) -> String {
    let Some(map) = statuses.as_object().filter(|m| !m.is_empty()) else {
        return "no connectors\n".to_owned();
    };
    let rows: Vec<Vec<String>> = sorted(map)
        .into_iter()
        .map(|(name, entry)| {
            let status = &entry["status"];
            vec![
                name.clone(),
                text(&status["connector_type"]),
                text(&status["type"]),
                state_summary(status),
                text(&status["restarts"]),
                truncate(&text(&status["last_error"]["message"]), ERROR_WIDTH),
            ]
        })
        .collect();
    render_table(
        &[
            ("NAME", Align::Left),
            ("TYPE", Align::Left),
            ("KIND", Align::Left),
            ("STATE", Align::Left),
            ("RESTARTS", Align::Right),
            ("LAST ERROR", Align::Left),
        ],
        &rows,
    )
}

/// `GET /connectors?expand=status&expand=info` as a table.
fn list_table(all: &Value) -> String {
    let Some(map) = all.as_object().filter(|m| !m.is_empty()) else {
        return "no connectors\n".to_owned();
    };
    let rows: Vec<Vec<String>> = sorted(map)
        .into_iter()
        .map(|(name, entry)| {
            let (status, config) = (&entry["status"], &entry["info"]["config"]);
            let topics = match (&config["topic"], config["topics"].as_array()) {
                (Value::String(topic), _) => topic.clone(),
                (_, Some(topics)) => topics.iter().map(text).collect::<Vec<_>>().join(","),
                _ => "-".to_owned(),
            };
            vec![
                name.clone(),
                text(&status["connector_type"]),
                text(&status["type"]),
                topics,
                state_summary(status),
                text(&status["origin"]),
            ]
        })
        .collect();
    render_table(
        &[
            ("NAME", Align::Left),
            ("TYPE", Align::Left),
            ("KIND", Align::Left),
            ("TOPICS", Align::Left),
            ("STATE", Align::Left),
            ("ORIGIN", Align::Left),
        ],
        &rows,
    )
}

/// `GET /connectors/NAME/offsets`: a sink's as TOPIC PARTITION OFFSET, a source's as
/// its position in JSON.
fn offsets_table(name: &str, offsets: &Value) -> String {
    let entries = offsets["offsets"].as_array().map_or(&[][..], Vec::as_slice);
    if entries.is_empty() {
        return format!("`{name}` has no offsets\n");
    }
    let is_sink = entries.iter().all(|e| e["partition"]["kafka_topic"].is_string());
    if is_sink {
        let mut sorted: Vec<&Value> = entries.iter().collect();
        sorted.sort_by_key(|e| {
            let partition = &e["partition"];
            (text(&partition["kafka_topic"]), partition["kafka_partition"].as_u64())
        });
        let rows: Vec<Vec<String>> = sorted
            .into_iter()
            .map(|e| {
                vec![
                    text(&e["partition"]["kafka_topic"]),
                    text(&e["partition"]["kafka_partition"]),
                    text(&e["offset"]["kafka_offset"]),
                ]
            })
            .collect();
        render_table(
            &[
                ("TOPIC", Align::Left),
                ("PARTITION", Align::Right),
                ("OFFSET", Align::Right),
            ],
            &rows,
        )
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| vec![text(&e["partition"]), text(&e["offset"])])
            .collect();
        render_table(&[("PARTITION", Align::Left), ("OFFSET", Align::Left)], &rows)
    }
}

/// The connector's state, with any task whose state differs: `RUNNING (task 0 FAILED)`.
fn state_summary(status: &Value) -> String {
    let state = text(&status["connector"]["state"]);
    let odd: Vec<String> = status["tasks"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|t| text(&t["state"]) != state)
        .map(|t| format!("task {} {}", text(&t["id"]), text(&t["state"])))
        .collect();
    if odd.is_empty() {
        state
    } else {
        format!("{state} ({})", odd.join(", "))
    }
}

fn sorted(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// A JSON value for a table cell: strings bare, `null` or missing as `-`, the rest compact.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `text` on one line (whitespace runs become one space), cut to `max` characters with `…`.
fn truncate(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Rows under a header, columns two spaces apart, no trailing blanks. Widths count
/// characters, so names in any script line up as long as they are not double-width.
fn render_table(columns: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = columns.iter().map(|(title, _)| (*title).to_owned()).collect();
    let lines: Vec<Vec<String>> = std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            (0..columns.len())
                .map(|i| {
                    row.get(i)
                        .map_or(String::new(), |cell| cell.replace(char::is_control, " "))
                })
                .collect()
        })
        .collect();
    let mut widths = vec![0; columns.len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut rendered = String::new();
        for (i, ((cell, width), (_, align))) in line.iter().zip(&widths).zip(columns).enumerate() {
            if i > 0 {
                rendered.push_str("  ");
            }
            let pad = " ".repeat(width - cell.chars().count());
            match align {
                Align::Left => {
                    rendered.push_str(cell);
                    rendered.push_str(&pad);
                }
                Align::Right => {
                    rendered.push_str(&pad);
                    rendered.push_str(cell);
                }
            }
        }
        out.push_str(rendered.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let rows = vec![
            vec!["orders-out".to_owned(), "7".to_owned(), "RUNNING".to_owned()],
            vec!["shop".to_owned(), "1234".to_owned(), "FAILED".to_owned()],
        ];
        let table = render_table(
            &[("NAME", Align::Left), ("N", Align::Right), ("STATE", Align::Left)],
            &rows,
        );
        assert_eq!(
            table,
            "NAME           N  STATE\n\
             orders-out     7  RUNNING\n\
             shop        1234  FAILED\n"
        );
    }

    #[test]
    fn tables_have_no_trailing_blanks_and_survive_short_rows_and_newlines() {
        let rows = vec![
            vec!["a".to_owned(), "x\ny".to_owned()],
            vec!["bbbbbb".to_owned()],
            vec!["é".to_owned(), "ü".to_owned()],
        ];
        let table = render_table(&[("K", Align::Left), ("VALUE", Align::Left)], &rows);
        assert_eq!(table, "K       VALUE\na       x y\nbbbbbb\né       ü\n");
        assert!(table.lines().all(|l| l == l.trim_end()), "{table:?}");
    }

    #[test]
    fn truncation_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("0123456789abc", 10), "012345678…");
        assert_eq!(truncate("line one\n\tline two", 40), "line one line two");
        let long = "é".repeat(50);
        let cut = truncate(&long, 8);
        assert_eq!(cut.chars().count(), 8);
        assert_eq!(cut, format!("{}…", "é".repeat(7)));
        // No blank before the ellipsis.
        assert_eq!(truncate("abcd efgh", 6), "abcd…");
    }

    #[test]
    fn status_fails_only_when_a_connector_or_a_task_failed() {
        let entry = |connector: &str, task: &str| json!({"status": {"connector": {"state": connector}, "tasks": [{"id": 0, "state": task}]}});
        assert!(!any_failed(&json!({})));
        assert!(!any_failed(
            &json!({"a": entry("RUNNING", "RUNNING"), "b": entry("PAUSED", "PAUSED")})
        ));
        assert!(!any_failed(&json!({"a": entry("FINISHED", "FINISHED")})));
        assert!(any_failed(
            &json!({"a": entry("RUNNING", "RUNNING"), "b": entry("FAILED", "FAILED")})
        ));
        assert!(any_failed(&json!({"a": entry("RUNNING", "FAILED")})));
    }

    #[test]
    fn the_status_table_sorts_and_shows_states_restarts_and_errors() {
        let long_error = format!("connection refused by the database: {}", "x".repeat(100));
        let statuses = json!({
            "shop": {"status": {
                "name": "shop", "type": "source", "connector_type": "datagen",
                "connector": {"state": "RUNNING"},
                "tasks": [{"id": 0, "state": "FAILED"}],
                "restarts": 3,
                "last_error": {"message": long_error, "time": "2026-11-22T10:15:03.512Z"},
            }},
            "orders-out": {"status": {
                "name": "orders-out", "type": "sink", "connector_type": "discard",
                "connector": {"state": "PAUSED"},
                "tasks": [{"id": 0, "state": "PAUSED"}],
                "restarts": 0,
                "last_error": null,
            }},
        });
        assert!(any_failed(&statuses), "a failed task makes `plexus status` exit 1");
        let table = status_table(&statuses);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME        TYPE     KIND    STATE"), "{table}");
        assert!(lines[1].starts_with("orders-out  discard  sink    PAUSED "), "{table}");
        assert!(lines[1].ends_with(" 0  -"), "{table}");
        assert!(
            lines[2].starts_with("shop        datagen  source  RUNNING (task 0 FAILED)"),
            "{table}"
        );
        assert!(
            lines[2].contains(" 3  connection refused by the database: xxx"),
            "{table}"
        );
        assert!(lines[2].ends_with('…'), "{table}");
        let error_cell = lines[2].split("  ").last().unwrap();
        assert_eq!(error_cell.chars().count(), ERROR_WIDTH);
        assert_eq!(status_table(&json!({})), "no connectors\n");
    }

    #[test]
    fn the_list_table_shows_topics_and_origin() {
        let all = json!({
            "shop": {
                "status": {"type": "source", "connector_type": "datagen", "connector": {"state": "RUNNING"}, "tasks": [], "origin": "file:a.toml"},
                "info": {"config": {"type": "datagen", "topic": "shop.{table}"}},
            },
            "out": {
                "status": {"type": "sink", "connector_type": "discard", "connector": {"state": "STOPPED"}, "tasks": [], "origin": "api"},
                "info": {"config": {"type": "discard", "topics": ["a", "b"]}},
            },
        });
        assert_eq!(
            list_table(&all),
            "NAME  TYPE     KIND    TOPICS        STATE    ORIGIN\n\
             out   discard  sink    a,b           STOPPED  api\n\
             shop  datagen  source  shop.{table}  RUNNING  file:a.toml\n"
        );
    }

    #[test]
    fn sink_offsets_are_a_table_and_source_offsets_json() {
        let sink = json!({"offsets": [
            {"partition": {"kafka_topic": "shop.orders", "kafka_partition": 1}, "offset": {"kafka_offset": 7}},
            {"partition": {"kafka_topic": "shop.orders", "kafka_partition": 0}, "offset": {"kafka_offset": 1200}},
        ]});
        assert_eq!(
            offsets_table("out", &sink),
            "TOPIC        PARTITION  OFFSET\n\
             shop.orders          0    1200\n\
             shop.orders          1       7\n"
        );
        let source = json!({"offsets": [
            {"partition": {"connector": "shop"}, "offset": {"emitted": 1200}},
        ]});
        assert_eq!(
            offsets_table("shop", &source),
            "PARTITION             OFFSET\n{\"connector\":\"shop\"}  {\"emitted\":1200}\n"
        );
        assert_eq!(offsets_table("out", &json!({"offsets": []})), "`out` has no offsets\n");
    }

    #[test]
    fn api_errors_read_as_sentences() {
        let body = br#"{"error_code": 404, "message": "connector `x` not found"}"#;
        assert_eq!(
            api_error(StatusCode::NOT_FOUND, body, false).to_string(),
            "connector `x` not found (HTTP 404)"
        );
        assert_eq!(
            api_error(StatusCode::UNAUTHORIZED, b"", false).to_string(),
            "the worker requires a token: set --token or PLEXUS_TOKEN"
        );
        assert!(
            api_error(StatusCode::UNAUTHORIZED, b"", true)
                .to_string()
                .contains("refused the token")
        );
        assert_eq!(
            api_error(StatusCode::BAD_GATEWAY, b"<html>\nbad gateway</html>", false).to_string(),
            "the worker answered HTTP 502 Bad Gateway: <html> bad gateway</html>"
        );
    }

    #[test]
    fn endpoints_encode_names_and_keep_a_base_path() {
        let base = Url::parse("http://127.0.0.1:8083").unwrap();
        assert_eq!(endpoint(&base, &[], &[]).unwrap().as_str(), "http://127.0.0.1:8083/");
        assert_eq!(
            endpoint(&base, &["connectors", "a b/c", "offsets"], &[])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8083/connectors/a%20b%2Fc/offsets"
        );
        assert_eq!(
            endpoint(&base, &["connectors"], &[("expand", "status"), ("expand", "info")])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8083/connectors?expand=status&expand=info"
        );
        let proxied = Url::parse("https://ops.example/plexus/").unwrap();
        assert_eq!(
            endpoint(&proxied, &["connectors"], &[]).unwrap().as_str(),
            "https://ops.example/plexus/connectors"
        );
    }

    #[tokio::test]
    async fn an_unreachable_worker_says_how_to_point_at_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = ApiArgs {
            url: Some(format!("http://127.0.0.1:{port}")),
            token: None,
            json: false,
        };
        let err = status(&args).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot reach the plexus worker at http://127.0.0.1:{port}: is `plexus run` running? (set --url or PLEXUS_URL)"
            )
        );
        let bad = ApiArgs {
            url: Some("127.0.0.1:8083".to_owned()),
            ..args
        };
        let err = status(&bad).await.unwrap_err().to_string();
        assert!(err.contains("is not an http URL"), "{err}");
    }

    /// The shape main.rs wires these into.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Status {
            #[command(flatten)]
            api: ApiArgs,
        },
        Connectors {
            #[command(subcommand)]
            action: ConnectorsAction,
            #[command(flatten)]
            api: ApiArgs,
        },
        Offsets {
            #[command(subcommand)]
            action: OffsetsAction,
            #[command(flatten)]
            api: ApiArgs,
        },
    }

    #[test]
    fn api_flags_go_before_or_after_the_action() {
        let cli = Cli::try_parse_from([
            "plexus",
            "connectors",
            "restart",
            "x",
            "--url",
            "http://h:1",
            "--json",
            "--include-tasks",
        ])
        .unwrap();
        let Command::Connectors { action, api } = cli.command else {
            panic!("not connectors")
        };
        assert_eq!(api.url.as_deref(), Some("http://h:1"));
        assert!(api.json);
        assert!(
            matches!(action, ConnectorsAction::Restart { ref name, include_tasks: true, only_failed: false } if name == "x")
        );

        let cli = Cli::try_parse_from(["plexus", "offsets", "--token", "t", "reset", "y", "--to", "{}"]).unwrap();
        let Command::Offsets { action, api } = cli.command else {
            panic!("not offsets")
        };
        assert_eq!(api.token.as_deref(), Some("t"));
        assert!(matches!(action, OffsetsAction::Reset { ref name, to: Some(ref to) } if name == "y" && to == "{}"));

        let cli = Cli::try_parse_from(["plexus", "status", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status {
                api: ApiArgs {
                    json: true,
                    url: None,
                    ..
                }
            }
        ));
        assert!(Cli::try_parse_from(["plexus", "connectors", "pause"]).is_err());
    }
}
