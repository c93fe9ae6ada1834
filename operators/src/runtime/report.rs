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
