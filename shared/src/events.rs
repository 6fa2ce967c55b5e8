//! The bounded in-memory log behind `show events`: every state change (backend
//! up/down/ejected, site up/down, overrides, reloads) with its time, also written to
//! the tracing log. Bounded so a flapping fleet cannot grow memory.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::SystemTime;

/// One recorded state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened (wall clock, shown as RFC 3339).
    pub at: SystemTime,
    /// What changed: `VIP/BACKEND`, `SITE`, `config`...
    pub subject: String,
    /// The change and its reason, e.g. `down: connection refused`.
    pub message: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            humantime::format_rfc3339_millis(self.at),
            self.subject,
            self.message
        )
    }
}

/// A ring of the most recent events, shared by every role of the process.
#[derive(Debug)]
pub struct EventLog {
    capacity: usize,
    events: Mutex<VecDeque<Event>>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(1000)
    }
}

impl EventLog {
    /// A log keeping at most `capacity` events (oldest dropped first).
    pub fn new(capacity: usize) -> Self {
        EventLog {
            capacity: capacity.max(1),
            events: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    /// Records an event now and logs it at info level.
    pub fn record(&self, subject: impl Into<String>, message: impl Into<String>) {
        let event = Event {
            at: SystemTime::now(),
            subject: subject.into(),
            message: message.into(),
        };
        tracing::info!(subject = %event.subject, "{}", event.message);
        let mut events = crate::sync::lock(&self.events);
        if events.len() == self.capacity {
            events.pop_front();
        }
        events.push_back(event);
    }

    /// The last `n` events, oldest first.
    pub fn last(&self, n: usize) -> Vec<Event> {
        let events = crate::sync::lock(&self.events);
        let skip = events.len().saturating_sub(n);
        events.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_within_capacity_oldest_first() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record(format!("s{i}"), "up");
        }
        let subjects: Vec<_> = log.last(10).into_iter().map(|e| e.subject).collect();
        assert_eq!(subjects, ["s2", "s3", "s4"]);
        let last_two: Vec<_> = log.last(2).into_iter().map(|e| e.subject).collect();
        assert_eq!(last_two, ["s3", "s4"]);
    }

    #[test]
    fn displays_rfc3339_timestamp() {
        let log = EventLog::new(3);
        log.record("smtp/mx1", "down: connection refused");
        let line = log.last(1)[0].to_string();
        let (stamp, rest) = line.split_once(' ').expect("timestamp first");
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert_eq!(rest, "smtp/mx1 down: connection refused");
    }
}
