//! Fluent [`Expr`] builders for this crate's aggregates (the complexity
//! measures), as DataFusion's function crates have.

use datafusion::logical_expr::Expr;

use crate::complexity::{kdn_mean as kdn, n3 as nn};

/// `kdn_mean(label, f1, f2, ...)`: mean kDN of the minority class's rows.
pub fn kdn_mean(label: Expr, features: Vec<Expr>) -> Expr {
    kdn::kdn_mean_udaf().call([label].into_iter().chain(features).collect())
}

/// `kdn_mean_of(label, class, f1, ...)`: mean kDN of the named class's rows.
pub fn kdn_mean_of(label: Expr, class: Expr, features: Vec<Expr>) -> Expr {
    kdn::kdn_mean_of_udaf().call([label, class].into_iter().chain(features).collect())
}

/// `n3(label, f1, ...)`: the leave-one-out 1-NN error rate.
pub fn n3(label: Expr, features: Vec<Expr>) -> Expr {
    nn::n3_udaf().call([label].into_iter().chain(features).collect())
}

/// `n3_of(label, class, f1, ...)`: N3 over the named class's rows.
pub fn n3_of(label: Expr, class: Expr, features: Vec<Expr>) -> Expr {
    nn::n3_of_udaf().call([label, class].into_iter().chain(features).collect())
}
