//! What processes used, from Linux's `/proc`: the benchmark's own peak memory, and CPU
//! time of the benchmark, its children and the PostgreSQL server, so the progress lines
//! can say where the time went.

use std::time::Duration;

/// The process's peak resident set size (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The 1, 5 and 15-minute load averages: on a shared machine, what the figures ran
/// beside.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// CPU time used so far, in seconds: by this process, by its children that ended
/// (`pg_recvlogical`), and by the PostgreSQL server (the postmaster with its ended
/// children, and its live ones).
pub struct Cpu {
    user: f64,
    system: f64,
    children: f64,
    server: Option<f64>,
    switches: u64,
}

impl Cpu {
    pub fn now(postmaster: Option<u32>) -> Cpu {
        let own = proc_stat("self");
        Cpu {
            user: own.as_ref().map_or(0.0, |s| s.user),
            system: own.as_ref().map_or(0.0, |s| s.system),
            children: own.as_ref().map_or(0.0, |s| s.children_cpu),
            server: postmaster.and_then(server_cpu),
            switches: context_switches(),
        }
    }

    /// What was used since `before`, over `wall` seconds, for the progress lines.
    pub fn since(&self, before: &Cpu, wall: Duration, child: &str) -> String {
        let wall = wall.as_secs_f64().max(1e-9);
        let share = |s: f64| format!("{s:.2} s ({:.0}% of a core)", s / wall * 100.0);
        let mut text = format!(
            "CPU: plexus process {} ({:.2} s in the kernel, {} context switches)",
            share(self.user - before.user + self.system - before.system),
            self.system - before.system,
            self.switches.saturating_sub(before.switches)
        );
        if !child.is_empty() {
            text.push_str(&format!(", {child} {}", share(self.children - before.children)));
        }
        if let (Some(now), Some(then)) = (self.server, before.server) {
            text.push_str(&format!(", PostgreSQL server {}", share(now - then)));
        }
        text
    }
}

/// Context switches of this process's live threads, voluntary (waiting for work or
/// I/O) and not: many per record means threads hand work to each other one piece at
/// a time.
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

fn server_cpu(postmaster: u32) -> Option<f64> {
    let main = proc_stat(&postmaster.to_string())?;
    let mut total = main.user + main.system + main.children_cpu;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if let Some(stat) = proc_stat(pid)
            && stat.ppid == postmaster
        {
            total += stat.user + stat.system;
        }
    }
    Some(total)
}

pub struct ProcStat {
    pub ppid: u32,
    user: f64,
    system: f64,
    children_cpu: f64,
}

impl ProcStat {
    /// CPU seconds used, user and system.
    pub fn cpu_seconds(&self) -> f64 {
        self.user + self.system
    }
}

/// Parent, CPU seconds, and CPU seconds of ended children, from `/proc/<pid>/stat`.
pub fn proc_stat(pid: &str) -> Option<ProcStat> {
    // Linux reports times in clock ticks of 1/100 s (USER_HZ) on every architecture.
    const TICKS: f64 = 100.0;
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold anything, spaces and parentheses included.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    // `fields[0]` is field 3 of proc(5): the state.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        ppid: u32::try_from(field(4)?).ok()?,
        user: field(14)? as f64 / TICKS,
        system: field(15)? as f64 / TICKS,
        children_cpu: (field(16)? + field(17)?) as f64 / TICKS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_stat_parses() {
        let stat = proc_stat("self");
        assert!(stat.is_some_and(|s| s.ppid > 0 && s.user >= 0.0 && s.system >= 0.0));
        assert!(peak_rss_mb().is_some_and(|mb| mb > 0.0));
    }
}
