//! End-to-end tests of the `yinyom` command line: the real binary, a
//! temporary data directory, and plain HTTP/1.1 over `std::net` to check
//! what a restarted server sees.
//!
//! Every server a test starts is held by a [`Server`] guard that kills and
//! reaps it when dropped, so a failing assertion never leaves one behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(unused_macros)]
#[macro_use]
mod common;

const BIN: &str = env!("CARGO_BIN_EXE_yinyom");

/// The owner key the setup servers are bootstrapped with.
const OWNER_KEY: &str = "yy_0123456789abcdef0123456789abcdef0123456789abcdef";

/// Longest any single CLI command may take before the test gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// The master key of the PostgreSQL tests' nodes (32 bytes in hex).
const TEST_MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A `yinyom --data-dir <dir>` command, isolated from the caller's
/// environment.
fn yinyom(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(data_dir);
    for var in [
        "YINYOM_DATA_DIR",
        "YINYOM_DATABASE_URL",
        "YINYOM_LISTEN",
        "YINYOM_BOOTSTRAP_API_KEY",
        "YINYOM_LOG",
        "YINYOM_NATS_URL",
        "YINYOM_WEBHOOK_TIMEOUT",
        "YINYOM_WEBHOOK_RETRY_HOURS",
        "YINYOM_WEBHOOK_RETRY_BASE_MS",
        "YINYOM_MASTER_KEY",
        "YINYOM_MASTER_KEY_FILE",
        "YINYOM_PUBLIC_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1");
    cmd.stdin(Stdio::null());
    cmd
}

/// What a finished command left behind.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.describe());
        self
    }
}

fn read_all(file: &mut File) -> String {
    file.rewind().expect("rewind the output file");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read the output file");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Run `yinyom --data-dir <data_dir> <args>` to completion (with a timeout;
/// output goes to anonymous files so no pipe can fill up).
fn run(data_dir: &Path, args: &[&str]) -> Run {
    let mut out = tempfile::tempfile().expect("a temporary file");
    let mut err = tempfile::tempfile().expect("a temporary file");
    let mut child = yinyom(data_dir)
        .args(args)
        .stdout(out.try_clone().expect("clone the file"))
        .stderr(err.try_clone().expect("clone the file"))
        .spawn()
        .expect("start yinyom");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for yinyom") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`yinyom {}` did not finish within {COMMAND_TIMEOUT:?}\n--- stderr ---\n{}",
                args.join(" "),
                read_all(&mut err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

// ---------------------------------------------------------------------------
// A server under test
// ---------------------------------------------------------------------------

/// A running `yinyom serve`; killed and reaped when dropped. Its output
/// goes to files of its own (read through separate handles, so reading
/// never moves the server's write position).
struct Server {
    child: Child,
    addr: String,
    logs: tempfile::TempDir,
}

impl Server {
    /// Start `yinyom serve` on a free loopback port and wait until it
    /// answers `/readyz`.
    fn start(data_dir: &Path, bootstrap_key: Option<&str>) -> Server {
        Server::start_with(data_dir, bootstrap_key, &[])
    }

    /// Start with extra environment variables (`YINYOM_DATABASE_URL`, …).
    fn start_with(data_dir: &Path, bootstrap_key: Option<&str>, env: &[(&str, &str)]) -> Server {
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let logs = tempfile::tempdir().expect("a temporary directory");
            let open = |name: &str| {
                File::options()
                    .create(true)
                    .append(true)
                    .open(logs.path().join(name))
                    .expect("create a log file")
            };
            let mut cmd = yinyom(data_dir);
            cmd.args(["serve", "--listen", &addr])
                .env("YINYOM_LOG", "info")
                .stdout(open("stdout"))
                .stderr(open("stderr"));
            if let Some(key) = bootstrap_key {
                cmd.env("YINYOM_BOOTSTRAP_API_KEY", key);
            }
            cmd.envs(env.iter().copied());
            let child = cmd.spawn().expect("start yinyom serve");
            let mut server = Server { child, addr, logs };
            match server.wait_until_ready() {
                Ok(()) => return server,
                Err(failure) => {
                    // The port may have been taken between picking and
                    // binding it: try another one. Anything else is fatal.
                    if !failure.contains("Address already in use") {
                        panic!("yinyom serve did not start: {failure}");
                    }
                    last_failure = failure;
                }
            }
        }
        panic!("yinyom serve found no free port: {last_failure}");
    }

    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for yinyom serve") {
                return Err(format!(
                    "it exited with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.stdout(),
                    self.stderr()
                ));
            }
            // The log line proves that *this* process bound the port, so
            // the health check below cannot reach some other server.
            if self.stderr().contains("yinyom is listening")
                && try_http(&self.addr, "GET", "/readyz", None, None)
                    .is_ok_and(|(status, _)| status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready within {START_TIMEOUT:?}\n--- stderr ---\n{}",
                    self.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn log(&self, name: &str) -> String {
        let bytes = std::fs::read(self.logs.path().join(name)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// What the server has printed on stdout so far.
    fn stdout(&self) -> String {
        self.log("stdout")
    }

    fn stderr(&self) -> String {
        self.log("stderr")
    }

    /// Kill the server, wait for it, and return what it printed on stdout.
    fn stop(mut self) -> String {
        self.kill();
        self.stdout()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn get(&self, path: &str, key: &str) -> (u16, Value) {
        http(&self.addr, "GET", path, Some(key), None)
    }

    fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        http(&self.addr, "POST", path, Some(key), Some(body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("the bound address").port()
}

// ---------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------

/// Send one request (`Connection: close`) and return the status and the
/// body as JSON (`Null` when empty, a string when not JSON).
fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if body.is_some() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if body.is_some() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", payload.len()));
    }
    request.push_str("\r\n");
    request.push_str(&payload);
    stream.write_all(request.as_bytes())?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut content = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        content = dechunk(&content).ok_or_else(|| bad("bad chunked body"))?;
    }
    let value = if content.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&content)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&content).into_owned()))
    };
    Ok((status, value))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    try_http(addr, method, path, key, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} failed: {e}"))
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// The purposes and notice every test tenant has.
fn create_catalog(server: &Server) {
    let purposes = [
        json!({
            "key": "marketing.email",
            "names": {"en": "Marketing messages", "th": "ข่าวสารการตลาด"},
            "basis": "consent",
            "channels": ["email", "sms"],
            "retention_days": 730
        }),
        json!({
            "key": "analytics",
            "names": {"en": "Analytics"},
            "basis": "consent",
            "retention_days": 365
        }),
    ];
    for p in &purposes {
        let (status, body) = server.post("/v1/purposes", OWNER_KEY, p);
        assert_eq!(status, 201, "creating purpose {}: {body}", p["key"]);
    }
    let notice = json!({
        "key": "marketing",
        "texts": {"en": {"title": "Stay in touch", "body": "We would like to send you offers."}},
        "purposes": ["marketing.email", "analytics"]
    });
    let (status, body) = server.post("/v1/notices", OWNER_KEY, &notice);
    assert_eq!(status, 201, "publishing the notice: {body}");
    assert_eq!(body["version"], 1, "{body}");
}

