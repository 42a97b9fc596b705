//! The tool's error type: a context plus a message, printed as `novafs: <context>: <error>`.

use std::fmt::{self, Display};
use std::io;

/// An error that ends the command with exit status 1.
#[derive(Debug)]
pub struct CliError {
    context: String,
    message: String,
    /// Exit without printing anything (stdout was closed under us, e.g. `| head`).
    quiet: bool,
}

/// Result alias for commands.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An error with a context and any displayable cause.
    pub fn new(context: impl Into<String>, cause: impl Display) -> CliError {
        CliError {
            context: context.into(),
            message: cause.to_string(),
            quiet: false,
        }
    }

    /// An error writing to stdout: silent when the reader went away (broken pipe).
    pub fn stdout(e: io::Error) -> CliError {
        CliError {
            quiet: e.kind() == io::ErrorKind::BrokenPipe,
            ..CliError::new("writing to stdout", e)
        }
    }

    /// Whether nothing should be printed.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }
}

impl Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.context, self.message)
        }
    }
}

/// Attach a context to any displayable error.
pub trait Context<T> {
    /// Wrap the error with a fixed context.
    fn context(self, context: impl Into<String>) -> CliResult<T>;
    /// Wrap the error with a lazily built context.
    fn with_context(self, f: impl FnOnce() -> String) -> CliResult<T>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> CliResult<T> {
        self.map_err(|e| CliError::new(context, e))
    }
    fn with_context(self, f: impl FnOnce() -> String) -> CliResult<T> {
        self.map_err(|e| CliError::new(f(), e))
    }
}
