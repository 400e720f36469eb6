//! `--against DIR`: the selected phases run alternately with two builds of the pushers, round
//! after round, so that two versions can be compared on a machine whose speed drifts from
//! one minute to the next (a shared VM): each round runs every phase with the first build,
//! then at once with the second, and each figure is reported side by side.

use serde::Serialize;

use super::report::BenchReport;

/// One figure of both builds, one value per round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Compared {
    /// Stable key (`e2e-status.delivered`...).
    pub key: String,
    /// What it is.
    pub figure: String,
    /// Its unit.
    pub unit: String,
    /// The first build's values (`--bin-dir`).
    pub first: Vec<f64>,
    /// The second build's values (`--against`).
    pub second: Vec<f64>,
}

impl Compared {
    /// Rounds in which the second build's value was the higher one (whether higher is better
    /// depends on the figure: a rate, or a latency).
    pub fn second_higher(&self) -> usize {
        self.first.iter().zip(&self.second).filter(|(a, b)| b > a).count()
    }
}

/// Every round's two reports, and each figure of both builds.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// `[first build, second build]` per round, in running order.
    pub rounds: Vec<[BenchReport; 2]>,
    /// Figures measured in every report, in measuring order.
    pub figures: Vec<Compared>,
    /// No correctness check counted anything in any report.
    pub ok: bool,
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

impl Comparison {
    /// Lines up the rounds' figures: those measured in every report, in measuring order.
    pub fn new(rounds: Vec<[BenchReport; 2]>) -> Self {
        let value = |report: &BenchReport, key: &str| report.figures.iter().find(|f| f.key == key).map(|f| f.value);
        let side =
            |key: &str, side: usize| -> Option<Vec<f64>> { rounds.iter().map(|r| value(&r[side], key)).collect() };
        let head = rounds.first().map(|[first, _]| first.figures.as_slice()).unwrap_or_default();
        let figures = head
            .iter()
            .filter_map(|f| {
                let (first, second) = (side(&f.key, 0)?, side(&f.key, 1)?);
                Some(Compared { key: f.key.clone(), figure: f.figure.clone(), unit: f.unit.clone(), first, second })
            })
            .collect();
        let ok = rounds.iter().flatten().all(|r| r.ok);
        Comparison { rounds, figures, ok }
    }

    /// Checks that failed, in any report, with the build they came from.
    pub fn failures(&self) -> Vec<String> {
        let sides = self.rounds.iter().flat_map(|[a, b]| [("first", a), ("second", b)]);
        sides.flat_map(|(side, r)| r.failures().into_iter().map(move |f| format!("{side} build: {f}"))).collect()
    }

    /// The side-by-side table, means over the rounds.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} rounds, each running the phases with the first build (--bin-dir), then the second (--against)\n\n",
            self.rounds.len()
        );
        out += &format!(
            "{:<55} {:>12} {:>12} {:>8}  {:<12} {}\n",
            "figure", "first", "second", "2nd/1st", "unit", "second higher in"
        );
        for f in &self.figures {
            let (a, b) = (mean(&f.first), mean(&f.second));
            let ratio = if a == 0.0 { "-".to_string() } else { format!("{:.3}", b / a) };
            out += &format!(
                "{:<55} {:>12.2} {:>12.2} {:>8}  {:<12} {} of {}\n",
                f.key,
                a,
                b,
                ratio,
                f.unit,
                f.second_higher(),
                f.first.len()
            );
        }
        out += &format!("\ncorrectness checks: {}\n", if self.ok { "all 0" } else { "FAILED" });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Check, Figure};

    fn report(values: &[(&str, f64)], failed: u64) -> BenchReport {
        let figures = values
            .iter()
            .map(|(key, value)| Figure {
                phase: "e2e-cdr".into(),
                key: (*key).into(),
                figure: format!("figure {key}"),
                value: *value,
                unit: "events/s".into(),
                ratio_of: None,
                ratio: None,
            })
            .collect();
        let checks = vec![Check { phase: "e2e-cdr".into(), check: "lost".into(), count: failed }];
        let mut report = BenchReport { figures, checks, ..BenchReport::default() };
        report.finish();
        report
    }

    #[test]
    fn figures_of_both_builds_line_up_round_by_round() {
        let cmp = Comparison::new(vec![
            [report(&[("a", 10.0), ("b", 1.0)], 0), report(&[("a", 12.0), ("b", 1.0)], 0)],
            [report(&[("a", 20.0), ("b", 2.0)], 0), report(&[("a", 18.0), ("b", 3.0), ("c", 5.0)], 0)],
        ]);
        assert_eq!(cmp.figures.len(), 2, "a figure missing from a report is left out: {:?}", cmp.figures);
        assert_eq!(cmp.figures[0].first, [10.0, 20.0]);
        assert_eq!(cmp.figures[0].second, [12.0, 18.0]);
        assert_eq!(cmp.figures[0].second_higher(), 1);
        assert_eq!(cmp.figures[1].second_higher(), 1, "equal is not higher");
        assert!(cmp.ok);
        let table = cmp.render();
        assert!(table.contains("2 rounds"), "{table}");
        assert!(table.lines().any(|l| l.starts_with("a ") && l.contains("15.00") && l.contains("1 of 2")), "{table}");
    }

    #[test]
    fn a_failed_check_in_either_build_fails_the_comparison() {
        let cmp = Comparison::new(vec![[report(&[("a", 1.0)], 0), report(&[("a", 1.0)], 3)]]);
        assert!(!cmp.ok);
        assert_eq!(cmp.failures(), ["second build: e2e-cdr: lost 3"]);
    }
}
