//! The progress line `plexus run` shows on a terminal (and logs now and then
//! otherwise): per connector, its rate, what it moved, and for work with an end in
//! sight (a snapshot, a sink catching up, a bulk export) how far along it is and when it
//! should be done.

use std::fmt::Write;

/// One connector's figures over the last interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress<'a> {
    pub name: &'a str,
    pub state: &'a str,
    /// Records per second over the interval.
    pub rate: f64,
    pub records: u64,
    pub bytes: u64,
    /// A sink's records not yet committed.
    pub lag: Option<u64>,
    /// A source's snapshot: rows read and rows expected.
    pub snapshot: Option<(u64, u64)>,
}

impl Progress<'_> {
    /// `orders-out RUNNING 812.4k rec/s, 1.2M records, 96.0 MB, lag 3.8M, ETA 5s`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} {} {} rec/s, {} records, {}",
            self.name,
            self.state,
            count(self.rate.max(0.0) as u64),
            count(self.records),
            bytes(self.bytes)
        );
        let mut remaining = None;
        if let Some((done, total)) = self.snapshot.filter(|(_, total)| *total > 0) {
            let percent = (100.0 * done as f64 / total as f64).min(100.0);
            let _ = write!(line, ", snapshot {percent:.1}% of ~{}", count(total));
            remaining = Some(total.saturating_sub(done));
        }
        if let Some(lag) = self.lag {
            let _ = write!(line, ", lag {}", count(lag));
            remaining = Some(lag);
        }
        if let Some(remaining) = remaining.filter(|r| *r > 0)
            && self.rate >= 1.0
        {
            let _ = write!(line, ", ETA {}", duration(remaining as f64 / self.rate));
        }
        line
    }
}

/// `950`, `12.3k`, `4.5M`, `1.2G`.
fn count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}

/// `42s`, `3m05s`, `2h10m`.
fn duration(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_rate_totals_and_the_time_left() {
        let sink = Progress {
            name: "export",
            state: "RUNNING",
            rate: 812_400.0,
            records: 1_200_000,
            bytes: 96_000_000,
            lag: Some(3_800_000),
            snapshot: None,
        };
        assert_eq!(
            sink.line(),
            "export RUNNING 812.4k rec/s, 1.2M records, 96.0 MB, lag 3.8M, ETA 5s"
        );
        let source = Progress {
            name: "pg",
            state: "RUNNING",
            rate: 10_000.0,
            records: 2_500_000,
            bytes: 1_500_000_000,
            lag: None,
            snapshot: Some((2_500_000, 5_000_000)),
        };
        assert_eq!(
            source.line(),
            "pg RUNNING 10.0k rec/s, 2.5M records, 1.50 GB, snapshot 50.0% of ~5.0M, ETA 4m10s"
        );
        // Nothing left, or nothing moving: no ETA.
        let idle = Progress {
            rate: 0.0,
            lag: Some(10),
            ..sink.clone()
        };
        assert_eq!(idle.line(), "export RUNNING 0 rec/s, 1.2M records, 96.0 MB, lag 10");
        let caught_up = Progress { lag: Some(0), ..sink };
        assert!(!caught_up.line().contains("ETA"));
        assert_eq!(duration(7322.0), "2h02m");
    }
}