/// A bootstrapped data directory with the catalog, and no server running.
fn prepared_data_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let server = Server::start(&dir, Some(OWNER_KEY));
    create_catalog(&server);
    let stdout = server.stop();
    assert!(
        !stdout.contains(OWNER_KEY),
        "a key given in YINYOM_BOOTSTRAP_API_KEY must not be printed:\n{stdout}"
    );
    dir
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write a fixture file");
    path
}

/// Line numbers of the `line N: ...` reports on stderr, with their texts.
fn rejected_lines(stderr: &str) -> Vec<(usize, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("line ")?;
            let (n, reason) = rest.split_once(": ")?;
            Some((n.parse().ok()?, reason.to_string()))
        })
        .collect()
}

fn assert_rejected(run: &Run, expected: &[(usize, &str)]) {
    let got = rejected_lines(&run.stderr);
    let got_lines: Vec<usize> = got.iter().map(|(n, _)| *n).collect();
    let want_lines: Vec<usize> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        got_lines,
        want_lines,
        "rejected line numbers\n{}",
        run.describe()
    );
    for ((n, reason), (_, needle)) in got.iter().zip(expected) {
        assert!(
            reason.contains(needle),
            "line {n}: expected the reason to mention {needle:?}, got {reason:?}"
        );
    }
}

fn decision(server: &Server, subject: &str, purpose: &str, channel: Option<&str>) -> Value {
    let mut path = format!("/v1/decisions?subject={subject}&purpose={purpose}");
    if let Some(c) = channel {
        path.push_str(&format!("&channel={c}"));
    }
    let (status, body) = server.get(&path, OWNER_KEY);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn assert_decision(
    server: &Server,
    (subject, purpose, channel): (&str, &str, Option<&str>),
    allowed: bool,
    reason: &str,
    state: Value,
) {
    let d = decision(server, subject, purpose, channel);
    assert_eq!(
        (&d["allowed"], &d["reason"], &d["state"]),
        (&json!(allowed), &json!(reason), &state),
        "decision for {subject}/{purpose}/{channel:?}: {d}"
    );
}

/// The subject's current consents (and history when asked).
fn consents(server: &Server, subject: &str, history: bool) -> Value {
    let path = format!("/v1/subjects/{subject}/consents?history={history}");
    let (status, body) = server.get(&path, OWNER_KEY);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn consent_for<'a>(body: &'a Value, purpose: &str, channel: Option<&str>) -> &'a Value {
    body["consents"]
        .as_array()
        .expect("a consents array")
        .iter()
        .find(|c| c["purpose"] == purpose && c["channel"] == json!(channel))
        .unwrap_or_else(|| panic!("no consent for {purpose}/{channel:?} in {body}"))
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Run one SQL statement that changes exactly one row of the data
/// directory's SQLite file (no server running).
fn sql(data_dir: &Path, statement: &str) {
    use sqlx::Connection;
    let db = data_dir.join("yinyom.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the database");
        let statement = &common::on_ledger_rows(statement);
        let done = sqlx::query(statement)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        assert_eq!(done.rows_affected(), 1, "{statement} changed no row");
        conn.close().await.expect("close the database");
    });
}

/// One text column of the ledger row `seq`.
fn ledger_text(data_dir: &Path, column: &str, seq: u64) -> Option<String> {
    use sqlx::Connection;
    let db = data_dir.join("yinyom.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .expect("open the database");
        let value: Option<String> = sqlx::query_scalar(&format!(
            "SELECT CAST({column} AS TEXT) FROM ledger WHERE seq = ?"
        ))
        .bind(seq as i64)
        .fetch_one(&mut conn)
        .await
        .expect("read a ledger row");
        conn.close().await.expect("close the database");
        value
    })
}

