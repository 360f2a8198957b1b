//! A guard in front of the line-delimited JSON-RPC transports (stdio, the unix socket):
//! every line the client sends gets an answer, whatever it holds.
//!
//! - A line that is not JSON (or nests deeper than the parser's limit) gets a JSON-RPC
//!   parse error (-32700), where the SDK alone would drop it in silence.
//! - A line over `server.max_request_bytes` gets an invalid-request error (-32600) and is
//!   skipped to its end without being held in memory.
//! - A request that reuses the id of one still in progress (ids compared as the SDK does:
//!   `1` and `1.0` are one id) is passed on under a private id and its answer given back
//!   the id the client used, where the SDK alone would answer only one of the two.
//! - A "notification" that carries an id (a request, then) gets an invalid-request error,
//!   where the SDK alone drops it.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// Ids remembered as in progress; beyond this the oldest are forgotten (requests whose
/// answer never came: cancelled ones).
const MAX_TRACKED: usize = 10_000;
/// Bytes buffered between the guard and the SDK in each direction.
const PIPE_BYTES: usize = 256 * 1024;

/// The streams the SDK should serve on in place of `input` and `output`, and the task that
/// moves lines between them. The task ends when the client's input ends and the SDK has
/// written its last line.
pub fn guard<R, W>(
    input: R,
    output: W,
    max_line: usize,
) -> (
    (DuplexStream, DuplexStream),
    impl std::future::Future<Output = ()> + Send,
)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (sdk_in, to_sdk) = tokio::io::duplex(PIPE_BYTES);
    let (from_sdk, sdk_out) = tokio::io::duplex(PIPE_BYTES);
    let state = std::sync::Arc::new(std::sync::Mutex::new(Ids::default()));
    let (replies, replies_rx) = mpsc::unbounded_channel::<String>();
    let inbound = inbound(
        input,
        to_sdk,
        replies,
        std::sync::Arc::clone(&state),
        max_line,
    );
    let outbound = outbound(from_sdk, output, replies_rx, state);
    let task = async move {
        let (_, _) = tokio::join!(inbound, outbound);
    };
    ((sdk_in, sdk_out), task)
}

/// Ids of requests in progress, and the private ids given to duplicates.
#[derive(Default)]
struct Ids {
    in_progress: HashSet<String>,
    order: std::collections::VecDeque<String>,
    /// Private id (as JSON text) → the client's id.
    renamed: HashMap<String, Value>,
    next: u64,
}

impl Ids {
    fn track(&mut self, key: String) {
        if self.in_progress.insert(key.clone()) {
            self.order.push_back(key);
        }
        while self.order.len() > MAX_TRACKED {
            if let Some(old) = self.order.pop_front() {
                self.in_progress.remove(&old);
            }
        }
    }

    fn done(&mut self, key: &str) {
        self.in_progress.remove(key);
    }
}

fn error_line(id: &Value, code: i64, message: String) -> String {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    })
    .to_string()
}

async fn inbound<R: AsyncRead + Unpin>(
    input: R,
    mut to_sdk: DuplexStream,
    replies: mpsc::UnboundedSender<String>,
    state: std::sync::Arc<std::sync::Mutex<Ids>>,
    max_line: usize,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_bounded(&mut reader, &mut line, max_line).await {
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                let _ = replies.send(error_line(
                    &Value::Null,
                    -32600,
                    format!(
                        "Invalid Request: the message is over server.max_request_bytes \
                         ({max_line} bytes) and was skipped"
                    ),
                ));
                continue;
            }
            Ok(Line::Complete) => {}
            Err(e) => {
                tracing::debug!(error = %e, "reading the client's input failed");
                break;
            }
        }
        let text = trim(&line);
        if text.is_empty() {
            continue;
        }
        let mut message: Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                let _ = replies.send(error_line(
                    &Value::Null,
                    -32700,
                    format!("Parse error: {e}"),
                ));
                continue;
            }
        };
        let forward = match message.as_object() {
            Some(m) if m.contains_key("method") => {
                let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
                if method == "notifications/cancelled"
                    && let Some(id) = m.get("params").and_then(|p| p.get("requestId"))
                {
                    lock(&state).done(&id_key(id));
                }
                // The SDK drops a "notification" that carries an id without a word; a request
                // is owed an answer.
                if method.starts_with("notifications/")
                    && let Some(id) = m.get("id")
                {
                    let _ = replies.send(error_line(
                        id,
                        -32600,
                        format!(
                            "Invalid Request: `{method}` is a notification, which carries no \
                             `id`; send it without one"
                        ),
                    ));
                    continue;
                }
                match m.get("id") {
                    Some(id) => {
                        let key = id_key(id);
                        let mut ids = lock(&state);
                        if ids.in_progress.contains(&key) {
                            ids.next += 1;
                            let private = Value::String(format!("emcp-dup-{}", ids.next));
                            ids.renamed.insert(id_key(&private), id.clone());
                            ids.track(id_key(&private));
                            if let Some(obj) = message.as_object_mut() {
                                obj.insert("id".into(), private);
                            }
                            None
                        } else {
                            ids.track(key);
                            Some(())
                        }
                    }
                    None => Some(()),
                }
            }
            _ => Some(()),
        };
        let bytes = match forward {
            Some(()) => {
                let mut b = text.to_vec();
                b.push(b'\n');
                b
            }
            None => {
                let mut b = message.to_string().into_bytes();
                b.push(b'\n');
                b
            }
        };
        if to_sdk.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = to_sdk.shutdown().await;
}

