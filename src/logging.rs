//! Process-wide tracing setup: human text by default, JSON lines on request; the
//! level comes from `RUST_LOG` (default `info`, with hickory's per-query lines
//! silenced).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Installs the global subscriber once; later calls are ignored.
pub(crate) fn init(format: LogFormat) {
    // hickory-server logs every query at info; that is a line per packet, not an event.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,hickory_proto=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