/// The `seq` of every `BROKEN at entry <seq>` that `ledger verify` printed.
fn broken_entries(stdout: &str) -> Vec<u64> {
    stdout
        .match_indices("BROKEN at entry ")
        .filter_map(|(i, m)| {
            let rest = &stdout[i + m.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// The CRM file of the import tests: good rows interleaved with bad ones.
/// Line 12-13 is one record whose quoted evidence spans two lines.
const CRM_CSV: &str = r#"subject,purpose,channel,state,occurred_at,source,notice_key,notice_version,evidence
alice,marketing.email,email,granted,2024-01-10T09:00:00Z,crm,marketing,1,"{""ip"":""203.0.113.9"",""form"":""signup""}"
bob,marketing.email,sms,granted,2024-01-11T09:00:00Z,crm,,,
carol,no.such.purpose,email,granted,2024-01-12T09:00:00Z,crm,,,
dave,marketing.email,email,maybe,2024-01-12T09:00:00Z,crm,,,
erin,marketing.email,email,granted,,crm,,,
frank,marketing.email,fax,granted,2024-01-12T09:00:00Z,crm,,,
grace,marketing.email,email,granted,2024-01-12T09:00:00Z,crm,,,"{""ip"": 203.0.113"
heidi,marketing.email,email,granted,2999-01-01T00:00:00Z,crm,,,
ivan,marketing.email,email,granted,2024-03-01T09:00:00Z,crm,,,
ivan,marketing.email,email,withdrawn,2024-02-01T09:00:00Z,crm,,,
judy,analytics,,denied,2024-01-05T00:00:00Z,,,,"{""locale"":
""th-TH""}"
kate,marketing.email,email,yes,2024-01-12T09:00:00Z,crm,,,
alice,analytics,,granted,2024-01-06T00:00:00Z,web,marketing,1,
"#;

/// The bad records of [`CRM_CSV`] and a word each reason must contain.
const CRM_CSV_REJECTED: &[(usize, &str)] = &[
    (4, "no.such.purpose"),
    (5, "maybe"),
    (6, "occurred_at"),
    (7, "fax"),
    (8, "evidence"),
    (9, "future"),
    (14, "yes"),
];

/// Subjects all of whose rows are bad: nothing may exist for them.
const REJECTED_SUBJECTS: &[&str] = &["carol", "dave", "erin", "frank", "grace", "heidi", "kate"];

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn serve_bootstraps_a_tenant_and_prints_a_generated_owner_key_only_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");

    let server = Server::start(&dir, None);
    let (status, body) = http(&server.addr, "GET", "/v1/purposes", None, None);
    assert_eq!(status, 401, "no key: {body}");
    let (status, body) = server.get("/v1/purposes", "yy_not_a_key");
    assert_eq!(status, 401, "wrong key: {body}");
    let first = {
        let stdout = server.stdout();
        let key_line = stdout
            .lines()
            .find(|l| l.starts_with("Owner API key (shown once"))
            .unwrap_or_else(|| panic!("no owner key on stdout:\n{stdout}"));
        let key = key_line
            .rsplit_once(": ")
            .map(|(_, k)| k.trim().to_string())
            .unwrap();
        assert!(
            key.starts_with("yy_") && key.len() > 20,
            "not a yy_ key: {key_line:?}"
        );
        assert!(stdout.contains("Created tenant"), "{stdout}");
        assert_eq!(
            stdout.matches(&key).count(),
            1,
            "the key is printed once:\n{stdout}"
        );
        key
    };
    let (status, body) = server.get("/v1/purposes", &first);
    assert_eq!(status, 200, "GET /v1/purposes with the printed key: {body}");
    assert_eq!(body["purposes"], json!([]), "{body}");
    let stdout = server.stop();
    assert!(stdout.contains(&first));

    // A second start finds the tenant: no new tenant, no key printed.
    let server = Server::start(&dir, None);
    let (status, body) = server.get("/v1/purposes", &first);
    assert_eq!(status, 200, "the first key still works: {body}");
    let stdout = server.stop();
    assert!(
        !stdout.contains("yy_") && !stdout.contains("API key") && !stdout.contains("Created"),
        "a second start must print no key:\n{stdout}"
    );
    let tenants = run(&dir, &["tenants", "list"]);
    tenants.assert_code(0);
    assert_eq!(tenants.stdout.lines().count(), 1, "{}", tenants.describe());

    // With YINYOM_BOOTSTRAP_API_KEY the key is that value and is not echoed.
    let dir = tmp.path().join("scripted");
    let server = Server::start(&dir, Some(OWNER_KEY));
    let (status, body) = server.get("/v1/purposes", OWNER_KEY);
    assert_eq!(status, 200, "the bootstrap key works: {body}");
    let stdout = server.stop();
    assert!(stdout.contains("YINYOM_BOOTSTRAP_API_KEY"), "{stdout}");
    assert!(!stdout.contains(OWNER_KEY), "{stdout}");
}

#[test]
fn csv_import_reports_bad_rows_by_line_keeps_good_rows_and_never_lets_older_rows_win() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let file = write(tmp.path(), "crm.csv", CRM_CSV);

    let import = run(&dir, &["import", file.to_str().unwrap()]);
    import.assert_code(2);
    assert_rejected(&import, CRM_CSV_REJECTED);
    assert!(
        import.stderr.contains("imported 6 records, rejected 7"),
        "{}",
        import.describe()
    );

    // A second import whose rows are older (bob) and newer (alice) than
    // what is recorded: only the newer one changes the state.
    let later = write(
        tmp.path(),
        "later.csv",
        "subject,purpose,channel,state,occurred_at,source,notice_key,notice_version,evidence\n\
         bob,marketing.email,sms,withdrawn,2023-12-01T00:00:00Z,crm,,,\n\
         alice,marketing.email,email,withdrawn,2024-05-01T00:00:00Z,crm,,,\n",
    );
    let import = run(&dir, &["import", later.to_str().unwrap()]);
    import.assert_code(0);
    assert!(
        rejected_lines(&import.stderr).is_empty(),
        "{}",
        import.describe()
    );
    assert!(
        import.stderr.contains("imported 2 records, rejected 0"),
        "{}",
        import.describe()
    );

    let server = Server::start(&dir, None);
    // A newer withdrawal imported after the grant overrides it.
    assert_decision(
        &server,
        ("alice", "marketing.email", Some("email")),
        false,
        "withdrawn",
        json!("withdrawn"),
    );
    // A grant with a notice, on a purpose-wide consent.
    assert_decision(
        &server,
        ("alice", "analytics", None),
        true,
        "consent_granted",
        json!("granted"),
    );
    let d = decision(&server, "alice", "analytics", None);
    assert_eq!(
        d["notice"],
        json!({"key": "marketing", "version": 1}),
        "{d}"
    );
    // A grant without a notice is allowed on import.
    assert_decision(
        &server,
        ("bob", "marketing.email", Some("sms")),
        true,
        "consent_granted",
        json!("granted"),
    );
    // An older withdrawal listed after a newer grant does not override it.
    assert_decision(
        &server,
        ("ivan", "marketing.email", Some("email")),
        true,
        "consent_granted",
        json!("granted"),
    );
    assert_decision(
        &server,
        ("judy", "analytics", None),
        false,
        "no_consent",
        json!("denied"),
    );
    for subject in REJECTED_SUBJECTS {
        assert_decision(
            &server,
            (subject, "marketing.email", Some("email")),
            false,
            "no_consent",
            Value::Null,
        );
        let (status, body) = server.get(&format!("/v1/subjects/{subject}/consents"), OWNER_KEY);
        assert_eq!(status, 404, "{subject} had only bad rows: {body}");
    }

    let bob = consents(&server, "bob", true);
    let c = consent_for(&bob, "marketing.email", Some("sms"));
    assert_eq!(c["state"], "granted", "{bob}");
    assert_eq!(c["occurred_at"], "2024-01-11T09:00:00Z", "{bob}");
    assert_eq!(c["source"], "crm", "{bob}");
    assert_eq!(c["notice"], Value::Null, "{bob}");
    let actions: Vec<&Value> = bob["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["action"])
        .collect();
    assert_eq!(
        actions,
        [&json!("grant"), &json!("withdraw")],
        "the older row is in the ledger: {bob}"
    );

    let ivan = consents(&server, "ivan", true);
    let c = consent_for(&ivan, "marketing.email", Some("email"));
    assert_eq!(c["state"], "granted", "{ivan}");
    assert_eq!(c["occurred_at"], "2024-03-01T09:00:00Z", "{ivan}");
    assert_eq!(ivan["history"].as_array().unwrap().len(), 2, "{ivan}");

    let judy = consents(&server, "judy", true);
    let c = consent_for(&judy, "analytics", None);
    assert_eq!(c["state"], "denied", "{judy}");
    assert_eq!(
        c["source"], "import",
        "an empty source means import: {judy}"
    );
    assert!(
        judy["history"][0]["evidence_hash"].is_string(),
        "the multi-line evidence was kept: {judy}"
    );

    let alice = consents(&server, "alice", true);
    let c = consent_for(&alice, "marketing.email", Some("email"));
    assert_eq!(c["state"], "withdrawn", "{alice}");
    assert_eq!(c["occurred_at"], "2024-05-01T00:00:00Z", "{alice}");
    let grant = alice["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "grant" && e["purpose"] == "marketing.email")
        .unwrap_or_else(|| panic!("no grant in {alice}"));
    assert_eq!(grant["notice"]["key"], "marketing", "{alice}");
    assert!(grant["evidence_hash"].is_string(), "evidence kept: {alice}");
    assert_eq!(grant["actor"], "import", "{alice}");
    drop(server);

    let verify = run(&dir, &["ledger", "verify"]);
    verify.assert_code(0);
    assert!(
        verify.stdout.contains("ok, 8 entries verified"),
        "{}",
        verify.describe()
    );
}

#[test]
fn jsonl_import_reports_bad_lines_skips_blank_lines_and_keeps_good_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let lines = [
        /* 1 */
        r#"{"subject":"alice","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2024-01-10T09:00:00Z","source":"web","notice_key":"marketing","notice_version":1,"evidence":{"ip":"203.0.113.9","user_agent":"Mozilla/5.0","locale":"th-TH"}}"#,
        /* 2 */ "",
        /* 3 */
        r#"{"subject":"carol","purpose":"no.such.purpose","channel":"email","state":"granted","occurred_at":"2024-01-12T09:00:00Z"}"#,
        /* 4 */
        r#"{"subject":"dave","purpose":"marketing.email","channel":"email","state":"maybe","occurred_at":"2024-01-12T09:00:00Z"}"#,
        /* 5 */
        r#"{"subject":"erin","purpose":"marketing.email","channel":"email","state":"granted"}"#,
        /* 6 */ "   \t ",
        /* 7 */
        r#"{"subject":"frank","purpose":"marketing.email","channel":"fax","state":"granted","occurred_at":"2024-01-12T09:00:00Z"}"#,
        /* 8 */
        r#"{"subject":"grace","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2024-01-12T09:00:00Z","evidence":"ip=203.0.113.9"}"#,
        /* 9 */
        r#"{"subject":"heidi","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2999-01-01T00:00:00Z"}"#,
        /* 10 */
        r#"{"subject":"ivan","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2024-03-01T09:00:00Z","source":"crm"}"#,
        /* 11 */
        r#"{"subject":"ivan","purpose":"marketing.email","channel":"email","state":"withdrawn","occurred_at":"2024-02-01T09:00:00Z","source":"crm"}"#,
        /* 12 */ r#"{"subject":"kate","purpose":"marketing.email","#,
        /* 13 */
        r#"{"subject":"judy","purpose":"analytics","channel":null,"action":"deny","occurred_at":"2024-01-05T00:00:00Z","evidence":null}"#,
        /* 14 */ "",
        /* 15 */
        r#"{"subject":"bob","purpose":"marketing.email","channel":"sms","action":"grant","occurred_at":"2024-01-11T09:00:00Z","source":"call_center"}"#,
    ];
    // The last line has no newline at the end.
    let file = write(tmp.path(), "crm.jsonl", &lines.join("\n"));

    let import = run(&dir, &["import", file.to_str().unwrap()]);
    import.assert_code(2);
    assert_rejected(
        &import,
        &[
            (3, "no.such.purpose"),
            (4, "maybe"),
            (5, "occurred_at"),
            (7, "fax"),
            (8, "evidence"),
            (9, "future"),
            (12, "JSON"),
        ],
    );
    assert!(
        import.stderr.contains("imported 5 records, rejected 7"),
        "{}",
        import.describe()
    );

    let server = Server::start(&dir, None);
    assert_decision(
        &server,
        ("alice", "marketing.email", Some("email")),
        true,
        "consent_granted",
        json!("granted"),
    );
    assert_decision(
        &server,
        ("ivan", "marketing.email", Some("email")),
        true,
        "consent_granted",
        json!("granted"),
    );
    assert_decision(
        &server,
        ("judy", "analytics", None),
        false,
        "no_consent",
        json!("denied"),
    );
    assert_decision(
        &server,
        ("bob", "marketing.email", Some("sms")),
        true,
        "consent_granted",
        json!("granted"),
    );
    for subject in REJECTED_SUBJECTS {
        let (status, body) = server.get(&format!("/v1/subjects/{subject}/consents"), OWNER_KEY);
        assert_eq!(status, 404, "{subject} had only bad lines: {body}");
    }
    let alice = consents(&server, "alice", true);
    let entry = &alice["history"][0];
    assert_eq!(entry["source"], "web", "{alice}");
    assert_eq!(entry["notice"]["version"], 1, "{alice}");
    assert!(
        entry["evidence_hash"].is_string(),
        "the evidence object was kept: {alice}"
    );
    let judy = consents(&server, "judy", true);
    assert_eq!(judy["history"][0]["evidence_hash"], Value::Null, "{judy}");
    assert_eq!(consent_for(&judy, "analytics", None)["source"], "import");
    let bob = consents(&server, "bob", false);
    assert_eq!(
        consent_for(&bob, "marketing.email", Some("sms"))["source"],
        "call_center"
    );
}

#[test]
fn import_needs_a_format_it_can_tell() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let file = write(
        tmp.path(),
        "crm.txt",
        "subject,purpose,channel,state,occurred_at\n\
         alice,marketing.email,email,granted,2024-01-10T09:00:00Z\n",
    );
    let import = run(&dir, &["import", file.to_str().unwrap()]);
    assert_eq!(import.code, Some(1), "{}", import.describe());
    assert!(import.stderr.contains("--format"), "{}", import.describe());

    let import = run(&dir, &["import", file.to_str().unwrap(), "--format", "csv"]);
    import.assert_code(0);
    assert!(
        import.stderr.contains("imported 1 records, rejected 0"),
        "{}",
        import.describe()
    );
}

#[test]
fn export_then_import_into_a_fresh_data_dir_round_trips_and_history_lists_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let source = prepared_data_dir(tmp.path(), "source");

    // Consents from both the API and an import.
    let server = Server::start(&source, None);
    let (status, body) = server.post(
        "/v1/consents",
        OWNER_KEY,
        &json!({
            "subject": "web-1",
            "notice": {"key": "marketing", "version": 1},
            "source": "web",
            "evidence": {"ip": "203.0.113.7", "user_agent": "test", "locale": "en-GB"},
            "actions": [
                {"purpose": "marketing.email", "channel": "email", "action": "grant"},
                {"purpose": "marketing.email", "channel": "sms", "action": "deny"},
                {"purpose": "analytics", "action": "grant"}
            ]
        }),
    );
    assert_eq!(status, 201, "POST /v1/consents: {body}");
    drop(server);
    let file = write(tmp.path(), "crm.csv", CRM_CSV);
    run(&source, &["import", file.to_str().unwrap()]).assert_code(2);
    // The import leaves its rows in the database file, not in the WAL.
    let wal = std::fs::metadata(source.join("yinyom.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the import left {wal} bytes of write-ahead log");

    let csv_path = tmp.path().join("export.csv");
    let export = run(
        &source,
        &[
            "export",
            "--format",
            "csv",
            "-o",
            csv_path.to_str().unwrap(),
        ],
    );
    export.assert_code(0);
    assert!(
        export.stderr.contains("exported 8 records"),
        "{}",
        export.describe()
    );
    let csv_export = std::fs::read_to_string(&csv_path).unwrap();
    let to_stdout = run(&source, &["export"]);
    to_stdout.assert_code(0);
    assert_eq!(
        to_stdout.stdout, csv_export,
        "csv is the default, stdout the default output"
    );
    let header = csv_export.lines().next().unwrap();
    for column in [
        "subject",
        "purpose",
        "channel",
        "state",
        "occurred_at",
        "source",
        "notice_key",
        "notice_version",
    ] {
        assert!(
            header.split(',').any(|h| h == column),
            "no {column} in {header}"
        );
    }
    let jsonl = run(&source, &["export", "--format", "jsonl"]);
    jsonl.assert_code(0);
    let jsonl_export = jsonl.stdout;
    let rows: Vec<Value> = jsonl_export
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(rows.len(), 8, "{jsonl_export}");
    let subjects: Vec<&str> = rows
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    let mut sorted = subjects.clone();
    sorted.sort();
    assert_eq!(subjects, sorted, "rows are ordered by subject");
    let ivan = rows.iter().find(|r| r["subject"] == "ivan").unwrap();
    assert_eq!(
        (&ivan["state"], &ivan["occurred_at"]),
        (&json!("granted"), &json!("2024-03-01T09:00:00Z"))
    );
    let web = rows
        .iter()
        .find(|r| r["subject"] == "web-1" && r["channel"] == "sms")
        .unwrap();
    assert_eq!(
        (&web["state"], &web["source"], &web["notice_version"]),
        (&json!("denied"), &json!("web"), &json!(1)),
        "{web}"
    );

    // CSV into a fresh data dir with the same catalog.
    let copy = prepared_data_dir(tmp.path(), "from-csv");
    let import = run(&copy, &["import", csv_path.to_str().unwrap()]);
    import.assert_code(0);
    assert!(
        import.stderr.contains("imported 8 records, rejected 0"),
        "{}",
        import.describe()
    );
    let again = run(&copy, &["export", "--format", "csv"]);
    again.assert_code(0);
    assert_eq!(
        again.stdout, csv_export,
        "CSV export after a CSV round trip"
    );
    let again = run(&copy, &["export", "--format", "jsonl"]);
    again.assert_code(0);
    assert_eq!(
        again.stdout, jsonl_export,
        "JSONL export after a CSV round trip"
    );

    // JSON Lines into another fresh data dir.
    let copy = prepared_data_dir(tmp.path(), "from-jsonl");
    let jsonl_path = write(tmp.path(), "export.jsonl", &jsonl_export);
    let import = run(&copy, &["import", jsonl_path.to_str().unwrap()]);
    import.assert_code(0);
    assert!(
        import.stderr.contains("imported 8 records, rejected 0"),
        "{}",
        import.describe()
    );
    let again = run(&copy, &["export", "--format", "jsonl"]);
    again.assert_code(0);
    assert_eq!(
        again.stdout, jsonl_export,
        "JSONL export after a JSONL round trip"
    );
    let again = run(&copy, &["export"]);
    again.assert_code(0);
    assert_eq!(
        again.stdout, csv_export,
        "CSV export after a JSONL round trip"
    );

    // The ledger: 3 API entries and 6 imported ones, chained.
    let history = run(&source, &["export", "--history"]);
    history.assert_code(0);
    let mut reader = csv::Reader::from_reader(history.stdout.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {headers:?}"))
    };
    let (seq, hash, prev_hash, subject, action, partition, pseq) = (
        col("seq"),
        col("hash"),
        col("prev_hash"),
        col("subject"),
        col("action"),
        col("partition"),
        col("pseq"),
    );
    let entries: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(entries.len(), 9, "{}", history.stdout);
    // Each entry links to the one before it in its partition.
    let mut previous: std::collections::HashMap<String, (u64, String)> = Default::default();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e[seq], (i + 1).to_string(), "seq of entry {i}");
        let (position, before) = previous
            .get(&e[partition])
            .cloned()
            .unwrap_or((0, "0".repeat(64)));
        assert_eq!(
            e[pseq],
            (position + 1).to_string(),
            "position of entry {}",
            i + 1
        );
        assert_eq!(e[prev_hash], before, "prev_hash of entry {}", i + 1);
        assert!(
            is_hex_digest(&e[hash]),
            "hash of entry {}: {:?}",
            i + 1,
            &e[hash]
        );
        previous.insert(
            e[partition].to_string(),
            (position + 1, e[hash].to_string()),
        );
    }
    assert_eq!(
        (&entries[0][subject], &entries[0][action]),
        ("web-1", "grant")
    );
    let ivan: Vec<&str> = entries
        .iter()
        .filter(|e| &e[subject] == "ivan")
        .map(|e| &e[action])
        .collect();
    assert_eq!(ivan, ["grant", "withdraw"], "older rows stay in the ledger");

    let history_jsonl = run(&source, &["export", "--history", "--format", "jsonl"]);
    history_jsonl.assert_code(0);
    let from_jsonl: Vec<Value> = history_jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(from_jsonl.len(), entries.len());
    for (j, e) in from_jsonl.iter().zip(&entries) {
        assert_eq!(j["seq"].to_string(), e[seq].to_string());
        assert_eq!(j["hash"], e[hash]);
        assert_eq!(j["prev_hash"], e[prev_hash]);
    }
}

