//! CONNECT tunnels: bytes both ways between a task's client and an egress destination, for a
//! bounded time and in a bounded number.
//!
//! Invariants:
//! - A tunnel holds its client connection's [`ConnectionSlot`] for as long as it lasts, so a
//!   task's tunnels and HTTP connections together never exceed `max_connections` (the slot
//!   is the task's connection permit and its share of the plugin's descriptor budget).
//! - A tunnel through which no byte passed, either way, for `tunnel_idle_timeout` is closed.
//! - Closing the task's lease (stop, exit, destroy) or the plugin's shutdown ends every tunnel
//!   of the task at once.
//! - A tunnel adds nothing to the bytes (TLS end to end between the client and the
//!   destination) and has no byte limit: a package download is as large as it is; what it
//!   holds — two sockets — is bounded by the count and the idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limits::Reservation;

/// Buffer of one direction of a tunnel.
const RELAY_BUFFER: usize = 16 * 1024;

/// One of a task's `max_connections` places, held by a client connection and, once it turns
/// into a CONNECT tunnel, by the tunnel; the place is free again when every holder is gone.
/// It also keeps the task's descriptor reservation alive for as long as it is held.
#[derive(Clone, Debug)]
pub(super) struct ConnectionSlot {
    _held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    _permit: OwnedSemaphorePermit,
    _reservation: Arc<Reservation>,
}

impl ConnectionSlot {
    pub(super) fn new(permit: OwnedSemaphorePermit, reservation: Arc<Reservation>) -> Self {
        ConnectionSlot {
            _held: Arc::new(Held {
                _permit: permit,
                _reservation: reservation,
            }),
        }
    }
}

/// How a tunnel ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum TunnelEnd {
    #[error(
        "both sides closed ({to_destination} bytes to the destination, {to_client} to the client)"
    )]
    Finished { to_destination: u64, to_client: u64 },
    #[error("nothing passed for {0:?} (broker {{ tunnel_idle_timeout }})")]
    Idle(Duration),
    #[error("the task's broker closed")]
    LeaseClosed,
    #[error("{0}")]
    Failed(std::io::Error),
}

/// Everything a tunnel needs once the CONNECT was accepted.
pub(super) struct Tunnel {
    pub task_id: String,
    pub destination: String,
    pub idle_timeout: Duration,
    pub closed: CancellationToken,
    pub slot: Option<ConnectionSlot>,
}

impl Tunnel {
    /// Wait for the client's side of the CONNECT (`upgrade`) in the background, then relay
    /// until the tunnel ends; the connection slot is released then.
    pub(super) fn spawn(self, upgrade: hyper::upgrade::OnUpgrade, upstream: TcpStream) {
        tokio::spawn(async move {
            let Tunnel {
                task_id,
                destination,
                idle_timeout,
                closed,
                slot,
            } = self;
            let end = tokio::select! {
                _ = closed.cancelled() => TunnelEnd::LeaseClosed,
                upgraded = upgrade => match upgraded {
                    Ok(client) => relay(TokioIo::new(client), upstream, idle_timeout, &closed).await,
                    Err(err) => TunnelEnd::Failed(std::io::Error::other(err)),
                },
            };
            tracing::debug!(%task_id, %destination, %end, "egress tunnel ended");
            drop(slot);
        });
    }
}

/// Copy bytes both ways between `client` and `destination` until both sides closed, nothing
/// passed for `idle`, one side failed, or `closed` is cancelled. A side that finished sending
/// has the other side's write half shut down (half-close), as TCP would.
pub(super) async fn relay<C, D>(
    client: C,
    destination: D,
    idle: Duration,
    closed: &CancellationToken,
) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut destination_read, mut destination_write) = tokio::io::split(destination);
    let activity = Activity::new();
    let both = async {
        tokio::try_join!(
            pump(&mut client_read, &mut destination_write, &activity),
            pump(&mut destination_read, &mut client_write, &activity),
        )
    };
    tokio::select! {
        _ = closed.cancelled() => TunnelEnd::LeaseClosed,
        _ = activity.quiet_for(idle) => TunnelEnd::Idle(idle),
        copied = both => match copied {
            Ok((to_destination, to_client)) => TunnelEnd::Finished { to_destination, to_client },
            Err(err) => TunnelEnd::Failed(err),
        },
    }
}

/// One direction: read, write, note the activity; at the end of input, shut the writer.
async fn pump<R, W>(from: &mut R, to: &mut W, activity: &Activity) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; RELAY_BUFFER];
    let mut total = 0u64;
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buffer[..read]).await?;
        to.flush().await?;
        activity.touch();
        total += read as u64;
    }
}

/// When a byte last passed through a tunnel, either way.
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last activity.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing passed for `idle`.
    async fn quiet_for(&self, idle: Duration) {
        loop {
            let last = self.last.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.start + Duration::from_millis(last) + idle).await;
            if self.last.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
        let (client, mut client_far) = duplex(1024);
        let (destination, mut destination_far) = duplex(1024);
        let closed = CancellationToken::new();
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        let relay = tokio::spawn(async move { relay(client, destination, idle, &closed).await });
        // Traffic every 6 s for 30 s keeps it open.
        for round in 0..5u8 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_far.write_all(&[round]).await.unwrap();
            let mut got = [0u8; 1];
            destination_far.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [round]);
        }
        assert!(!relay.is_finished());
        let end = relay.await.unwrap();
        assert!(matches!(end, TunnelEnd::Idle(d) if d == idle), "{end:?}");
        let quiet_since = Duration::from_secs(30);
        let waited = started.elapsed();
        assert!(
            waited >= quiet_since + idle && waited < quiet_since + idle + Duration::from_secs(1),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_with_half_close_and_the_lease_ends_the_tunnel() {
        let (client, mut client_far) = duplex(64);
        let (destination, mut destination_far) = duplex(64);
        let closed = CancellationToken::new();
        let relay_closed = closed.clone();
        let relay = tokio::spawn(async move {
            relay(client, destination, Duration::from_secs(60), &relay_closed).await
        });
        // More than the duplex buffers hold: the relay streams, it does not buffer whole.
        let request = vec![7u8; 10_000];
        let (sent, received) = tokio::join!(client_far.write_all(&request), async {
            let mut got = vec![0u8; request.len()];
            destination_far.read_exact(&mut got).await.map(|_| got)
        });
        sent.unwrap();
        assert_eq!(received.unwrap(), request);
        destination_far.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        client_far.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
        // The client closes its side: the destination sees the end, the other way stays open.
        client_far.shutdown().await.unwrap();
        let mut rest = Vec::new();
        destination_far.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        destination_far.write_all(b"late").await.unwrap();
        let mut late = [0u8; 4];
        client_far.read_exact(&mut late).await.unwrap();
        assert_eq!(&late, b"late");
        closed.cancel();
        let end = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("the tunnel ends with its lease")
            .unwrap();
        assert!(matches!(end, TunnelEnd::LeaseClosed), "{end:?}");
    }
}
