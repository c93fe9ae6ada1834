//! Equipoise stages as DataFrame methods, for Rust users: the top floor of
//! this crate, the one module that knows every operator.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;

use crate::class_monitor::{ClassMonitorOptions, ClassMonitorStage};
use crate::detector::{DetectorOptions, TrainStage};
use crate::drift::DriftMonitorOptions;
use crate::drift::exec::DriftMonitorStage;
use crate::icost::{IcostOptions, IcostStage};
use crate::oversample::{Method, OversampleOptions, OversampleStage};
use crate::stage::{StageTable, StreamStage};

/// Equipoise stages as DataFrame methods, for Rust users.
pub trait DataFrameStageExt: Sized {
    /// Apply any stage.
    fn stage(self, stage: Arc<dyn StreamStage>) -> Result<DataFrame>;

    /// Count rows per class and track the decayed class mix; see
    /// [`crate::class_monitor`].
    fn class_monitor(self, options: ClassMonitorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(ClassMonitorStage::try_new(options)?))
    }

    /// Over-sample with any method; see [`crate::oversample`].
    fn oversample(self, method: Method, options: OversampleOptions) -> Result<DataFrame> {
        self.stage(Arc::new(OversampleStage::try_new(method, options)?))
    }

    /// Quality-controlled SMOTE; see [`crate::oversample::qc_smote`].
    fn qc_smote(self, options: OversampleOptions) -> Result<DataFrame> {
        self.oversample(Method::QcSmote, options)
    }

    /// iCost weights; see [`crate::icost`].
    fn icost(self, options: IcostOptions) -> Result<DataFrame> {
        self.stage(Arc::new(IcostStage::try_new(options)?))
    }

    /// Watch the class mix (and, with a prediction column, per-class recall,
    /// error and confusion) for drift; see [`crate::drift::monitor`].
    fn drift_monitor(self, options: DriftMonitorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(DriftMonitorStage::try_new(options)?))
    }

    /// Predict, then learn, row by row; see [`crate::detector`].
    fn train_detector(self, options: DetectorOptions) -> Result<DataFrame> {
        self.stage(Arc::new(TrainStage::try_new(options)?))
    }

    /// SMOTE as imbalanced-learn; see [`crate::oversample::smote`].
    fn smote(self, options: OversampleOptions) -> Result<DataFrame> {
        self.oversample(Method::Smote, options)
    }
}

impl DataFrameStageExt for DataFrame {
    fn stage(self, stage: Arc<dyn StreamStage>) -> Result<DataFrame> {
        let kind = stage.kind();
        let (state, plan) = self.into_parts();
        let table = StageTable::try_new(plan, stage)?;
        let plan =
            LogicalPlanBuilder::scan(kind, provider_as_source(Arc::new(table)), None)?.build()?;
        Ok(DataFrame::new(state, plan))
    }
}
