//! The figures of repeated runs: min, median, and the table that compares the targets.

use serde::Serialize;

use crate::Target;

/// One row's figures: every repetition of every target.
#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    pub unit: &'static str,
    /// Latencies: lower is better, and the ratios are inverted so that >1 means faster.
    pub lower_is_better: bool,
    pub values: Vec<(Target, Vec<f64>)>,
}

impl Row {
    pub fn runs(&self, t: Target) -> Option<&[f64]> {
        self.values
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, v)| v.as_slice())
    }

    /// The worst run: the lowest rate, or the highest latency.
    pub fn worst(&self, t: Target) -> Option<f64> {
        let v = self.runs(t)?;
        let f = if self.lower_is_better {
            f64::max
        } else {
            f64::min
        };
        v.iter().copied().reduce(f)
    }

    pub fn median(&self, t: Target) -> Option<f64> {
        median(self.runs(t)?)
    }

    /// Ours against `peer`, by medians: above 1 is better than the peer.
    pub fn ratio(&self, ours: Target, peer: Target) -> Option<f64> {
        let (a, b) = (self.median(ours)?, self.median(peer)?);
        let r = if self.lower_is_better { b / a } else { a / b };
        r.is_finite().then_some(r)
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if !s.len().is_multiple_of(2) {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// Adds one run's figure to its row, making the row on first sight.
pub fn record(
    rows: &mut Vec<Row>,
    target: Target,
    (name, unit, lower_is_better, value): crate::rows::Figure,
) {
    let row = match rows.iter_mut().position(|r| r.name == name) {
        Some(i) => &mut rows[i],
        None => {
            rows.push(Row {
                name,
                unit,
                lower_is_better,
                values: Vec::new(),
            });
            rows.last_mut().expect("just pushed")
        }
    };
    match row.values.iter_mut().find(|(t, _)| *t == target) {
        Some((_, v)) => v.push(value),
        None => row.values.push((target, vec![value])),
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The table: per target "median (worst)" over the repetitions, then iomapfs' ratios.
pub fn table(rows: &[Row], targets: &[Target]) -> String {
    let mut out = format!("{:<28} {:>7}", "row", "unit");
    for t in targets {
        out += &format!(" {:>20}", format!("{} med (worst)", t.name()));
    }
    let ratios = targets.contains(&Target::Iomapfs);
    let peers: Vec<Target> = [Target::Fuse2fs, Target::Ext4]
        .into_iter()
        .filter(|p| ratios && targets.contains(p))
        .collect();
    for p in &peers {
        out += &format!(" {:>11}", format!("vs {}", p.name()));
    }
    out.push('\n');
    for r in rows {
        let mut line = format!("{:<28} {:>7}", r.name, r.unit);
        for &t in targets {
            let cell = match (r.median(t), r.worst(t)) {
                (Some(m), Some(w)) => format!("{} ({})", num(m), num(w)),
                _ => "-".into(),
            };
            line += &format!(" {cell:>20}");
        }
        for &p in &peers {
            let cell = r
                .ratio(Target::Iomapfs, p)
                .map_or("-".into(), |x| format!("{x:.2}x"));
            line += &format!(" {cell:>11}");
        }
        out += &line;
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_worst_follow_the_direction() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let mut rows = Vec::new();
        for (t, v) in [
            (Target::Iomapfs, 10.0),
            (Target::Ext4, 20.0),
            (Target::Iomapfs, 30.0),
            (Target::Iomapfs, 20.0),
        ] {
            record(&mut rows, t, ("lat", "us", true, v));
        }
        let r = &rows[0];
        assert_eq!(r.worst(Target::Iomapfs), Some(30.0));
        // Latency: 20 us against ext4's 20 us is parity; half the latency would be 2x.
        assert_eq!(r.ratio(Target::Iomapfs, Target::Ext4), Some(1.0));
        let t = table(&rows, &[Target::Ext4, Target::Iomapfs]);
        assert!(t.contains("20.0 (30.0)"), "{t}");
        assert!(t.contains("1.00x"), "{t}");
    }
}
