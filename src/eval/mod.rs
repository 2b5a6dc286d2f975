//! Evaluation: weighted kNN on features (offline and as a dense monitor during pre-training).

pub mod attention;
pub mod features;
pub mod knn;
pub mod lincls;
pub mod monitor;