#[test]
fn ledger_verify_passes_then_names_exactly_the_altered_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let empty = run(&dir, &["ledger", "verify"]);
    empty.assert_code(0);
    assert!(
        empty.stdout.contains("ok, 0 entries verified"),
        "{}",
        empty.describe()
    );

    let file = write(
        tmp.path(),
        "crm.jsonl",
        concat!(
            r#"{"subject":"a","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2024-01-01T00:00:00Z","evidence":{"ip":"203.0.113.1"}}"#,
            "\n",
            r#"{"subject":"b","purpose":"marketing.email","channel":"sms","state":"denied","occurred_at":"2024-01-02T00:00:00Z"}"#,
            "\n",
            r#"{"subject":"c","purpose":"analytics","state":"granted","occurred_at":"2024-01-03T00:00:00Z","notice_key":"marketing","notice_version":1}"#,
            "\n",
            r#"{"subject":"a","purpose":"analytics","state":"withdrawn","occurred_at":"2024-01-04T00:00:00Z"}"#,
            "\n",
            r#"{"subject":"d","purpose":"marketing.email","channel":"email","state":"granted","occurred_at":"2024-01-05T00:00:00Z"}"#,
            "\n",
        ),
    );
    run(&dir, &["import", file.to_str().unwrap()]).assert_code(0);

    let verify = run(&dir, &["ledger", "verify"]);
    verify.assert_code(0);
    assert!(
        verify.stdout.contains(": ok, 5 entries verified"),
        "{}",
        verify.describe()
    );
    assert!(broken_entries(&verify.stdout).is_empty());

    // Each alteration is detected at its own row, then undone.
    let original_action = ledger_text(&dir, "action", 3).unwrap();
    let original_time = ledger_text(&dir, "occurred_at", 2).unwrap();
    // Evidence is stored once per value (`evidence`), hashes as bytes.
    let evidence_of_1 = "(SELECT evidence_hash FROM ledger WHERE seq = 1)";
    let original_evidence = ledger_text(
        &dir,
        &format!("(SELECT body FROM evidence WHERE hash = {evidence_of_1})"),
        1,
    )
    .unwrap();
    let original_hash = ledger_text(&dir, "lower(hex(hash))", 4).unwrap();
    let alterations = [
        (
            3,
            "UPDATE ledger SET action = 'deny' WHERE seq = 3".to_string(),
            format!("UPDATE ledger SET action = '{original_action}' WHERE seq = 3"),
        ),
        (
            2,
            "UPDATE ledger SET occurred_at = occurred_at - 86400000000 WHERE seq = 2".to_string(),
            format!("UPDATE ledger SET occurred_at = {original_time} WHERE seq = 2"),
        ),
        (
            1,
            format!(
                r#"UPDATE evidence SET body = '{{"ip":"198.51.100.66"}}' WHERE hash = {evidence_of_1}"#
            ),
            format!(
                "UPDATE evidence SET body = '{}' WHERE hash = {evidence_of_1}",
                original_evidence.replace('\'', "''")
            ),
        ),
        (
            4,
            format!(
                "UPDATE ledger SET hash = X'{}' WHERE seq = 4",
                "f".repeat(64)
            ),
            format!("UPDATE ledger SET hash = X'{original_hash}' WHERE seq = 4"),
        ),
    ];
    for (seq, alter, undo) in alterations {
        sql(&dir, &alter);
        let verify = run(&dir, &["ledger", "verify"]);
        assert_eq!(
            verify.code,
            Some(1),
            "after `{alter}`:\n{}",
            verify.describe()
        );
        assert_eq!(
            broken_entries(&verify.stdout),
            [seq],
            "after `{alter}`:\n{}",
            verify.describe()
        );
        sql(&dir, &undo);
        let verify = run(&dir, &["ledger", "verify"]);
        verify.assert_code(0);
        assert!(
            verify.stdout.contains("ok, 5 entries verified"),
            "after undoing `{alter}`:\n{}",
            verify.describe()
        );
    }

    // A deleted last entry is caught by the CLI (against the recorded
    // head) and over HTTP alike.
    sql(&dir, "DELETE FROM ledger WHERE seq = 5");
    let verify = run(&dir, &["ledger", "verify"]);
    assert_eq!(verify.code, Some(1), "{}", verify.describe());
    assert_eq!(broken_entries(&verify.stdout), [5], "{}", verify.describe());
    let server = Server::start(&dir, None);
    let (status, body) = server.get("/v1/ledger/verify", OWNER_KEY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], false, "{body}");
}

