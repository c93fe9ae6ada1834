//! Fluent [`Expr`] builders for this crate's aggregates, as DataFusion's
//! function crates have: `df.aggregate(vec![], vec![gmean(col("label"),
//! col("prediction"))])` instead of SQL text.

use datafusion::logical_expr::Expr;

use crate::{
    balanced_accuracy, c2_imbalance, class_counts, cohen_kappa, f1_of, gmean as gmean_fn,
    imbalance_ratio, macro_f1, mcc, pr_auc, precision_of, recall_of, roc_auc, specificity_of,
};

/// `gmean(label, prediction)`.
pub fn gmean(label: Expr, prediction: Expr) -> Expr {
    gmean_fn::gmean_udaf().call(vec![label, prediction])
}

/// `balanced_accuracy(label, prediction)`.
pub fn balanced_accuracy(label: Expr, prediction: Expr) -> Expr {
    balanced_accuracy::balanced_accuracy_udaf().call(vec![label, prediction])
}

/// `macro_f1(label, prediction)`.
pub fn macro_f1(label: Expr, prediction: Expr) -> Expr {
    macro_f1::macro_f1_udaf().call(vec![label, prediction])
}

/// `mcc(label, prediction)`.
pub fn mcc(label: Expr, prediction: Expr) -> Expr {
    mcc::mcc_udaf().call(vec![label, prediction])
}

/// `cohen_kappa(label, prediction)`.
pub fn cohen_kappa(label: Expr, prediction: Expr) -> Expr {
    cohen_kappa::cohen_kappa_udaf().call(vec![label, prediction])
}

/// `recall_of(label, prediction, class)`.
pub fn recall_of(label: Expr, prediction: Expr, class: Expr) -> Expr {
    recall_of::recall_of_udaf().call(vec![label, prediction, class])
}

/// `precision_of(label, prediction, class)`.
pub fn precision_of(label: Expr, prediction: Expr, class: Expr) -> Expr {
    precision_of::precision_of_udaf().call(vec![label, prediction, class])
}

/// `f1_of(label, prediction, class)`.
pub fn f1_of(label: Expr, prediction: Expr, class: Expr) -> Expr {
    f1_of::f1_of_udaf().call(vec![label, prediction, class])
}

/// `specificity_of(label, prediction, class)`.
pub fn specificity_of(label: Expr, prediction: Expr, class: Expr) -> Expr {
    specificity_of::specificity_of_udaf().call(vec![label, prediction, class])
}

/// `imbalance_ratio(label)`.
pub fn imbalance_ratio(label: Expr) -> Expr {
    imbalance_ratio::imbalance_ratio_udaf().call(vec![label])
}

/// `class_counts(label)`.
pub fn class_counts(label: Expr) -> Expr {
    class_counts::class_counts_udaf().call(vec![label])
}

/// `c2_imbalance(label)`.
pub fn c2_imbalance(label: Expr) -> Expr {
    c2_imbalance::c2_imbalance_udaf().call(vec![label])
}

/// `roc_auc(label, score [, positive])`: `positive` defaults to 1.
pub fn roc_auc(label: Expr, score: Expr, positive: Option<Expr>) -> Expr {
    roc_auc::roc_auc_udaf().call([label, score].into_iter().chain(positive).collect())
}

/// `pr_auc(label, score [, positive])`: `positive` defaults to 1.
pub fn pr_auc(label: Expr, score: Expr, positive: Option<Expr>) -> Expr {
    pr_auc::pr_auc_udaf().call([label, score].into_iter().chain(positive).collect())
}