async fn outbound<W: AsyncWrite + Unpin>(
    from_sdk: DuplexStream,
    mut output: W,
    mut replies: mpsc::UnboundedReceiver<String>,
    state: std::sync::Arc<std::sync::Mutex<Ids>>,
) {
    let mut lines = BufReader::new(from_sdk).lines();
    let mut replies_open = true;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => restore(&l, &state),
                _ => break,
            },
            reply = replies.recv(), if replies_open => match reply {
                Some(r) => r,
                None => {
                    replies_open = false;
                    continue;
                }
            },
        };
        if output.write_all(line.as_bytes()).await.is_err()
            || output.write_all(b"\n").await.is_err()
            || output.flush().await.is_err()
        {
            break;
        }
    }
    // Replies queued after the SDK's last line (a parse error just before end of input).
    while let Ok(r) = replies.try_recv() {
        if output.write_all(format!("{r}\n").as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = output.flush().await;
}

/// An SDK line with its id given back: a response to a renamed request carries the
/// client's id again, and the request is no longer in progress.
fn restore(line: &str, state: &std::sync::Arc<std::sync::Mutex<Ids>>) -> String {
    // Only responses carry `result` or `error`; notifications and requests pass as they are.
    if !(line.contains("\"result\"") || line.contains("\"error\"")) {
        return line.to_owned();
    }
    let Ok(mut message) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let Some(obj) = message.as_object_mut() else {
        return line.to_owned();
    };
    if obj.contains_key("method") {
        return line.to_owned();
    }
    let Some(id) = obj.get("id").map(id_key) else {
        return line.to_owned();
    };
    let mut ids = lock(state);
    ids.done(&id);
    match ids.renamed.remove(&id) {
        Some(original) => {
            obj.insert("id".into(), original);
            message.to_string()
        }
        None => line.to_owned(),
    }
}

/// A request id as the SDK compares ids: numbers by value (`1`, `1.0` and `1e0` are one id),
/// strings as strings.
fn id_key(id: &Value) -> String {
    match id {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                format!("n:{}", f as i64)
            }
            _ => format!("n:{n}"),
        },
        Value::String(s) => format!("s:{s}"),
        other => format!("o:{other}"),
    }
}

fn lock(state: &std::sync::Arc<std::sync::Mutex<Ids>>) -> std::sync::MutexGuard<'_, Ids> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn trim(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r' | b' ' | b'\t') {
        end -= 1;
    }
    let mut start = 0;
    while start < end && matches!(line[start], b' ' | b'\t') {
        start += 1;
    }
    &line[start..end]
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line into `buf`, keeping at most `max` bytes: a longer line is read to its
/// end and dropped.
async fn read_line_bounded<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        if !too_long {
            if buf.len() + n > max + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(n);
        if found {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `input` through the guard to a stand-in for the SDK that answers requests in
    /// batches of `batch` (as a slow first call would: both are in progress at once).
    async fn exchange(input: &[u8], batch: usize) -> (Vec<Value>, Vec<Value>) {
        let (client, server_side) = tokio::io::duplex(1 << 20);
        let (server_read, server_write) = tokio::io::split(server_side);
        let ((sdk_in, mut sdk_out), task) = guard(server_read, server_write, 1024);
        let pump = tokio::spawn(task);
        let sdk = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut pending = Vec::new();
            let mut lines = BufReader::new(sdk_in).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                seen.push(v.clone());
                pending.extend(echo(v));
                if pending.len() >= batch {
                    for a in pending.drain(..) {
                        sdk_out
                            .write_all(format!("{a}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                }
            }
            drop(sdk_out);
            seen
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(input).await.unwrap();
        client_write.shutdown().await.unwrap();
        drop(client_write);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut client_read, &mut out)
            .await
            .unwrap();
        let seen = sdk.await.unwrap();
        pump.await.unwrap();
        (
            out.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            seen,
        )
    }

    fn echo(v: Value) -> Option<Value> {
        v.get("id")
            .map(|id| serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}}))
    }

    #[tokio::test]
    async fn every_line_gets_an_answer() {
        let deep = format!("{}{}\n", "[".repeat(300), "]".repeat(300));
        let long = format!("{{\"x\": \"{}\"}}\n", "a".repeat(5000));
        let input =
            format!("not json\n{deep}{long}{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}}\n");
        let (out, _) = exchange(input.as_bytes(), 1).await;
        let codes: Vec<i64> = out
            .iter()
            .filter_map(|v| v.pointer("/error/code").and_then(Value::as_i64))
            .collect();
        assert_eq!(codes, [-32700, -32700, -32600], "{out:?}");
        assert!(
            out.iter()
                .any(|v| v["id"] == 7 && v.get("result").is_some())
        );
    }

    #[tokio::test]
    async fn ids_compare_by_value_and_notifications_with_ids_are_answered() {
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"b\"}\n{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"notifications/zzz\"}\n";
        let (out, seen) = exchange(input, 2).await;
        assert_eq!(
            seen.len(),
            2,
            "the notification with an id never reaches the SDK"
        );
        assert_ne!(seen[1]["id"], 1.0, "1.0 is the same id as 1: renamed");
        assert_eq!(
            out.iter().filter(|v| v.get("result").is_some()).count(),
            2,
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|v| v["id"] == 7 && v.pointer("/error/code") == Some(&(-32600).into()))
        );
    }

    #[tokio::test]
    async fn a_reused_id_is_answered_under_its_own_id() {
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"b\"}\n";
        let (out, seen) = exchange(input, 2).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.iter().all(|v| v["id"] == 5), "{out:?}");
        assert_eq!(seen[0]["id"], 5);
        assert_ne!(
            seen[1]["id"], 5,
            "the SDK saw a private id for the duplicate"
        );
        // Once answered, the id is free again: no renaming.
        let input = b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"a\"}\n";
        let (_, seen) = exchange(input, 1).await;
        assert_eq!(seen[0]["id"], 5);
    }
}