#[test]
fn keys_create_prints_a_key_that_authenticates_with_its_role() {
    let tmp = tempfile::tempdir().unwrap();

    let nothing = run(
        &tmp.path().join("empty"),
        &["keys", "create", "--role", "service"],
    );
    assert_eq!(nothing.code, Some(1), "{}", nothing.describe());
    assert!(
        nothing.stderr.contains("no tenant"),
        "{}",
        nothing.describe()
    );

    let dir = prepared_data_dir(tmp.path(), "data");
    let created = run(
        &dir,
        &["keys", "create", "--role", "service", "--label", "crm-sync"],
    );
    created.assert_code(0);
    let service_key = created.stdout.trim().to_string();
    assert!(
        service_key.starts_with("yy_")
            && service_key.len() > 20
            && !service_key.contains(char::is_whitespace),
        "{}",
        created.describe()
    );

    let server = Server::start(&dir, None);
    let purpose = json!({
        "key": "profiling",
        "names": {"en": "Profiling"},
        "basis": "consent",
        "retention_days": 30
    });
    let (status, body) = server.post("/v1/purposes", &service_key, &purpose);
    assert_eq!(status, 403, "a service key may not create purposes: {body}");
    let (status, body) = server.get(
        "/v1/decisions?subject=alice&purpose=marketing.email&channel=email",
        &service_key,
    );
    assert_eq!(status, 200, "a service key may ask for decisions: {body}");
    assert_eq!(
        (&body["allowed"], &body["reason"]),
        (&json!(false), &json!("no_consent"))
    );

    // A key created while the server runs works at once.
    let created = run(&dir, &["keys", "create", "--role", "admin"]);
    created.assert_code(0);
    let admin_key = created.stdout.trim().to_string();
    assert!(admin_key.starts_with("yy_"), "{}", created.describe());
    assert_ne!(admin_key, service_key);
    let (status, body) = server.post("/v1/purposes", &admin_key, &purpose);
    assert_eq!(status, 201, "an admin key may create purposes: {body}");
}

