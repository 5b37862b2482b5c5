//! An MLflow model registry as a source of versions (REST client).
