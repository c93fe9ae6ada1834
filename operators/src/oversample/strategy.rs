//! How many synthetic rows each class gets: imbalanced-learn's
//! `sampling_strategy` for over-samplers, on exact counts (bounded input)
//! and on time-decayed counts (streams).

use datafusion::common::{Result, plan_err};

use crate::class_label::ClassValue;

/// imbalanced-learn's `sampling_strategy`, over-sampling forms.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplingStrategy {
    /// Every class but the majority raised to the majority count (`'auto'`,
    /// `'not majority'`).
    NotMajority,
    /// Only the smallest class raised to the majority count.
    Minority,
    /// Every class but the smallest raised to the majority count.
    NotMinority,
    /// Every class raised to the majority count (the majority gets 0).
    All,
    /// Binary only: the minority raised to `ratio` x the majority count.
    Ratio(f64),
    /// Class sizes to reach, by class (bounded input only).
    Targets(Vec<(String, u64)>),
}

impl SamplingStrategy {
    pub fn parse(function: &str, strategy: Option<&str>, ratio: Option<f64>) -> Result<Self> {
        match (strategy, ratio) {
            (Some(_), Some(_)) => {
                plan_err!("{function}: give either strategy or ratio, not both")
            }
            (None, Some(r)) if r.is_finite() && r > 0.0 => Ok(Self::Ratio(r)),
            (None, Some(r)) => plan_err!("{function}: ratio must be a positive number, got {r}"),
            (None, None) => Ok(Self::NotMajority),
            (Some(s), None) => match s.trim().to_ascii_lowercase().replace('_', " ").as_str() {
                "auto" | "not majority" => Ok(Self::NotMajority),
                "minority" => Ok(Self::Minority),
                "not minority" => Ok(Self::NotMinority),
                "all" => Ok(Self::All),
                "majority" => plan_err!(
                    "{function}: strategy 'majority' would over-sample the largest class; \
                     use auto, minority, not_minority or all"
                ),
                other => plan_err!(
                    "{function}: unknown strategy '{other}'; use auto, minority, not_minority, \
                     all, or ratio=R or targets='class:count ...'"
                ),
            },
        }
    }

    /// Parse `targets='1:500 2:300'`.
    pub fn parse_targets(function: &str, text: &str) -> Result<Self> {
        let mut targets = Vec::new();
        for pair in text.split_whitespace() {
            let Some((class, count)) = pair.rsplit_once(':') else {
                return plan_err!("{function}: target '{pair}' is not of the form class:count");
            };
            let Ok(count) = count.parse::<u64>() else {
                return plan_err!("{function}: target count '{count}' is not a whole number");
            };
            targets.push((class.to_string(), count));
        }
        if targets.is_empty() {
            return plan_err!("{function}: targets is empty");
        }
        Ok(Self::Targets(targets))
    }

    /// Rows to add per class on bounded input, exactly as imbalanced-learn
    /// computes them; `counts` are the class sizes, in any order. Errors
    /// are those imbalanced-learn raises, as plan-style messages.
    pub fn bounded_amounts(
        &self,
        function: &str,
        counts: &[(ClassValue, u64)],
    ) -> Result<Vec<u64>> {
        if counts.len() < 2 {
            let found = counts
                .first()
                .map(|(c, _)| format!("only class '{c}'"))
                .unwrap_or_else(|| "no labelled rows".to_string());
            return plan_err!(
                "{function}: the label column has {found}; over-sampling needs at least two classes"
            );
        }
        let majority = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let minority = counts.iter().map(|(_, n)| *n).min().unwrap_or(0);
        // imbalanced-learn picks the first class in sorted order among equal
        // extremes; our classes are sorted the same way.
        let mut sorted: Vec<usize> = (0..counts.len()).collect();
        sorted.sort_by(|&a, &b| counts[a].0.cmp(&counts[b].0));
        let majority_class = sorted.iter().copied().find(|&i| counts[i].1 == majority);
        let minority_class = sorted.iter().copied().find(|&i| counts[i].1 == minority);
        let raise = |i: usize| majority - counts[i].1;
        Ok(match self {
            Self::NotMajority => (0..counts.len())
                .map(|i| {
                    if Some(i) == majority_class {
                        0
                    } else {
                        raise(i)
                    }
                })
                .collect(),
            Self::Minority => (0..counts.len())
                .map(|i| {
                    if Some(i) == minority_class {
                        raise(i)
                    } else {
                        0
                    }
                })
                .collect(),
            Self::NotMinority => (0..counts.len())
                .map(|i| {
                    if Some(i) == minority_class {
                        0
                    } else {
                        raise(i)
                    }
                })
                .collect(),
            Self::All => (0..counts.len()).map(raise).collect(),
            Self::Ratio(ratio) => {
                if counts.len() != 2 {
                    return plan_err!(
                        "{function}: ratio applies to two classes only, the label column has {}; \
                         use strategy or targets",
                        counts.len()
                    );
                }
                let (Some(maj), Some(min)) = (majority_class, minority_class) else {
                    return plan_err!("{function}: no classes");
                };
                let maj = if maj == min { 1 - min } else { maj };
                // int(ratio * N_majority - N_minority), truncated like Python.
                let wanted = (ratio * counts[maj].1 as f64 - counts[min].1 as f64).trunc();
                if wanted < 0.0 {
                    return plan_err!(
                        "{function}: ratio={ratio} asks for fewer minority rows than there are \
                         ({} of class '{}' against {} of class '{}')",
                        counts[min].1,
                        counts[min].0,
                        counts[maj].1,
                        counts[maj].0
                    );
                }
                let mut amounts = vec![0; 2];
                amounts[min] = wanted as u64;
                amounts
            }
            Self::Targets(targets) => {
                let mut amounts = vec![0; counts.len()];
                for (class, target) in targets {
                    let Some(i) = counts.iter().position(|(c, _)| &c.to_string() == class) else {
                        return plan_err!("{function}: target class '{class}' does not occur");
                    };
                    if *target < counts[i].1 {
                        return plan_err!(
                            "{function}: target {target} for class '{class}' is below its {} rows; \
                             over-sampling cannot remove rows",
                            counts[i].1
                        );
                    }
                    amounts[i] = target - counts[i].1;
                }
                amounts
            }
        })
    }