#[test]
fn import_refuses_while_a_server_runs_on_the_same_data_dir_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let file = write(
        tmp.path(),
        "crm.csv",
        "subject,purpose,channel,state,occurred_at\n\
         alice,marketing.email,email,granted,2024-01-10T09:00:00Z\n",
    );

    let server = Server::start(&dir, None);
    let import = run(&dir, &["import", file.to_str().unwrap()]);
    assert_ne!(import.code, Some(0), "{}", import.describe());
    assert!(
        import.stderr.contains("in use by a running yinyom server"),
        "{}",
        import.describe()
    );
    assert!(!import.stderr.contains("imported"), "{}", import.describe());
    let (status, body) = server.get("/v1/subjects/alice/consents", OWNER_KEY);
    assert_eq!(status, 404, "nothing was imported: {body}");
    let (status, body) = server.get("/v1/ledger/verify", OWNER_KEY);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checked"], 0, "{body}");
    server.stop();

    let export = run(&dir, &["export", "--history"]);
    export.assert_code(0);
    assert_eq!(export.stdout, "", "{}", export.describe());
    assert!(export.stderr.contains("exported 0 records"));

    // With the server gone the same import goes through.
    let import = run(&dir, &["import", file.to_str().unwrap()]);
    import.assert_code(0);
    assert!(
        import.stderr.contains("imported 1 records"),
        "{}",
        import.describe()
    );
}

#[test]
fn csv_import_names_the_right_lines_of_a_crlf_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = prepared_data_dir(tmp.path(), "data");
    let crlf = CRM_CSV.replace('\n', "\r\n");
    let file = write(tmp.path(), "crm.csv", &crlf);
    let import = run(&dir, &["import", file.to_str().unwrap()]);
    import.assert_code(2);
    assert_rejected(&import, CRM_CSV_REJECTED);
}

#[test]
fn csv_export_handles_rows_with_and_without_an_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, Some(OWNER_KEY));
    create_catalog(&server);
    let (status, body) = server.post(
        "/v1/purposes",
        OWNER_KEY,
        &json!({
            "key": "newsletter",
            "names": {"en": "Newsletter"},
            "basis": "consent",
            "channels": ["email"],
            "retention_days": 365,
            "validity_days": 30
        }),
    );
    assert_eq!(status, 201, "{body}");
    server.stop();
    let file = write(
        tmp.path(),
        "crm.csv",
        "subject,purpose,channel,state,occurred_at\n\
         a,marketing.email,email,granted,2024-01-01T00:00:00Z\n\
         b,newsletter,email,granted,2024-01-01T00:00:00Z\n",
    );
    run(&dir, &["import", file.to_str().unwrap()]).assert_code(0);

    let export = run(&dir, &["export", "--format", "csv"]);
    export.assert_code(0);
    let mut reader = csv::Reader::from_reader(export.stdout.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{}", export.describe());
    let expires = headers
        .iter()
        .position(|h| h == "expires_at")
        .expect("an expires_at column");
    assert_eq!(&rows[0][expires], "");
    assert_eq!(&rows[1][expires], "2024-01-31T00:00:00Z");

    // And the export imports back.
    let copy = tmp.path().join("copy");
    let server = Server::start(&copy, Some(OWNER_KEY));
    create_catalog(&server);
    server.post(
        "/v1/purposes",
        OWNER_KEY,
        &json!({"key": "newsletter", "names": {"en": "Newsletter"}, "basis": "consent",
                "channels": ["email"], "retention_days": 365, "validity_days": 30}),
    );
    server.stop();
    let path = write(tmp.path(), "export.csv", &export.stdout);
    run(&copy, &["import", path.to_str().unwrap()]).assert_code(0);
    assert_eq!(run(&copy, &["export"]).stdout, export.stdout);
}

