//! `cause(r)`: a facade result or error with its typed cause (`novafs::EngineError`) as the
//! error, so that tests match on variants (`matches!(cause(fs.metadata(p)), Err(Error::NotFound))`)
//! whether the call is the facade's (errors with context) or the engine's.

use novafs::EngineError;

/// What `cause` accepts.
pub trait Cause {
    /// The same with `EngineError` for the error.
    type Out;
    /// Drops the context, keeps the typed cause.
    fn cause(self) -> Self::Out;
}

impl<T> Cause for Result<T, novafs::Error> {
    type Out = Result<T, EngineError>;
    fn cause(self) -> Self::Out {
        self.map_err(novafs::Error::into_engine_error)
    }
}

impl<T> Cause for Result<T, EngineError> {
    type Out = Result<T, EngineError>;
    fn cause(self) -> Self::Out {
        self
    }
}

impl Cause for novafs::Error {
    type Out = EngineError;
    fn cause(self) -> EngineError {
        self.into_engine_error()
    }
}

impl Cause for EngineError {
    type Out = EngineError;
    fn cause(self) -> EngineError {
        self
    }
}

impl<'a, T> Cause for &'a Result<T, novafs::Error> {
    type Out = Result<&'a T, &'a EngineError>;
    fn cause(self) -> Self::Out {
        self.as_ref().map_err(novafs::Error::engine_error)
    }
}

impl<'a> Cause for &'a novafs::Error {
    type Out = &'a EngineError;
    fn cause(self) -> &'a EngineError {
        self.engine_error()
    }
}

/// `r` with its typed cause as the error (`&r`: borrowed).
pub fn cause<R: Cause>(r: R) -> R::Out {
    r.cause()
}
