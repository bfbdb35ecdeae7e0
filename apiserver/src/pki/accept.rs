//! Accepting a TLS connection so that a refused client learns why.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a refused connection is kept open to let the alert reach the client.
const LINGER: Duration = Duration::from_secs(1);
/// How much a refused client may still send during [`LINGER`].
const LINGER_BYTES: usize = 64 * 1024;

/// `acceptor.accept(io)`, except that a refused handshake (for example a client certificate
/// of another CA) is closed gracefully: the TLS alert has been written, then the socket is
/// half-closed and drained briefly (at most 1 s / 64 KiB) before it is dropped.
///
/// Why: with TLS 1.3 the client has already sent its Finished and often its first request
/// when the server rejects its certificate. Dropping the socket with that data unread makes
/// the kernel answer with a RST, which can destroy the alert before the client reads it;
/// kubectl then prints `write: broken pipe` or `connection reset by peer` instead of
/// `remote error: tls: unknown certificate authority`.
pub async fn accept_tls<IO>(acceptor: &TlsAcceptor, io: IO) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match acceptor.accept(io).into_fallible().await {
        Ok(stream) => Ok(stream),
        Err((error, mut io)) => {
            let _ = io.shutdown().await;
            let drain = async {
                let mut buf = [0u8; 4096];
                let mut left = LINGER_BYTES;
                while left > 0 {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
            Err(error)
        }
    }
}