/// Poll `done` until it holds; how long that took, or `None` after `within`.
fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn two_nodes_on_one_postgres_see_each_others_writes_within_milliseconds() {
    use yinyom::store::scratch::{self, Scratch};
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let schema = rt
        .block_on(Scratch::create(&scratch::postgres_url()))
        .expect("PostgreSQL for tests (YINYOM_TEST_POSTGRES_URL)");
    let url = schema.url();
    // Every node holds the same master key.
    let env = [
        ("YINYOM_DATABASE_URL", url.as_str()),
        ("YINYOM_MASTER_KEY", TEST_MASTER_KEY),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let a = Server::start_with(&tmp.path().join("a"), Some(OWNER_KEY), &env);
    let b = Server::start_with(&tmp.path().join("b"), None, &env);
    assert!(
        !b.stdout().contains("yy_"),
        "the second node must not bootstrap another tenant: {}",
        b.stdout()
    );
    create_catalog(&a);
    let purpose_on_b = wait_for(Duration::from_secs(2), || {
        b.get("/v1/purposes/marketing.email", OWNER_KEY).0 == 200
    });
    assert!(purpose_on_b.is_some(), "a purpose created on A reaches B");

    let consent = |subject: &str, action: &str| {
        json!({
            "subject": subject,
            "notice": {"key": "marketing", "version": 1},
            "source": "web",
            "actions": [{"purpose": "marketing.email", "channel": "email", "action": action}]
        })
    };
    let reason_on = |server: &Server, subject: &str| {
        decision(server, subject, "marketing.email", Some("email"))["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // A grant on A, then a withdrawal on A: B follows each within 50 ms.
    for (action, reason) in [("grant", "consent_granted"), ("withdraw", "withdrawn")] {
        let (status, body) = a.post("/v1/consents", OWNER_KEY, &consent("cust-1", action));
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            reason_on(&a, "cust-1"),
            reason,
            "A answers from its own write"
        );
        let lag = wait_for(Duration::from_secs(2), || reason_on(&b, "cust-1") == reason);
        let lag = lag.unwrap_or_else(|| {
            panic!(
                "B never saw the {action}: {}\n--- B's log ---\n{}",
                decision(&b, "cust-1", "marketing.email", Some("email")),
                b.stderr()
            )
        });
        assert!(
            lag < Duration::from_millis(50),
            "B saw the {action} after {lag:?}"
        );
    }
    // And the other way round.
    let (status, body) = b.post("/v1/consents", OWNER_KEY, &consent("cust-2", "grant"));
    assert_eq!(status, 201, "{body}");
    assert!(
        wait_for(Duration::from_secs(2), || reason_on(&a, "cust-2")
            == "consent_granted")
        .is_some(),
        "A sees B's write"
    );

    // Both nodes write at once: one chain, no gaps, nothing lost.
    let per_node = 60;
    std::thread::scope(|scope| {
        for (node, server) in [("a", &a), ("b", &b)] {
            let consent = &consent;
            scope.spawn(move || {
                for i in 0..per_node {
                    let (status, body) = server.post(
                        "/v1/consents",
                        OWNER_KEY,
                        &consent(&format!("{node}-{i}"), "grant"),
                    );
                    assert_eq!(status, 201, "{body}");
                }
            });
        }
    });
    for server in [&a, &b] {
        let (status, v) = server.get("/v1/ledger/verify", OWNER_KEY);
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["checked"], 3 + 2 * per_node, "{v}");
    }
    for server in [&a, &b] {
        for node in ["a", "b"] {
            let subject = format!("{node}-{}", per_node - 1);
            assert!(
                wait_for(Duration::from_secs(2), || reason_on(server, &subject)
                    == "consent_granted")
                .is_some(),
                "{subject} on {}",
                server.addr
            );
        }
    }

    // A key revoked on A stops working on B at once.
    let (status, created) = a.post(
        "/v1/keys",
        OWNER_KEY,
        &json!({"role": "service", "label": "crm"}),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(
        b.get("/v1/purposes", &key).0,
        200,
        "a key made on A works on B"
    );
    let path = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    let (status, _) = http(&a.addr, "DELETE", &path, Some(OWNER_KEY), None);
    assert_eq!(status, 204);
    assert!(
        wait_for(Duration::from_millis(500), || b.get("/v1/purposes", &key).0
            == 401)
        .is_some(),
        "a key revoked on A is refused by B"
    );
    drop((a, b));
    drop(schema);
}

// ---------------------------------------------------------------------------
// Drills: kill -9 and outages, against the real binary
// ---------------------------------------------------------------------------

/// Grants posted by `writers` threads for fresh subjects until the server
/// stops answering; returns the subjects whose grant was acknowledged.
fn write_until_killed(server: &Server, writers: usize, kill_after: Duration) -> Vec<String> {
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let addr = server.addr.clone();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let (acknowledged, stop, addr) = (&acknowledged, &stop, &addr);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let subject = format!("w{w}-{}-{i}", std::process::id());
                    i += 1;
                    let body = json!({
                        "subject": subject,
                        "notice": {"key": "marketing", "version": 1},
                        "source": "drill",
                        "actions": [{"purpose": "marketing.email", "channel": "email", "action": "grant"}]
                    });
                    match try_http(addr, "POST", "/v1/consents", Some(OWNER_KEY), Some(&body)) {
                        Ok((201, _)) => acknowledged.lock().unwrap().push(subject),
                        Ok((status, body)) => panic!("unexpected {status}: {body}"),
                        // The server is gone: what was not acknowledged may be lost.
                        Err(_) => return,
                    }
                }
            });
        }
        std::thread::sleep(kill_after);
        // SIGKILL: no shutdown hook runs.
        let mut server_pid = std::process::Command::new("kill");
        server_pid.args(["-9", &server.child.id().to_string()]);
        assert!(server_pid.status().expect("kill -9").success());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    acknowledged.into_inner().unwrap()
}

/// Kill -9 the server during sustained writes, several times: every write
/// it acknowledged is there after the restart, and the ledger verifies.
fn kill_9_drill(env: &[(&str, &str)], data_dir: &Path, cycles: usize) {
    let mut all = Vec::new();
    for cycle in 0..cycles {
        let bootstrap = (cycle == 0).then_some(OWNER_KEY);
        let mut server = Server::start_with(data_dir, bootstrap, env);
        if cycle == 0 {
            create_catalog(&server);
        }
        let acked = write_until_killed(&server, 4, Duration::from_millis(300 + 150 * cycle as u64));
        server.kill();
        assert!(
            !acked.is_empty(),
            "cycle {cycle}: no write was acknowledged"
        );
        all.extend(acked);
        let server = Server::start_with(data_dir, None, env);
        for subject in &all {
            let d = decision(&server, subject, "marketing.email", Some("email"));
            assert_eq!(
                d["reason"], "consent_granted",
                "cycle {cycle}: {subject} lost: {d}"
            );
        }
        let (status, v) = server.get("/v1/ledger/verify", OWNER_KEY);
        assert_eq!(
            (status, &v["ok"]),
            (200, &json!(true)),
            "cycle {cycle}: {v}"
        );
        assert!(v["checked"].as_u64().unwrap() >= all.len() as u64, "{v}");
    }
}

