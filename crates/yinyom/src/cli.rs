//! The `yinyom` command line.

use std::fs::File;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{self, App};
use crate::model::Role;
use crate::store::SqlStore;
use crate::store::Store;
use crate::vault::MasterKey;

#[derive(Parser)]
#[command(
    name = "yinyom",
    version,
    about = "Consent management for PDPA and GDPR"
)]
pub struct Cli {
    /// Directory for the embedded SQLite database.
    #[arg(
        long,
        global = true,
        env = "YINYOM_DATA_DIR",
        default_value = "./yinyom-data"
    )]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB` (several nodes
    /// may share one PostgreSQL); defaults to SQLite in the data directory.
    #[arg(long, global = true, env = "YINYOM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// File holding the master key that encrypts personal data (32 bytes as
    /// hex or base64). Defaults to `master.key` in the data directory
    /// (created on first start) with SQLite; required with PostgreSQL unless
    /// YINYOM_MASTER_KEY holds the key itself.
    #[arg(long, global = true, env = "YINYOM_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "YINYOM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Value of the owner API key created on first start.
        #[arg(long, env = "YINYOM_BOOTSTRAP_API_KEY", hide_env_values = true)]
        bootstrap_api_key: Option<String>,
        /// Publish consent events to NATS JetStream at this URL
        /// (`nats://127.0.0.1:4222`), on `yinyom.<tenant>.consent.<purpose>`.
        #[arg(long, env = "YINYOM_NATS_URL")]
        nats_url: Option<String>,
        /// Seconds a webhook endpoint may take to answer.
        #[arg(long, env = "YINYOM_WEBHOOK_TIMEOUT", default_value_t = 10)]
        webhook_timeout: u64,
        /// Hours to keep retrying a failing webhook delivery before it is dead.
        #[arg(long, env = "YINYOM_WEBHOOK_RETRY_HOURS", default_value_t = 25)]
        webhook_retry_hours: u64,
        /// Milliseconds before the first webhook retry (doubled per failure,
        /// at most an hour, ±20 % jitter).
        #[arg(long, env = "YINYOM_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
        webhook_retry_base_ms: u64,
        /// The URL recipients reach this server at (unsubscribe links in
        /// emails); defaults to http://<listen address>.
        #[arg(long, env = "YINYOM_PUBLIC_URL")]
        public_url: Option<String>,
        /// Addresses of reverse proxies in front of this server (comma
        /// separated): their `X-Forwarded-For` names the client, for rate
        /// limits per client.
        #[arg(long, env = "YINYOM_TRUSTED_PROXIES", value_delimiter = ',')]
        trusted_proxies: Vec<std::net::IpAddr>,
        /// Failed authentications allowed per client address and minute.
        #[arg(long, env = "YINYOM_AUTH_FAILURES_PER_MINUTE", default_value_t = 20)]
        auth_failures_per_minute: u32,
        /// Calls of the public endpoints (banner, links, console login)
        /// allowed per client address and minute.
        #[arg(long, env = "YINYOM_PUBLIC_PER_MINUTE", default_value_t = 300)]
        public_per_minute: u32,
        /// Bounded mode: the most memory the decision view may hold for
        /// subjects' consent records (e.g. `512MiB`, `4GiB`); subjects used
        /// lately stay, others are read from the store when asked for.
        /// Default: every subject is held (about 45 bytes per record).
        #[arg(long, env = "YINYOM_VIEW_MEMORY", value_parser = parse_size)]
        view_memory: Option<usize>,
        /// A directory of HTTP connector files (`<name>.toml`), besides the
        /// built-in mailchimp and hubspot.
        #[arg(long, env = "YINYOM_CONNECTORS_DIR")]
        connectors_dir: Option<PathBuf>,
        /// Hosts HTTP connectors may call besides each system's own base URL
        /// host (comma separated).
        #[arg(long, env = "YINYOM_CONNECTOR_HOSTS", value_delimiter = ',')]
        connector_hosts: Vec<String>,
        /// Private or loopback addresses (or host names) HTTP connectors may
        /// nonetheless call, e.g. `127.0.0.1` (comma separated); refused
        /// otherwise (SSRF).
        #[arg(long, env = "YINYOM_CONNECTOR_ALLOW_PRIVATE", value_delimiter = ',')]
        connector_allow_private: Vec<String>,
        /// PostgreSQL: consent write batches committing at once, each on its
        /// own connection (a batch locks only the ledger partitions it
        /// appends to). More helps where the database has cores to spare;
        /// on a 2-core machine shared with the database, 1 is fastest
        /// (BENCHMARKS.md). SQLite always commits one batch at a time.
        #[arg(long, env = "YINYOM_WRITE_LANES", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=32))]
        write_lanes: u16,
    },
    /// Ledger tools.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Tenants (organisations).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Import consent records (CSV or JSON Lines). Rows that fail are
    /// reported by line number; the others are kept. Exits 2 if any failed.
    Import {
        file: PathBuf,
        #[arg(long)]
        format: Option<Format>,
        #[arg(long)]
        tenant: Option<String>,
        /// PostgreSQL: each batch of rows is committed as this many batches
        /// at once, split by ledger partition, each on its own connection
        /// (BENCHMARKS.md). SQLite always commits one batch at a time.
        #[arg(long, env = "YINYOM_IMPORT_LANES", default_value_t = 2,
              value_parser = clap::value_parser!(u16).range(1..=32))]
        write_lanes: u16,
    },
    /// Export consent records (current states, or the ledger with --history).
    Export {
        #[arg(long, default_value = "csv")]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[arg(long)]
        history: bool,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Measure throughput and latency against ceilings on this machine.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute every tenant's hash chain; exits 1 and names the first
    /// altered entry if it does not verify.
    Verify {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Check a consent receipt offline, with nothing but the published key
    /// set: its signature, and with a proof (`GET /v1/receipts/{id}/proof`)
    /// that its grants are ledger entries included in a signed checkpoint.
    /// Needs no database. Exits 1 and says which check failed.
    VerifyReceipt {
        /// The receipt: a file holding its JWS, or the JWS itself.
        receipt: String,
        /// A file holding the proof's JSON.
        proof: Option<PathBuf>,
        /// A file holding the key set (`/.well-known/jwks.json`).
        #[arg(long)]
        jwks: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print it (shown once).
    Create {
        #[arg(long)]
        role: RoleArg,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant and print its owner key.
    Create {
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Owner,
    Admin,
    User,
    Service,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Owner => Role::Owner,
            RoleArg::Admin => Role::Admin,
            RoleArg::User => Role::User,
            RoleArg::Service => Role::Service,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    Csv,
    Jsonl,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("YINYOM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // A log that cannot be written (its disk is full) must not take
        // requests down: the default reports such errors with eprintln!,
        // which panics when stderr itself cannot be written.
        .log_internal_errors(false)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// Exclusive use of the embedded database: the server's in-memory view
/// must see every write, so offline writers (import) may not run beside it.
pub struct DataDirLock(#[allow(dead_code)] File);

pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("yinyom.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(_) => Err(format!(
            "{} is in use by a running yinyom server; stop it first (or use the HTTP API)",
            dir.display()
        )
        .into()),
    }
}

/// Lock the data directory when the embedded database is in use.
/// A size such as `512MiB`, `4GiB`, `300MB` or a number of bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        u => return Err(format!("unknown size unit {u:?} (use MiB, GiB, …)")),
    };
    let bytes = n * unit;
    if bytes.is_nan() || bytes < 1024.0 * 1024.0 {
        return Err("the view needs at least 1MiB".into());
    }
    Ok(bytes as usize)
}

fn lock_embedded(cli: &Cli) -> Result<Option<DataDirLock>, Box<dyn std::error::Error>> {
    match cli.database_url {
        None => lock_data_dir(&cli.data_dir).map(Some),
        Some(_) => Ok(None),
    }
}

pub async fn open_store(cli: &Cli) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
    Ok(open_sql(cli).await?)
}

async fn open_sql(cli: &Cli) -> Result<Arc<SqlStore>, Box<dyn std::error::Error>> {
    match &cli.database_url {
        Some(url) => Ok(Arc::new(SqlStore::connect(url).await?)),
        None => {
            std::fs::create_dir_all(&cli.data_dir)?;
            Ok(Arc::new(
                SqlStore::sqlite(&cli.data_dir.join("yinyom.db")).await?,
            ))
        }
    }
}

/// The master key: `YINYOM_MASTER_KEY`, else `--master-key-file`, else
/// (SQLite only) `master.key` in the data directory, made on first start.
pub fn master_key(cli: &Cli) -> Result<MasterKey, Box<dyn std::error::Error>> {
    if let Ok(text) = std::env::var("YINYOM_MASTER_KEY") {
        return Ok(MasterKey::parse(&text).map_err(|e| format!("YINYOM_MASTER_KEY: {e}"))?);
    }
    match (&cli.master_key_file, &cli.database_url) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Ok(MasterKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        (None, None) => {
            std::fs::create_dir_all(&cli.data_dir)?;
            Ok(MasterKey::load_or_create(&cli.data_dir.join("master.key"))?)
        }
        (None, Some(_)) => Err("with PostgreSQL every node needs the same master key: set \
             YINYOM_MASTER_KEY or --master-key-file (32 bytes in hex, e.g. `openssl rand -hex 32`)"
            .into()),
    }
}

/// The tenant a command acts on: the one named, or the only one there is.
pub async fn pick_tenant(
    store: &dyn Store,
    named: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    let tenants = store.tenants().await?;
    match named {
        Some(id) => tenants
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.id.clone())
            .ok_or_else(|| format!("no tenant {id:?}").into()),
        None if tenants.len() == 1 => Ok(tenants[0].id.clone()),
        None if tenants.is_empty() => {
            Err("no tenant yet: run `yinyom serve` once, or `yinyom tenants create`".into())
        }
        None => Err("several tenants exist: name one with --tenant".into()),
    }
}