    /// Synthetic rows per labelled input row that move a stream with the
    /// decayed class weights `weights` to the target mix; classes with zero
    /// weight get 0. Per-class targets are refused earlier for streams.
    pub fn stream_rates(&self, weights: &[f64]) -> Vec<f64> {
        let total: f64 = weights.iter().sum();
        let live = || weights.iter().copied().filter(|w| *w > 0.0);
        if total <= 0.0 || live().count() < 2 {
            return vec![0.0; weights.len()];
        }
        let majority = live().fold(0.0f64, f64::max);
        let minority = live().fold(f64::INFINITY, f64::min);
        let majority_slot = weights.iter().position(|w| *w == majority);
        let minority_slot = weights.iter().position(|w| *w == minority);
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                if w <= 0.0 {
                    return 0.0;
                }
                let target = match self {
                    Self::NotMajority if Some(i) != majority_slot => majority,
                    Self::Minority if Some(i) == minority_slot => majority,
                    Self::NotMinority if Some(i) != minority_slot => majority,
                    Self::All => majority,
                    Self::Ratio(r) if Some(i) == minority_slot && weights.len() == 2 => {
                        r * majority
                    }
                    _ => w,
                };
                (target - w).max(0.0) / total
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(i64, u64)]) -> Vec<(ClassValue, u64)> {
        pairs
            .iter()
            .map(|&(c, n)| (ClassValue::Int(c), n))
            .collect()
    }

    #[test]
    fn imbalanced_learn_amounts() -> Result<()> {
        let c = counts(&[(0, 100), (1, 10), (2, 40)]);
        let f = "smote";
        assert_eq!(
            SamplingStrategy::NotMajority.bounded_amounts(f, &c)?,
            [0, 90, 60]
        );
        assert_eq!(
            SamplingStrategy::Minority.bounded_amounts(f, &c)?,
            [0, 90, 0]
        );
        assert_eq!(
            SamplingStrategy::NotMinority.bounded_amounts(f, &c)?,
            [0, 0, 60]
        );
        assert_eq!(SamplingStrategy::All.bounded_amounts(f, &c)?, [0, 90, 60]);
        let b = counts(&[(0, 97), (1, 13)]);
        // int(0.5 * 97 - 13) = int(35.5) = 35
        assert_eq!(
            SamplingStrategy::Ratio(0.5).bounded_amounts(f, &b)?,
            [0, 35]
        );
        assert!(SamplingStrategy::Ratio(0.1).bounded_amounts(f, &b).is_err());
        assert!(SamplingStrategy::Ratio(0.5).bounded_amounts(f, &c).is_err());
        let t = SamplingStrategy::parse_targets(f, "1:50 2:40")?;
        assert_eq!(t.bounded_amounts(f, &c)?, [0, 40, 0]);
        assert!(
            SamplingStrategy::parse_targets(f, "1:5")
                .and_then(|t| t.bounded_amounts(f, &c))
                .is_err()
        );
        assert!(
            SamplingStrategy::parse_targets(f, "7:500")
                .and_then(|t| t.bounded_amounts(f, &c))
                .is_err()
        );
        assert!(
            SamplingStrategy::NotMajority
                .bounded_amounts(f, &counts(&[(1, 5)]))
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn stream_rates_balance_the_output_mix() {
        // 90% / 10%: the minority needs 0.8 synthetic rows per input row.
        let rates = SamplingStrategy::NotMajority.stream_rates(&[90.0, 10.0]);
        assert!((rates[0]).abs() < 1e-12 && (rates[1] - 0.8).abs() < 1e-12);
        let half = SamplingStrategy::Ratio(0.5).stream_rates(&[90.0, 10.0]);
        assert!((half[1] - 0.35).abs() < 1e-12);
        assert_eq!(SamplingStrategy::All.stream_rates(&[5.0, 0.0]), [0.0, 0.0]);
    }

    #[test]
    fn strategy_names() -> Result<()> {
        let p = |s: &str| SamplingStrategy::parse("f", Some(s), None);
        assert_eq!(p("not_majority")?, SamplingStrategy::NotMajority);
        assert_eq!(p("Not Minority")?, SamplingStrategy::NotMinority);
        assert!(p("majority").is_err());
        assert!(p("most").is_err());
        assert!(SamplingStrategy::parse("f", None, Some(-1.0)).is_err());
        Ok(())
    }
}
