//! The scores every confusion matrix of Equipoise is judged by, as plain
//! functions of counts and recalls: the SQL aggregates, the operators'
//! prequential scores and a job's summary all compute them here, so one
//! formula gives one value everywhere.

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
pub fn divide_or_zero(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// Geometric mean of `recalls`, as `scipy.stats.gmean` (exp of the mean
/// log, summed in the order given); 0 when any recall is 0; `None` for no
/// recalls.
pub fn gmean(recalls: &[f64]) -> Option<f64> {
    if recalls.is_empty() {
        return None;
    }
    if recalls.contains(&0.0) {
        return Some(0.0);
    }
    let mean_log = recalls.iter().map(|r| r.ln()).sum::<f64>() / recalls.len() as f64;
    Some(mean_log.exp())
}

/// Mean of `recalls` (balanced accuracy); `None` for no recalls.
pub fn mean(recalls: &[f64]) -> Option<f64> {
    (!recalls.is_empty()).then(|| recalls.iter().sum::<f64>() / recalls.len() as f64)
}

/// F1 from precision and recall: their harmonic mean, 0 when both are 0.
pub fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_recall_gives_zero_and_no_recall_none() {
        assert_eq!(gmean(&[]), None);
        assert_eq!(gmean(&[0.5, 0.0]).map(f64::to_bits), Some(0.0f64.to_bits()));
        let v = gmean(&[0.75, 0.5]).unwrap_or(f64::NAN);
        assert!((v - 0.375f64.sqrt()).abs() < 1e-15);
        assert_eq!(mean(&[0.75, 0.25]), Some(0.5));
        assert_eq!(f1(0.0, 0.0), 0.0);
        assert_eq!(divide_or_zero(1.0, 0.0), 0.0);
    }
}
