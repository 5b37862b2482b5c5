//! A content-addressed cache of downloaded model artifacts (see `mlflow`).
