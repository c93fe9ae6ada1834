//! What the three generic aggregate wrappers (`ConfusionMetricUdf`,
//! `ClassStatisticUdf`, `ScoreMetricUdf`) share: their trait boilerplate and
//! the list-encoded partial state.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::Field;
use datafusion::common::Result;

/// One list column per state column: group `g` owns the values between
/// `offsets[g]` and `offsets[g + 1]` of every column.
pub(crate) fn list_state(
    offsets: &OffsetBuffer<i32>,
    columns: Vec<ArrayRef>,
) -> Result<Vec<ArrayRef>> {
    columns
        .into_iter()
        .map(|values| -> Result<ArrayRef> {
            let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
            Ok(Arc::new(ListArray::try_new(
                field,
                offsets.clone(),
                values,
                None,
            )?))
        })
        .collect()
}

/// Debug, equality, hashing, `Default` (a user-defined signature, since each
/// wrapper coerces its own arguments) and `udaf()` for a wrapper
/// `$udf<$param: $bound>` with fields `signature` and `marker`.
macro_rules! generic_udf_boilerplate {
    ($udf:ident, $bound:ident) => {
        impl<P> std::fmt::Debug for $udf<P> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($udf)).finish_non_exhaustive()
            }
        }

        impl<P> PartialEq for $udf<P> {
            fn eq(&self, other: &Self) -> bool {
                self.signature == other.signature
            }
        }

        impl<P> Eq for $udf<P> {}

        impl<P> std::hash::Hash for $udf<P> {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.signature.hash(state);
            }
        }

        impl<P: $bound> Default for $udf<P> {
            fn default() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::user_defined(
                        datafusion::logical_expr::Volatility::Immutable,
                    ),
                    marker: std::marker::PhantomData,
                }
            }
        }

        impl<P: $bound> $udf<P> {
            pub fn udaf() -> std::sync::Arc<datafusion::logical_expr::AggregateUDF> {
                std::sync::Arc::new(datafusion::logical_expr::AggregateUDF::from(Self::default()))
            }
        }
    };
}

pub(crate) use generic_udf_boilerplate;