async fn run(cli: Cli) -> CliResult {
    match &cli.command {
        Command::Serve {
            listen,
            bootstrap_api_key,
            nats_url,
            webhook_timeout,
            webhook_retry_hours,
            webhook_retry_base_ms,
            public_url,
            trusted_proxies,
            auth_failures_per_minute,
            public_per_minute,
            view_memory,
            connectors_dir,
            connector_hosts,
            connector_allow_private,
            write_lanes,
        } => {
            // Listen at once: liveness answers, and readiness shows the
            // view's load progress, while the store opens and loads.
            let socket = std::net::TcpListener::bind(listen)?;
            socket.set_nonblocking(true)?;
            let view = Arc::new(crate::view::View::new(*view_memory));
            let (up, up_rx) = tokio::sync::oneshot::channel::<()>();
            let starting = tokio::spawn(
                axum::serve(
                    tokio::net::TcpListener::from_std(socket.try_clone()?)?,
                    crate::api::starting_router(view.clone()),
                )
                .with_graceful_shutdown(async move {
                    let _ = up_rx.await;
                })
                .into_future(),
            );
            tracing::info!(address = %socket.local_addr()?, "yinyom is listening (starting)");
            let _lock = lock_embedded(&cli)?;
            let master_key = master_key(&cli)?;
            let sql = open_sql(&cli).await?;
            sql.set_write_lanes(usize::from(*write_lanes));
            let store: Arc<dyn Store> = sql;
            if let Some((tenant, key)) =
                app::bootstrap(store.as_ref(), bootstrap_api_key.clone()).await?
            {
                println!("Created tenant {:?} ({}).", tenant.name, tenant.id);
                if bootstrap_api_key.is_some() {
                    println!("Owner API key: the value of YINYOM_BOOTSTRAP_API_KEY.");
                } else {
                    println!("Owner API key (shown once, keep it safe): {key}");
                }
            }
            let retries = crate::dispatch::DispatchConfig {
                timeout: std::time::Duration::from_secs(*webhook_timeout),
                give_up_after: std::time::Duration::from_secs(webhook_retry_hours * 3600),
                retry_base: std::time::Duration::from_millis((*webhook_retry_base_ms).max(1)),
                ..Default::default()
            };
            let public_url = public_url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}"))
                .trim_end_matches('/')
                .to_string();
            let config = app::Config {
                webhooks: retries.clone(),
                nats_url: nats_url.clone(),
                master_key: Some(master_key),
                relay: crate::relay::RelayConfig {
                    public_url,
                    retry: retries,
                },
                trusted_proxies: trusted_proxies.clone(),
                auth_failures_per_minute: Some(*auth_failures_per_minute),
                public_per_minute: Some(*public_per_minute),
                view_memory: *view_memory,
                view: Some(view),
                snapshot: {
                    std::fs::create_dir_all(&cli.data_dir)?;
                    Some(cli.data_dir.join("view.snapshot"))
                },
                systems: crate::systems::SystemsConfig {
                    http: crate::systems::http::HttpSettings {
                        connectors_dir: connectors_dir.clone(),
                        allow_hosts: connector_hosts.clone(),
                        allow_private: connector_allow_private.clone(),
                        timeout: None,
                    },
                    ..Default::default()
                },
            };
            let started = std::time::Instant::now();
            let app = App::start_with(store, config).await?;
            let stats = app.view.stats();
            tracing::info!(
                subjects = stats.subjects,
                records = stats.records,
                view_bytes = stats.bytes,
                seconds = started.elapsed().as_secs_f64(),
                "decision view loaded"
            );
            let _ = up.send(());
            starting.await??;
            let listener = tokio::net::TcpListener::from_std(socket)?;
            tracing::info!(address = %listener.local_addr()?, "yinyom is ready");
            let closing = app.closing.clone();
            axum::serve(
                listener,
                crate::api::router(app.clone())
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                closing.send_replace(true);
            })
            .await?;
            // The next start loads this instead of the whole store.
            if let Err(e) = app.save_view().await {
                tracing::warn!(error = %e, "could not save the decision view");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: LedgerCommand::Verify { tenant },
        } => {
            let store = open_store(&cli).await?;
            let tenants = match tenant {
                Some(t) => vec![pick_tenant(store.as_ref(), Some(t)).await?],
                None => store.tenants().await?.into_iter().map(|t| t.id).collect(),
            };
            let mut ok = true;
            for t in tenants {
                let r = verify_with_progress(store.as_ref(), &t).await?;
                match &r.broken {
                    None => println!("tenant {t}: ok, {} entries verified", r.checked),
                    Some(b) => {
                        ok = false;
                        println!(
                            "tenant {t}: BROKEN at entry {}: {} ({} entries verified before it)",
                            b.seq, b.problem, r.checked
                        );
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Ledger {
            command:
                LedgerCommand::VerifyReceipt {
                    receipt,
                    proof,
                    jwks,
                },
        } => {
            let receipt = match std::fs::read_to_string(receipt) {
                Ok(text) => text,
                Err(_) if receipt.matches('.').count() == 2 => receipt.clone(),
                Err(e) => return Err(format!("{receipt}: {e}").into()),
            };
            let read_json =
                |path: &PathBuf| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok(serde_json::from_str(&text)
                        .map_err(|e| format!("{}: not JSON: {e}", path.display()))?)
                };
            let jwks = read_json(jwks)?;
            let proof: Option<yinyom_core::proof::ReceiptProof> = match proof {
                Some(p) => Some(
                    serde_json::from_value(read_json(p)?)
                        .map_err(|e| format!("{}: not a receipt proof: {e}", p.display()))?,
                ),
                None => None,
            };
            match yinyom_core::proof::verify_receipt(&receipt, proof.as_ref(), &jwks) {
                Ok(v) => {
                    println!(
                        "receipt {}: signature ok (issuer {}; purposes {})",
                        v.receipt_id,
                        v.issuer,
                        v.purposes.join(", ")
                    );
                    if let Some(n) = v.checkpoint {
                        let at: Vec<String> = v
                            .positions
                            .iter()
                            .map(|(p, i)| format!("partition {p} leaf {i}"))
                            .collect();
                        println!(
                            "included in signed checkpoint {n} of tenant {}: {} (every purpose it lists was granted)",
                            v.tenant.unwrap_or_default(),
                            at.join(", ")
                        );
                    } else {
                        println!("no proof given: inclusion in the ledger not checked");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("NOT VERIFIED: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    role,
                    label,
                    tenant,
                },
        } => {
            let store = open_store(&cli).await?;
            let tenant = pick_tenant(store.as_ref(), tenant.as_deref()).await?;
            let (key, record) = app::new_api_key(&tenant, (*role).into(), label, None);
            store.insert_api_key(&record).await?;
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenants { command } => {
            let store = open_store(&cli).await?;
            match command {
                TenantsCommand::Create { name } => {
                    let (tenant, key) = app::create_tenant(store.as_ref(), name, None).await?;
                    println!(
                        "tenant {} created; owner API key (shown once): {key}",
                        tenant.id
                    );
                }
                TenantsCommand::List => {
                    for t in store.tenants().await? {
                        println!("{}\t{}", t.id, t.name);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Import {
            file,
            format,
            tenant,
            write_lanes,
        } => {
            let _lock = lock_embedded(&cli)?;
            let sql = open_sql(&cli).await?;
            sql.set_write_lanes(usize::from(*write_lanes));
            let store: Arc<dyn Store> = sql;
            let tenant = pick_tenant(store.as_ref(), tenant.as_deref()).await?;
            // Progress (rate and ETA) only where someone watches it.
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let format = format.or_else(|| crate::transfer::guess_format(file)).ok_or(
                "cannot tell the format from the file name: pass --format csv or --format jsonl",
            )?;
            // The master key lets the import recognise subjects erased
            // here by their old ids (their pseudonyms are keyed).
            let master = master_key(&cli).ok();
            let report =
                crate::transfer::import(store, &tenant, file, format, progress, master).await?;
            eprintln!(
                "imported {} records, rejected {}",
                report.imported,
                report.rejected.len()
            );
            Ok(if report.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Export {
            format,
            output,
            history,
            tenant,
        } => {
            let store = open_store(&cli).await?;
            let tenant = pick_tenant(store.as_ref(), tenant.as_deref()).await?;
            let out: Box<dyn std::io::Write> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let n =
                crate::transfer::export(store.as_ref(), &tenant, *format, *history, out).await?;
            eprintln!("exported {n} records");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => crate::bench::run(args.clone()).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Verify one tenant's ledger on every core, showing progress on standard
/// error: a bar with rate and time left on a terminal, a plain line every
/// few seconds otherwise (standard output keeps only the verdict).
async fn verify_with_progress(
    store: &dyn Store,
    tenant: &str,
) -> Result<crate::store::VerifyReport, crate::store::StoreError> {
    use std::io::IsTerminal;
    use std::sync::atomic::{AtomicU64, Ordering};
    let total = store.ledger_size(tenant).await?;
    let progress = std::sync::Arc::new(AtomicU64::new(0));
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} tenant {msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} entries, {per_sec}, {eta} left",
        )
        .expect("the template is valid"),
    );
    bar.set_message(tenant.to_string());
    let show = tokio::spawn({
        let (progress, bar, tenant) = (progress.clone(), bar.clone(), tenant.to_string());
        async move {
            let start = std::time::Instant::now();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let checked = progress.load(Ordering::Relaxed);
                bar.set_position(checked);
                n += 1;
                // Plain lines every 5 s when not on a terminal.
                if !terminal && n.is_multiple_of(25) {
                    let secs = start.elapsed().as_secs_f64();
                    eprintln!(
                        "tenant {tenant}: {checked} of {total} entries verified ({:.0}/s)",
                        checked as f64 / secs
                    );
                }
            }
        }
    });
    let r = crate::verification::verify(store, tenant, &Default::default(), &progress).await;
    show.abort();
    bar.finish_and_clear();
    r
}
