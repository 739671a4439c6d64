//! A real PostgreSQL server for the tests (test builds only, with the
//! `fault-injection` feature): Debian's `initdb` and `postgres` started
//! once per test process on a loopback port, a fresh database per test.
//!
//! `initdb` refuses to run as root, so as root the server runs as the
//! `postgres` user. It is started from a thread that lives as long as the
//! process and gets SIGKILL when that thread (the process) goes, so no
//! server outlives the tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running server.
pub struct TestServer {
    /// Its data directory (its log is `server.log` in it).
    pub dir: PathBuf,
    /// Its loopback port.
    pub port: u16,
    /// Its process id.
    pub pid: u32,
}

static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The directory with `initdb` and `postgres`: `CAIRN_PG_BIN`, else the
/// newest of Debian's `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CAIRN_PG_BIN") {
        return Ok(dir.into());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing())?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(missing)
}

fn missing() -> String {
    "PostgreSQL is not installed: the PostgreSQL tests need Debian's postgresql-15 (sudo apt-get install postgresql-15), or CAIRN_PG_BIN set to a directory with initdb and postgres".into()
}

/// The uid and gid to run the server as: the `postgres` user as root,
/// else this process's own.
fn server_user() -> Result<Option<(libc::uid_t, libc::gid_t)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: a NUL-terminated name; the result is read at once, before
    // any other getpw* call on this thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err("running as root, and there is no `postgres` user to run PostgreSQL as (initdb refuses root); install postgresql-15, which creates it".into());
    }
    // SAFETY: checked non-null above.
    Ok(Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) }))
}

fn command(bin: &Path, program: &str, user: Option<(libc::uid_t, libc::gid_t)>) -> Command {
    let mut command = Command::new(bin.join(program));
    command.stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec. The
    // parent-death signal is set after the uid changes (a change of
    // credentials clears it).
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
}

fn start() -> Result<TestServer, String> {
    let bin = bin_dir()?;
    let user = server_user()?;
    // Servers of earlier test processes died with them; their files stay.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix("cairn-pg-")).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("cairn-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let init = command(&bin, "initdb", user)
        .args(["-D"])
        .arg(&data)
        .args(["-U", "cairn", "--auth=trust", "-E", "UTF8", "--no-sync"])
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !init.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| format!("creating the server log: {e}"))?;
    if let Some((uid, gid)) = user {
        let _ = std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid));
    }
    let child = command(&bin, "postgres", user)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=on"])
        .args(["-c", "synchronous_commit=on", "-c", "shared_buffers=128MB"])
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let pid = child.id();
    // Never waited for: it lives as long as the process.
    std::mem::forget(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not start within 60 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(TestServer { dir, port, pid })
}

/// The test server, started on first use.
pub fn server() -> &'static TestServer {
    let started = SERVER.get_or_init(|| {
        // Started from a thread that never ends: the server's parent-death
        // signal follows the thread that started it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cairn-test-postgres".into())
            .spawn(move || {
                let _ = tx.send(start());
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the PostgreSQL thread");
        rx.recv().unwrap_or_else(|_| Err("the PostgreSQL thread died".into()))
    });
    match started {
        Ok(server) => server,
        Err(e) => panic!("{e}"),
    }
}

impl TestServer {
    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://cairn@127.0.0.1:{}/{name}", self.port)
    }

    /// A connection to database `postgres`. The server accepts TCP before
    /// it accepts sessions ("the database system is starting up"), so the
    /// first connections are retried for a while.
    async fn connect_admin(
        &self,
    ) -> (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await {
                Ok((client, connection)) => return (client, tokio::spawn(connection)),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the test server is not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("connecting to the test server: {e}"),
            }
        }
    }

    /// A new, empty database; its URL.
    pub async fn database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
        let (client, connection) = self.connect_admin().await;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("creating a test database");
        drop(client);
        let _ = connection.await;
        self.url(&name)
    }

    /// Runs `sql` as the superuser on database `postgres`.
    pub async fn admin(&self, sql: &str) -> Vec<tokio_postgres::SimpleQueryMessage> {
        let (client, connection) = self.connect_admin().await;
        let out = client.simple_query(sql).await.expect("an admin query");
        drop(client);
        let _ = connection.await;
        out
    }
}
