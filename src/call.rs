//! What a call carries besides its arguments, from the protocol edge down to the engines:
//! who is calling, how to report progress and logs, and how it is stopped (cancellation or
//! its time limit).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogLevel};
use crate::error::{Code, EbpfError};
use crate::security::audit::Caller;

/// Something a running tool tells its caller before it finishes.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    Log {
        level: LogLevel,
        message: String,
    },
    Progress {
        progress: f64,
        total: Option<f64>,
        message: String,
    },
}

type EventSink = Arc<dyn Fn(ToolEvent) + Send + Sync>;

/// What a tool gets besides its arguments: a way to report and a way to be stopped.
#[derive(Clone)]
pub struct CallContext {
    /// The configuration the whole call works with: one snapshot taken as it starts, so a
    /// reload never mixes old and new values inside one call.
    pub config: Arc<Config>,
    pub cancel: CancellationToken,
    /// Who is calling: background work (trace sessions) belongs to it.
    pub owner: String,
    /// Who is calling, as the audit log records it.
    pub caller: Caller,
    events: EventSink,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("cancelled", &self.cancel.is_cancelled())
            .finish()
    }
}

impl CallContext {
    pub fn new(
        config: Arc<Config>,
        cancel: CancellationToken,
        owner: impl Into<String>,
        events: impl Fn(ToolEvent) + Send + Sync + 'static,
    ) -> Self {
        Self {
            config,
            cancel,
            owner: owner.into(),
            caller: Caller::default(),
            events: Arc::new(events),
        }
    }

    #[must_use]
    pub fn with_caller(mut self, caller: Caller) -> Self {
        self.caller = caller;
        self
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        (self.events)(ToolEvent::Log {
            level,
            message: message.into(),
        });
    }

    /// `Err(CANCELLED)` once the call is cancelled or out of time: long loops call this
    /// so that a call nobody waits for stops using CPU.
    pub fn check_cancelled(&self, tool: &str) -> Result<(), EbpfError> {
        if self.cancel.is_cancelled() {
            return Err(EbpfError::new(
                Code::Cancelled,
                format!("`{tool}` was cancelled or ran out of time"),
            ));
        }
        Ok(())
    }

    pub fn progress(&self, progress: f64, total: Option<f64>, message: impl Into<String>) {
        (self.events)(ToolEvent::Progress {
            progress,
            total,
            message: message.into(),
        });
    }
}
