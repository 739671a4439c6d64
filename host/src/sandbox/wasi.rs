//! WASI for guests: virtual and deterministic for workflows, real but
//! limited for activities.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

/// Workflow time, shared by the run driver (which advances it as journal
/// entries are replayed or written) and the guest's WASI clocks.
#[derive(Clone, Default)]
pub struct WorkflowClock {
    now_ms: Arc<AtomicU64>,
    start_ms: Arc<AtomicU64>,
}

impl WorkflowClock {
    /// A clock that starts at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        let clock = WorkflowClock::default();
        clock.start_ms.store(start_ms, Ordering::Relaxed);
        clock.now_ms.store(start_ms, Ordering::Relaxed);
        clock
    }

    /// Workflow time in ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Moves workflow time to the time of a journal entry.
    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }
}

struct WallClock(WorkflowClock);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_ms())
    }
}

struct MonotonicClock(WorkflowClock);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        let c = &self.0;
        c.now_ms().saturating_sub(c.start_ms.load(Ordering::Relaxed)) * 1_000_000
    }
}

/// A portable, seeded generator (ChaCha20, whose output is specified, so a
/// host upgrade never changes what a replay sees).
struct SeededRng(ChaCha20Rng);

impl rand_core_wasi::TryRng for SeededRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

/// A generator for stream `stream` of a run's seed.
pub(crate) fn seeded_rng(seed: u128, stream: u64) -> ChaCha20Rng {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha20Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// Guest stdout/stderr: each line becomes a log event tagged with the run;
/// nothing is written while `suppressed` (replay). Lines are cut at 8 KiB so
/// a chatty guest cannot exhaust memory, and writes never block or fail.
#[derive(Clone)]
pub struct GuestOutput {
    label: Arc<str>,
    stream: &'static str,
    suppressed: Arc<AtomicBool>,
}

impl GuestOutput {
    /// Output for the run or activity named `label`.
    pub fn new(label: &str, stream: &'static str, suppressed: Arc<AtomicBool>) -> Self {
        GuestOutput { label: label.into(), stream, suppressed }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter { out: self.clone(), line: Vec::new() })
    }

    // Written synchronously, so nothing is left in a buffer when the guest
    // traps right after printing (a panic message before an abort).
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(LineWriter { out: self.clone(), line: Vec::new() })
    }
}

const MAX_LINE: usize = 8 << 10;

struct LineWriter {
    out: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if !self.out.suppressed.load(Ordering::Relaxed) && !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            tracing::info!(target: "cairn::guest", run = %self.out.label, stream = self.out.stream, "{}", text.trim_end());
        }
        self.line.clear();
    }
}

impl LineWriter {
    fn push(&mut self, buf: &[u8]) {
        for &b in buf {
            if b == b'\n' {
                self.emit();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }
}

impl wasmtime_wasi::p2::OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        // A guest that dies mid-line (a panic message before an abort)
        // still has its last words logged.
        self.emit();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.emit();
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// Virtual WASI for a workflow: clocks read workflow time, randomness comes
/// from the run's seed, no environment, arguments, files or sockets, and
/// output goes to the run's log (suppressed during replay).
pub fn workflow_wasi(run_id: &str, seed: u128, clock: &WorkflowClock, replaying: &Arc<AtomicBool>) -> WasiCtx {
    WasiCtx::builder()
        .wall_clock(WallClock(clock.clone()))
        .monotonic_clock(MonotonicClock(clock.clone()))
        .insecure_random_seed(seed.rotate_left(64) ^ 0x9e37_79b9_7f4a_7c15)
        .secure_random(SeededRng(seeded_rng(seed, 1)))
        .insecure_random(SeededRng(seeded_rng(seed, 2)))
        .stdout(GuestOutput::new(run_id, "stdout", replaying.clone()))
        .stderr(GuestOutput::new(run_id, "stderr", replaying.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// WASI for an activity attempt: real clocks and randomness, output to the
/// log, no environment, files or network.
pub fn activity_wasi(label: &str, network: &Arc<[SocketAddr]>) -> WasiCtx {
    let never = Arc::new(AtomicBool::new(false));
    let mut builder = WasiCtx::builder();
    builder.stdout(GuestOutput::new(label, "stdout", never.clone())).stderr(GuestOutput::new(label, "stderr", never));
    if network.is_empty() {
        builder.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
    } else {
        // Only the allow-listed addresses; a connect anywhere else fails
        // in the guest with `access-denied` (std: PermissionDenied).
        let allowed = network.clone();
        builder.allow_tcp(true).allow_udp(true).allow_ip_name_lookup(true).socket_addr_check(move |addr, use_| {
            use wasmtime_wasi::sockets::SocketAddrUse as Use;
            let permitted = match use_ {
                // Outgoing traffic, to the allow-list only.
                Use::TcpConnect | Use::UdpSend | Use::UdpReceive => allowed.contains(&addr),
                // The implicit bind to an ephemeral port a connect makes.
                Use::TcpBind | Use::UdpBind => addr.ip().is_unspecified() && addr.port() == 0,
                // Activities are clients: no listening, no accepting.
                Use::TcpListen | Use::TcpAccept => false,
            };
            if !permitted {
                tracing::warn!(%addr, ?use_, "an activity tried to reach an address outside --activity-allow");
            }
            Box::pin(async move { permitted })
        });
    }
    builder.build()
}
