//! The bench's results: figures (with their ratio to the raw loopback limit), correctness
//! checks, notes, the machine, and their rendering as a table or JSON.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Key of the sink figure "single-event POSTs, requests/s".
pub const SINK_SINGLE: &str = "sink.single";
/// Key of the sink figure "arrays of 100, events/s".
pub const SINK_ARRAYS: &str = "sink.arrays";
/// Key of the sink figure "delivery direction, requests/s".
pub const SINK_DELIVERY: &str = "sink.delivery";

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// Phase that measured it.
    pub phase: String,
    /// Stable key (`ingest.single`, `latency.500.p99`...).
    pub key: String,
    /// What it is, for the table.
    pub figure: String,
    /// The number.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Key of the sink figure it is compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_of: Option<String>,
    /// `value / that sink figure`, filled in by [`BenchReport::finish`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    /// A figure without a ratio.
    pub fn new(phase: &str, key: &str, figure: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            phase: phase.to_string(),
            key: key.to_string(),
            figure: figure.into(),
            value,
            unit: unit.to_string(),
            ratio_of: None,
            ratio: None,
        }
    }

    /// The same, compared with the sink figure `sink_key`.
    pub fn vs(mut self, sink_key: &str) -> Figure {
        self.ratio_of = Some(sink_key.to_string());
        self
    }
}

/// One correctness count; anything above 0 fails the bench.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Phase.
    pub phase: String,
    /// What was counted (`lost`, `duplicates`, `order violations`...).
    pub check: String,
    /// How many.
    pub count: u64,
}

/// The machine the bench ran on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// `df -hPT` of the directory holding the databases.
    pub disk: String,
    /// Kernel (`uname -sr`).
    pub kernel: String,
}

impl Machine {
    /// Describes this machine; `dir` is where the databases go.
    pub fn detect(dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu: field(&cpuinfo, "model name").unwrap_or_default(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
            disk: command_output("df", &["-hPT", &dir.display().to_string()])
                .and_then(|out| out.lines().nth(1).map(str::to_string))
                .unwrap_or_default(),
            kernel: command_output("uname", &["-sr"]).unwrap_or_default().trim().to_string(),
        }
    }
}

fn field(text: &str, name: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Everything a bench run produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// The options as resolved (sizes after `--smoke`).
    pub options: serde_json::Value,
    /// Figures in measuring order.
    pub figures: Vec<Figure>,
    /// Correctness counts.
    pub checks: Vec<Check>,
    /// How each phase was set up, and anything surprising.
    pub notes: Vec<String>,
    /// Wall time of the whole run, seconds.
    pub elapsed_secs: f64,
    /// No check counted anything.
    pub ok: bool,
}

impl BenchReport {
    /// Fills in the ratios and `ok`.
    pub fn finish(&mut self) {
        let sinks: Vec<(String, f64)> =
            self.figures.iter().filter(|f| f.phase == "sink").map(|f| (f.key.clone(), f.value)).collect();
        for f in &mut self.figures {
            let base = f.ratio_of.as_ref().and_then(|k| sinks.iter().find(|(key, _)| key == k));
            f.ratio = base.filter(|(_, v)| *v > 0.0).map(|(_, v)| f.value / v);
        }
        self.ok = self.checks.iter().all(|c| c.count == 0);
    }

    /// The failed checks, as `phase: check count` strings.
    pub fn failures(&self) -> Vec<String> {
        self.checks.iter().filter(|c| c.count > 0).map(|c| format!("{}: {} {}", c.phase, c.check, c.count)).collect()
    }

    /// The human-readable report: machine, figures table, checks, notes.
    pub fn render(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "machine: {} cores ({}), {} MiB memory, {}\ndisk: {}\n\n",
            m.cores, m.cpu, m.memory_mib, m.kernel, m.disk
        );
        let mut rows = vec![["phase", "figure", "value", "unit", "ratio to raw limit"].map(String::from).to_vec()];
        rows.extend(self.figures.iter().map(figure_row));
        out.push_str(&aligned(&rows, &[false, false, true, false, false]));
        out.push_str("\nchecks (each must be 0):\n");
        let mut phases: Vec<&str> = self.checks.iter().map(|c| c.phase.as_str()).collect();
        phases.dedup();
        let rows: Vec<Vec<String>> = phases
            .iter()
            .map(|p| {
                let counts: Vec<String> =
                    self.checks.iter().filter(|c| c.phase == *p).map(|c| format!("{} {}", c.check, c.count)).collect();
                vec![format!("  {p}"), counts.join(", ")]
            })
            .collect();
        out.push_str(&aligned(&rows, &[false, false]));
        out.push_str("\nnotes:\n");
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        let verdict = if self.ok { "ok" } else { "FAILED" };
        out.push_str(&format!("\nbench {verdict} in {:.1} s\n", self.elapsed_secs));
        out
    }
}

/// Renders rows as columns two spaces apart, each left- or right-aligned (`right[i]`).
fn aligned(rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths = vec![0; right.len()];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            let sep = if i == 0 { "" } else { "  " };
            if right[i] {
                line.push_str(&format!("{sep}{pad}{cell}"));
            } else {
                line.push_str(&format!("{sep}{cell}{pad}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn figure_row(f: &Figure) -> Vec<String> {
    let ratio = match (&f.ratio, &f.ratio_of) {
        (Some(r), Some(of)) => format!("{:.2} of {of}", r),
        _ => String::new(),
    };
    vec![f.phase.clone(), f.figure.clone(), format_value(f.value), f.unit.clone(), ratio]
}

/// Large numbers with thousands separators and no decimals, small ones with some.
pub fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_readable() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(999.6), "1000");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(0.456), "0.46");
        assert_eq!(format_value(3.0), "3");
    }

    #[test]
    fn ratios_and_verdict() {
        let mut report = BenchReport {
            figures: vec![
                Figure::new("sink", SINK_SINGLE, "single", 200.0, "requests/s"),
                Figure::new("ingest", "ingest.single", "single", 50.0, "events/s").vs(SINK_SINGLE),
                Figure::new("ingest", "ingest.arrays", "arrays", 50.0, "events/s").vs(SINK_ARRAYS),
            ],
            checks: vec![Check { phase: "e2e-cdr".into(), check: "lost".into(), count: 0 }],
            ..BenchReport::default()
        };
        report.finish();
        assert_eq!(report.figures[1].ratio, Some(0.25));
        assert_eq!(report.figures[2].ratio, None);
        assert!(report.ok);
        assert!(report.render().contains("0.25 of sink.single"));
    }
}
