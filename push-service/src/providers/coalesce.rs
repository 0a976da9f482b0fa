//! Writes to a provider connection gathered until its task has let the
//! others run once, so that the requests many deliveries start together
//! leave in one write.
//!
//! h2 writes out what it has framed each time its connection task is polled,
//! and that task is woken by every request started on the connection: with
//! two runtime threads, a batch's deliveries to one provider went out as one
//! `writev` each (0.83 a delivery), each its own TLS record and TCP segment,
//! each read on its own by the provider. [`Coalesce`] sits between h2 and the
//! stream: it keeps what h2 writes, and when h2 asks for a flush it first
//! gives up its turn once (the task wakes itself and returns `Pending`;
//! Tokio puts a task that does so at the back of its thread's queue), so the
//! tasks already waiting run first, among them the deliveries whose requests
//! then join the same write. A lone request waits for the tasks queued before
//! it; with none, for nothing.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes kept before they are written out without waiting for a flush.
const MOST: usize = 64 * 1024;

/// A stream whose writes wait for a flush, and whose flushes wait for the
/// task to yield once (see the module).
pub struct Coalesce<T> {
    io: T,
    kept: Vec<u8>,
    /// How much of `kept` is written already.
    written: usize,
    /// A flush gave up its turn already: the next one writes.
    yielded: bool,
    /// `kept` is being written: no second turn given up.
    writing: bool,
}

impl<T> Coalesce<T> {
    pub fn new(io: T) -> Self {
        Coalesce {
            io,
            kept: Vec::new(),
            written: 0,
            yielded: false,
            writing: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out all that is kept.
    fn poll_write_kept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.kept.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.kept[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.kept.clear();
        self.written = 0;
        self.writing = false;
        Poll::Ready(Ok(()))
    }

    /// Room for more: past [`MOST`], what is kept is written out first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kept.len() >= MOST {
            self.writing = true;
            self.yielded = false;
            ready!(self.poll_write_kept(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        this.kept.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for slice in data {
            this.kept.extend_from_slice(slice);
            n += slice.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.kept.is_empty() {
            if !this.writing {
                if !this.yielded {
                    this.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                this.yielded = false;
                this.writing = true;
            }
            ready!(this.poll_write_kept(cx))?;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.yielded = false;
        this.writing = true;
        ready!(this.poll_write_kept(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the stream below.
    struct Counting {
        writes: usize,
        bytes: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.bytes.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_leave_as_one() {
        let mut io = Coalesce::new(Counting {
            writes: 0,
            bytes: Vec::new(),
        });
        for part in [&b"one "[..], b"two ", b"three"] {
            io.write_all(part).await.expect("kept");
        }
        assert_eq!(io.io.writes, 0, "nothing written before the flush");
        io.flush().await.expect("flushed");
        assert_eq!(io.io.writes, 1);
        assert_eq!(io.io.bytes, b"one two three");
        io.flush().await.expect("nothing left");
        assert_eq!(io.io.writes, 1);
    }

    #[tokio::test]
    async fn past_the_most_kept_it_writes_without_a_flush() {
        let mut io = Coalesce::new(Counting {
            writes: 0,
            bytes: Vec::new(),
        });
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..5 {
            io.write_all(&chunk).await.expect("kept");
        }
        assert_eq!(io.io.writes, 1, "the first 64 KiB went out");
        assert_eq!(io.kept.len(), 16 * 1024);
        io.shutdown().await.expect("shut");
        assert_eq!(io.io.bytes.len(), 80 * 1024);
    }

    /// Across a real socket: what two tasks write before the flush arrives
    /// whole, in order, and reads pass through.
    #[tokio::test]
    async fn bytes_arrive_whole_and_reads_pass_through() {
        let (near, mut far) = tokio::io::duplex(256 * 1024);
        let mut io = Coalesce::new(near);
        io.write_all(b"request ").await.expect("kept");
        io.write_all(b"and body").await.expect("kept");
        io.flush().await.expect("flushed");
        let mut got = [0u8; 16];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"request and body");
        far.write_all(b"answer").await.expect("answer");
        let mut answer = [0u8; 6];
        io.read_exact(&mut answer).await.expect("read back");
        assert_eq!(&answer, b"answer");
    }
}