#[test]
fn drill_kill_9_under_write_load_loses_no_acknowledged_write_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    kill_9_drill(&[], &tmp.path().join("data"), 3);
}

#[test]
fn drill_kill_9_under_write_load_loses_no_acknowledged_write_on_postgres() {
    use yinyom::store::scratch::{self, Scratch};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = rt
        .block_on(Scratch::create(&scratch::postgres_url()))
        .expect("PostgreSQL for tests");
    let url = schema.url();
    let tmp = tempfile::tempdir().unwrap();
    kill_9_drill(
        &[
            ("YINYOM_DATABASE_URL", &url),
            ("YINYOM_MASTER_KEY", TEST_MASTER_KEY),
        ],
        &tmp.path().join("data"),
        2,
    );
}

/// The webhook receiver is down while changes are made, and the server is
/// killed and restarted meanwhile: once the receiver is back every change
/// arrives, each subject's in order, none lost.
#[test]
fn drill_webhook_receiver_down_and_server_killed_meanwhile() {
    use common::{Mode, Receiver};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(Receiver::start());
    receiver.set(Mode::Fail);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let env = [("YINYOM_WEBHOOK_RETRY_BASE_MS", "50")];
    let mut server = Server::start_with(&data, Some(OWNER_KEY), &env);
    create_catalog(&server);
    let (status, hook) = server.post("/v1/webhooks", OWNER_KEY, &json!({ "url": receiver.url }));
    assert_eq!(status, 201, "{hook}");
    let (subjects, rounds) = (5, 4);
    for round in 0..rounds {
        for s in 0..subjects {
            let action = if round % 2 == 0 { "grant" } else { "withdraw" };
            let (status, body) = server.post(
                "/v1/consents",
                OWNER_KEY,
                &json!({
                    "subject": format!("s{s}"),
                    "notice": {"key": "marketing", "version": 1},
                    "source": "drill",
                    "actions": [{"purpose": "marketing.email", "channel": "email", "action": action}]
                }),
            );
            assert_eq!(status, 201, "{body}");
        }
        if round == 1 {
            server.kill();
            server = Server::start_with(&data, None, &env);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    server.kill();
    let server = Server::start_with(&data, None, &env);
    receiver.set(Mode::Accept);
    let total = subjects * rounds;
    let arrived = wait_for(Duration::from_secs(30), || {
        let mut seqs: Vec<u64> = receiver
            .received()
            .iter()
            .map(|(_, b)| {
                serde_json::from_slice::<Value>(b).unwrap()["ledger"]["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        seqs.sort();
        seqs.dedup();
        seqs.len() == total
    });
    assert!(
        arrived.is_some(),
        "only {} deliveries arrived",
        receiver.received().len()
    );
    // Per subject, first arrivals are in ledger order.
    let mut first_seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut seen = std::collections::HashSet::new();
    for (_, body) in receiver.received() {
        let e: Value = serde_json::from_slice(&body).unwrap();
        let seq = e["ledger"]["seq"].as_u64().unwrap();
        if seen.insert(seq) {
            first_seen
                .entry(e["subject"].as_str().unwrap().to_string())
                .or_default()
                .push(seq);
        }
    }
    assert_eq!(first_seen.len(), subjects);
    for (subject, seqs) in &first_seen {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{subject}: {seqs:?}");
        assert_eq!(seqs.len(), rounds, "{subject}: {seqs:?}");
    }
    drop(server);
}

/// An open event stream does not keep `serve` from stopping on SIGTERM.
#[test]
fn sigterm_stops_the_server_even_with_an_event_stream_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(&tmp.path().join("data"), Some(OWNER_KEY));
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    write!(
        stream,
        "GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OWNER_KEY}\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).expect("response head");
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let term = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let stopped = wait_for(Duration::from_secs(10), || {
        matches!(server.child.try_wait(), Ok(Some(_)))
    });
    assert!(stopped.is_some(), "serve did not stop with a stream open");
}

/// The auditor's procedure of docs/verify-receipt.md, on the real binary:
/// a receipt and its proof saved from the server check offline with only
/// the published key set; a tampered proof does not.
#[test]
fn a_receipt_and_its_proof_verify_offline_with_only_the_published_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), Some(OWNER_KEY));
    create_catalog(&server);
    let (status, granted) = server.post(
        "/v1/consents",
        OWNER_KEY,
        &json!({"subject": "somchai", "source": "web",
                "notice": {"key": "marketing", "version": 1},
                "actions": [{"purpose": "marketing.email", "action": "grant"},
                            {"purpose": "analytics", "action": "grant"}]}),
    );
    assert_eq!(status, 201, "{granted}");
    let id = granted["receipt"]["id"].as_str().unwrap();
    let (status, proof) = server.get(&format!("/v1/receipts/{id}/proof"), OWNER_KEY);
    assert_eq!(status, 200, "{proof}");
    let (status, jwks) = server.get("/.well-known/jwks.json", OWNER_KEY);
    assert_eq!(status, 200);
    drop(server);

    let receipt = write(
        tmp.path(),
        "receipt.jws",
        granted["receipt"]["jws"].as_str().unwrap(),
    );
    let proof_file = write(tmp.path(), "proof.json", &proof.to_string());
    let jwks_file = write(tmp.path(), "jwks.json", &jwks.to_string());
    let offline = tmp.path().join("no-data-here");
    let ok = run(
        &offline,
        &[
            "ledger",
            "verify-receipt",
            receipt.to_str().unwrap(),
            proof_file.to_str().unwrap(),
            "--jwks",
            jwks_file.to_str().unwrap(),
        ],
    );
    ok.assert_code(0);
    assert!(ok.stdout.contains("signature ok"), "{}", ok.describe());
    assert!(
        ok.stdout.contains("included in signed checkpoint 1"),
        "{}",
        ok.describe()
    );

    let mut forged = proof.clone();
    forged["entries"][0]["entry"]["body"]["action"] = json!("deny");
    let forged_file = write(tmp.path(), "forged.json", &forged.to_string());
    let bad = run(
        &offline,
        &[
            "ledger",
            "verify-receipt",
            receipt.to_str().unwrap(),
            forged_file.to_str().unwrap(),
            "--jwks",
            jwks_file.to_str().unwrap(),
        ],
    );
    bad.assert_code(1);
    assert!(
        bad.stdout
            .contains("NOT VERIFIED: entry 1: its content does not match its hash"),
        "{}",
        bad.describe()
    );
}
