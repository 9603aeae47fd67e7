//! Logs of one plugin run: to `log_file_path` when the config names one
//! (its directory created, as Calico does), else to stderr; never to
//! stdout, which carries only the CNI result. Levels are Calico's
//! `log_level` (info by default).

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogLevel, NetConfig};

/// Installs the run's logger. A log file that cannot be opened falls back
/// to stderr with a line saying why: losing logs must not fail an ADD.
pub fn init(config: &NetConfig) {
    let level = match config.log_level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let Some(path) = &config.log_file_path else {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(file) => {
            let _ = builder.with_writer(Mutex::new(file)).try_init();
        }
        Err(error) => {
            let _ = builder.with_writer(std::io::stderr).try_init();
            tracing::warn!(path = %path.display(), %error, "cannot open the log file; logging to stderr");
        }
    }
}
