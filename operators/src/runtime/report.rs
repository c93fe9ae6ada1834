//! Typed figures that operators report about their run, for the job's
//! summary: what a metric family would only give back as label strings.

use std::collections::BTreeMap;
use std::sync::Mutex;

use datafusion::common::Result;

use crate::class_label::ClassValue;
use crate::sync::lock;

/// What one operator has reported so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorReport {
    /// Synthetic rows made, per class (oversamplers), in first-made order.
    pub synthetic_rows: Vec<(ClassValue, u64)>,
    /// Version of the model serving predictions (detectors).
    pub model_version: Option<u64>,
    /// The comparison of a detector's variants, when it trains several.
    pub advisor: Option<AdvisorReport>,
}

/// One variant of a detector over a stretch of rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VariantScore {
    pub variant: String,
    pub learns_synthetic: bool,
    /// The advisor's metric.
    pub score: Option<f64>,
    pub gmean: Option<f64>,
    pub minority_recall: Option<f64>,
    /// Rows it served as the champion (whole run only).
    pub champion_rows: u64,
}

/// Rows between two champion changes or drifts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdvisorSegment {
    /// Index of the segment's first original labelled row (from 0).
    pub first_row: u64,
    pub rows: u64,
    pub champion: String,
    pub variants: Vec<VariantScore>,
}

impl AdvisorSegment {
    /// The best variant that learns synthetic rows minus the best that
    /// does not, on G-mean; None unless both kinds were scored.
    pub fn synthesis_gain(&self) -> Option<f64> {
        let best = |synthetic: bool| {
            self.variants
                .iter()
                .filter(|v| v.learns_synthetic == synthetic)
                .filter_map(|v| v.gmean)
                .reduce(f64::max)
        };
        Some(best(true)? - best(false)?)
    }
}

/// What a detector's advisor found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdvisorReport {
    pub metric: String,
    pub champion: String,
    pub changes: u64,
    /// Each variant over the whole run.
    pub variants: Vec<VariantScore>,
    pub segments: Vec<AdvisorSegment>,
}

impl AdvisorReport {
    /// The summary's lines: one per variant, then one per segment.
    pub fn lines(&self) -> Vec<String> {
        let figure = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        let mut lines = vec![format!(
            "advisor: champion {} after {} change(s), judged on {}",
            self.champion, self.changes, self.metric
        )];
        for v in &self.variants {
            lines.push(format!(
                "  variant {}: G-mean {}, minority recall {}, champion for {} rows",
                v.variant,
                figure(v.gmean),
                figure(v.minority_recall),
                v.champion_rows
            ));
        }
        for segment in &self.segments {
            let last = (segment.first_row + segment.rows).saturating_sub(1);
            let verdict = match segment.synthesis_gain() {
                Some(gain) if gain > 0.0 => format!("synthesis helped, by {gain:.3} G-mean"),
                Some(gain) => format!("synthesis did not help, by {:.3} G-mean", -gain),
                None => "no synthesis variant to compare".to_string(),
            };
            lines.push(format!(
                "  rows {}-{last} (champion {}): {verdict}",
                segment.first_row, segment.champion
            ));
        }
        lines
    }
}

impl OperatorReport {
    /// Count `n` more synthetic rows of `class`.
    pub fn add_synthetic(&mut self, class: &ClassValue, n: u64) {
        match self.synthetic_rows.iter_mut().find(|(c, _)| c == class) {
            Some((_, total)) => *total += n,
            None => self.synthetic_rows.push((class.clone(), n)),
        }
    }
}

/// Every operator's report, by operator id.
#[derive(Debug, Default)]
pub struct RunReport {
    operators: Mutex<BTreeMap<String, OperatorReport>>,
}

impl RunReport {
    /// Change the report of `operator_id`.
    pub fn update(
        &self,
        operator_id: &str,
        change: impl FnOnce(&mut OperatorReport),
    ) -> Result<()> {
        let mut operators = lock(&self.operators)?;
        match operators.get_mut(operator_id) {
            Some(report) => change(report),
            None => {
                let mut report = OperatorReport::default();
                change(&mut report);
                operators.insert(operator_id.to_string(), report);
            }
        }
        Ok(())
    }

    /// Every report, by operator id.
    pub fn operators(&self) -> Result<BTreeMap<String, OperatorReport>> {
        Ok(lock(&self.operators)?.clone())
    }
}
