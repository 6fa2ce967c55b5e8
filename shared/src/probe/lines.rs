//! A line reader/writer with hard caps, shared by the line protocols (SMTP, IMAP,
//! POP3) on both sides (probes, and the test fakes).
//!
//! A hostile or broken server cannot make a probe allocate without bound: a line
//! longer than the cap, or a reply with too many lines, is a protocol error. The
//! reader keeps its own buffer so that a STARTTLS upgrade can check nothing was sent
//! ahead of the handshake (the command-injection flaw of CVE-2011-0411).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::conn::io_error;
use super::ProbeError;

/// Longest line a probe accepts, CRLF included.
pub const MAX_LINE: usize = 4096;
/// Most lines a probe accepts in one reply.
pub const MAX_LINES: usize = 64;

/// The framing of [`LineConn::read_line`], free of I/O: takes the first complete line
/// (without CR/LF, invalid UTF-8 replaced) out of `buf`; `Ok(None)` while more bytes
/// are needed; an error once `max_line` bytes hold no line end.
pub fn take_line(
    buf: &mut Vec<u8>,
    max_line: usize,
    phase: &'static str,
) -> Result<Option<String>, ProbeError> {
    if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
        let mut line: Vec<u8> = buf.drain(..=lf).collect();
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
    }
    if buf.len() >= max_line {
        return Err(ProbeError::Protocol(format!(
            "line longer than {max_line} bytes during {phase}"
        )));
    }
    Ok(None)
}

/// A stream with a bounded line buffer.
pub(crate) struct LineConn<S> {
    io: S,
    buf: Vec<u8>,
    max_line: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LineConn<S> {
    /// Wraps `io` with the probe line cap.
    pub(crate) fn new(io: S) -> Self {
        Self::with_cap(io, MAX_LINE)
    }

    /// Wraps `io` with another line cap (fakes accept longer DATA lines).
    pub(crate) fn with_cap(io: S, max_line: usize) -> Self {
        LineConn {
            io,
            buf: Vec::with_capacity(512),
            max_line,
        }
    }

    /// Reads one line without its CR/LF. EOF before a full line is `Closed(phase)`;
    /// invalid UTF-8 is replaced rather than rejected (servers send Latin-1 banners).
    pub(crate) async fn read_line(&mut self, phase: &'static str) -> Result<String, ProbeError> {
        loop {
            if let Some(line) = take_line(&mut self.buf, self.max_line, phase)? {
                return Ok(line);
            }
            let mut chunk = [0u8; 1024];
            let room = (self.max_line - self.buf.len()).min(chunk.len());
            let n = self
                .io
                .read(&mut chunk[..room])
                .await
                .map_err(|e| io_error(e, phase))?;
            if n == 0 {
                return Err(ProbeError::Closed(phase));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Writes `data` and flushes (TLS streams buffer until flushed).
    pub(crate) async fn send(
        &mut self,
        data: &[u8],
        phase: &'static str,
    ) -> Result<(), ProbeError> {
        self.io
            .write_all(data)
            .await
            .map_err(|e| io_error(e, phase))?;
        self.io.flush().await.map_err(|e| io_error(e, phase))
    }

    /// Best-effort write, for the polite goodbye after a failure: errors are ignored.
    pub(crate) async fn send_quietly(&mut self, data: &[u8]) {
        if self.io.write_all(data).await.is_ok() {
            let _ = self.io.flush().await;
        }
    }

    /// Closes the write side cleanly (TLS close_notify, then FIN).
    pub(crate) async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// True when bytes beyond the last line are buffered.
    pub(crate) fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Gives back the stream for a TLS upgrade; fails if the peer sent data ahead of the
    /// handshake, which must not be trusted.
    pub(crate) fn into_inner(self) -> Result<S, ProbeError> {
        if self.has_pending() {
            return Err(ProbeError::Protocol(
                "data received ahead of the TLS handshake".into(),
            ));
        }
        Ok(self.io)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn take_line_frames_without_io() {
        let mut buf = b"220 a\r\n250 b\nrest".to_vec();
        assert_eq!(take_line(&mut buf, 16, "t"), Ok(Some("220 a".into())));
        assert_eq!(take_line(&mut buf, 16, "t"), Ok(Some("250 b".into())));
        assert_eq!(take_line(&mut buf, 16, "t"), Ok(None));
        assert_eq!(buf, b"rest");
        let mut long = vec![b'x'; 16];
        assert!(take_line(&mut long, 16, "t").is_err());
    }

    use super::*;

    #[tokio::test]
    async fn reads_lines_and_caps_length() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        a.write_all(b"one\r\ntwo\nthree").await.unwrap();
        let mut c = LineConn::new(b);
        assert_eq!(c.read_line("t").await.unwrap(), "one");
        assert_eq!(c.read_line("t").await.unwrap(), "two");
        a.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        let err = c.read_line("t").await.unwrap_err();
        assert!(matches!(err, ProbeError::Protocol(_)), "{err}");
    }

    #[tokio::test]
    async fn eof_is_closed_and_pending_blocks_upgrade() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"220 go ahead\r\nEXTRA").await.unwrap();
        let mut c = LineConn::new(b);
        c.read_line("STARTTLS").await.unwrap();
        assert!(c.has_pending());
        assert!(c.into_inner().is_err());
        let (a, b) = tokio::io::duplex(1024);
        drop(a);
        let mut c = LineConn::new(b);
        assert_eq!(
            c.read_line("greeting").await.unwrap_err(),
            ProbeError::Closed("greeting")
        );
    }
}
