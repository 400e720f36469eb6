//! Plain-text summary tables printed at the end of `calls` and `receive`.

use crate::receive::ReceiverStats;
use crate::stats::{CallsSummary, KindSummary};

/// Renders a table: first column left-aligned, the others right-aligned, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        line.trim_end().to_string()
    };
    let mut out = render(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&render(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One table row of post counts.
fn kind_row(name: &str, k: &KindSummary) -> Vec<String> {
    let mut row = vec![name.to_string()];
    row.extend([k.sent, k.accepted, k.rejected, k.duplicates, k.errors].iter().map(u64::to_string));
    row
}

/// The end-of-run summary of `callsim calls`.
pub fn calls_report(s: &CallsSummary) -> String {
    let starting = s.starting.as_secs_f64();
    let rate = if starting > 0.0 { s.calls as f64 / starting } else { 0.0 };
    let mut out = format!(
        "calls: {} started in {starting:.1} s ({rate:.1} calls/s), {} finished after {:.1} s\n",
        s.calls,
        s.calls_finished,
        s.elapsed.as_secs_f64()
    );
    let scenarios: Vec<String> = s.scenarios.iter().map(|(k, v)| format!("{k} {v}")).collect();
    if !scenarios.is_empty() {
        out.push_str(&format!("scenarios: {}\n", scenarios.join(", ")));
    }
    out.push('\n');
    let headers = ["posted", "sent", "accepted", "rejected", "duplicates", "errors"];
    let rows = vec![kind_row("status events", &s.status), kind_row("CDRs", &s.cdr), kind_row("total", &s.total())];
    out.push_str(&table(&headers, &rows));
    out.push_str("\n(accepted: 2xx new; rejected: 4xx; duplicates: 2xx duplicate:true; errors: 5xx or transport)\n");
    let l = &s.latency;
    if l.count > 0 {
        out.push_str(&format!(
            "ingest latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            l.p50_ms, l.p99_ms, l.max_ms
        ));
    }
    if !s.samples.is_empty() {
        out.push_str("first problems:\n");
        for sample in &s.samples {
            out.push_str(&format!("  {sample}\n"));
        }
    }
    out
}

/// The exit summary of `callsim receive`.
pub fn receiver_report(s: &ReceiverStats) -> String {
    let row = |name: &str, n: u64| vec![name.to_string(), n.to_string()];
    let rows = vec![
        row("pushes", s.pushes),
        row("  cdr", s.cdr),
        row("  status", s.status),
        row("  other", s.other),
        row("answered 2xx", s.answered_2xx),
        row("failures injected", s.failures_injected),
        row("duplicates", s.duplicates),
        row("order violations", s.order_violations()),
        row("  backwards", s.order_backwards),
        row("  gaps", s.order_gaps),
        row("signatures ok", s.signatures_ok),
        row("bad signatures", s.bad_signatures),
        row("unsigned", s.unsigned),
        row("malformed", s.malformed),
    ];
    format!("{}\n", table(&["receiver summary", "count"], &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "count"], &[vec!["long name".into(), "7".into()]]);
        assert_eq!(t, "a          count\nlong name      7");
    }

    #[test]
    fn calls_report_has_every_column() {
        let mut s = CallsSummary::default();
        s.status.sent = 3;
        s.cdr.rejected = 1;
        let text = calls_report(&s);
        for word in ["sent", "accepted", "rejected", "duplicates", "errors", "total"] {
            assert!(text.contains(word), "{text}");
        }
        assert!(receiver_report(&ReceiverStats::default()).contains("order violations"));
    }
}
