use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "ONNX Runtime library not found; looked in: {}. Run scripts/setup.sh (it installs onnxruntime into .venv) or set ORT_DYLIB_PATH to libonnxruntime.so",
        looked_in.join(", ")
    )]
    RuntimeMissing { looked_in: Vec<String> },
    /// The runtime could not be loaded (the first attempt's message, repeated on later calls).
    #[error("{0}")]
    Runtime(String),
    #[error("cannot load the ONNX Runtime library {path}: {message}")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("model file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("model {model} ({path}): ONNX Runtime cannot create a session: {message}")]
    Session {
        model: String,
        path: PathBuf,
        message: String,
    },
    #[error("model {model} ({path}) does not fit the {adapter} adapter: {message}")]
    Mismatch {
        model: String,
        path: PathBuf,
        adapter: &'static str,
        message: String,
    },
    #[error("model {model}: head {head}: {message}")]
    Head {
        model: String,
        head: &'static str,
        message: String,
    },
    #[error("model {model}: inference failed: {message}")]
    Run { model: String, message: String },
    #[error("model {model}: {message}")]
    Config { model: String, message: String },
    #[error("model {0} is not loaded")]
    NotLoaded(String),
    #[error("model {0} is not in the pipeline")]
    Unknown(String),
}
