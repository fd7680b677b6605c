//! systemd integration of `xvs run`.
//!
//! - Service notifications (sd_notify(3), through the `sd-notify` crate: one datagram per call to
//!   the unix socket named by `$NOTIFY_SOCKET`; nothing is sent when it is unset): `READY=1` once
//!   the data plane forwards and the control socket answers, `RELOADING=1` with
//!   `MONOTONIC_USEC` around a SIGHUP reload and `READY=1` after it, `STOPPING=1` on the way
//!   out, and `WATCHDOG=1` every half of `$WATCHDOG_USEC` (systemd's `WatchdogSec=`) from the
//!   main loop, which also watches the workers, so a wedged loop or a dead worker stops the pings.
//! - Log lines in the journal's conventions (sd-daemon(3)): when stderr is the journal's stream
//!   (`$JOURNAL_STREAM` holds stderr's `device:inode`, systemd.exec(5)), lines carry a `<N>`
//!   syslog priority prefix and no timestamp (the journal stamps them itself).

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is connected to the journal: `$JOURNAL_STREAM` is `DEV:INODE` and equals
/// stderr's own device and inode (a child that inherited the variable but writes elsewhere keeps
/// plain lines). Computed once.
pub fn journal_stderr() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Ok(v) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = v.split_once(':') else {
            return false;
        };
        let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
            return false;
        };
        stderr_identity().is_ok_and(|(d, i)| d == dev && i == ino)
    })
}

fn stderr_identity() -> io::Result<(u64, u64)> {
    use std::os::fd::AsFd;
    let fd = io::stderr().as_fd().try_clone_to_owned()?;
    let m = std::fs::File::from(fd).metadata()?;
    Ok((m.dev(), m.ino()))
}

/// The syslog priority of a tracing level (sd-daemon.h's `SD_ERR` … `SD_DEBUG`).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The prefix of a plain stderr line of `level`: `<N>` under the journal, empty otherwise.
pub fn prefix(level: Level) -> &'static str {
    if !journal_stderr() {
        return "";
    }
    match priority(level) {
        3 => "<3>",
        4 => "<4>",
        6 => "<6>",
        _ => "<7>",
    }
}

/// `text` as one stderr line of `level`: under the journal prefixed with `<N>` and with its line
/// breaks turned into ` | `, so that the journal keeps it as one entry of that priority;
/// unchanged otherwise.
pub fn line(level: Level, text: &str) -> String {
    if !journal_stderr() {
        return text.to_string();
    }
    let joined: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().trim_matches('|').trim().is_empty())
        .collect();
    format!("{}{}", prefix(level), joined.join(" | "))
}

/// tracing's line format for the journal: `<N>` then the message and fields, without time,
/// level word or ANSI colours.
pub struct JournalFormat {
    inner: Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat {
            inner: Format::default()
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_ansi(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// Sends `xvs run`'s notifications to the service manager.
pub struct Notifier {
    /// Half of `$WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
    last_ping: Instant,
    /// Whether a failed send was already logged (once is enough).
    warned: bool,
}

impl Notifier {
    /// From the environment systemd sets (`$WATCHDOG_USEC`, `$WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        Notifier {
            watchdog_every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: Instant::now(),
            warned: false,
        }
    }

    /// The watchdog ping period, if the watchdog is on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    fn send(&mut self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            if !self.warned {
                self.warned = true;
                tracing::warn!(error = %e, "sd_notify to $NOTIFY_SOCKET failed");
            }
        }
    }

    /// `READY=1` with a `STATUS=` line.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` and `MONOTONIC_USEC` (systemd.service(5), Type=notify-reload's protocol).
    pub fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `WATCHDOG=1` when half the watchdog period has passed since the last one; call it from
    /// the main loop, more often than that period.
    pub fn tick(&mut self) {
        if let Some(every) = self.watchdog_every {
            if self.last_ping.elapsed() >= every {
                self.last_ping = Instant::now();
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
    }

    #[test]
    fn stderr_has_an_identity() {
        let (_dev, ino) = stderr_identity().unwrap();
        assert_ne!(ino, 0);
    }
}
