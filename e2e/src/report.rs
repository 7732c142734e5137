//! The table printed at the end of a run: one row per scenario with what it sent,
//! received and lost, and the machines the servers reported.

use std::fmt;
use std::time::Duration;

/// Message counts of one scenario. `lost` is what was sent and never arrived;
/// `duplicates` what arrived (or was handled) more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub duration: Duration,
    pub counts: Counts,
    /// `Err` holds why the scenario failed.
    pub outcome: Result<String, String>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub driver: String,
    pub rows: Vec<Row>,
    /// Server name -> `uname -m` inside it.
    pub machines: Vec<(String, String)>,
}

impl Report {
    pub fn new(driver: &str) -> Self {
        Self {
            driver: driver.to_string(),
            ..Self::default()
        }
    }

    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.outcome.is_ok())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "midge e2e report ({} driver)", self.driver)?;
        writeln!(
            f,
            "{:<34} {:>8} {:>7} {:>8} {:>5} {:>5}  result",
            "scenario", "seconds", "sent", "received", "lost", "dup"
        )?;
        let mut total = Counts::default();
        let mut seconds = 0.0;
        for row in &self.rows {
            let c = &row.counts;
            total.add(c);
            seconds += row.duration.as_secs_f64();
            let result = match &row.outcome {
                Ok(note) if note.is_empty() => "ok".to_string(),
                Ok(note) => format!("ok: {note}"),
                Err(why) => format!("FAILED: {why}"),
            };
            writeln!(
                f,
                "{:<34} {:>8.1} {:>7} {:>8} {:>5} {:>5}  {result}",
                row.scenario,
                row.duration.as_secs_f64(),
                c.sent,
                c.received,
                c.lost,
                c.duplicates
            )?;
        }
        writeln!(
            f,
            "{:<34} {:>8.1} {:>7} {:>8} {:>5} {:>5}  {}",
            "total",
            seconds,
            total.sent,
            total.received,
            total.lost,
            total.duplicates,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        if !self.machines.is_empty() {
            writeln!(f, "uname -m inside each server:")?;
            for (server, machine) in &self.machines {
                writeln!(f, "  {server:<24} {machine}")?;
            }
        }
        Ok(())
    }
}
