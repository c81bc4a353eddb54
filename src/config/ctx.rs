//! The validation context: where the file's mistakes and warnings are
//! collected with their positions, and the helpers every section's checks
//! share (interpolation, durations).

use std::time::Duration;

use super::diagnostics::ConfigError;
use super::interp::{EnvLookup, InterpError, interpolate};
use super::raw::S;
use super::units::parse_duration;

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) env: EnvLookup<'a>,
    pub(super) errors: Vec<ConfigError>,
    /// What is valid but probably not what the user meant.
    pub(super) warnings: Vec<ConfigError>,
}

impl Ctx<'_> {
    pub(super) fn err<T>(&mut self, at: &S<T>, message: impl Into<String>, hint: Option<String>) {
        self.err_at(at.referenced.line(), at.referenced.column(), message, hint);
    }

    /// Records a warning at `at`: the config is valid, but `check` says so.
    pub(super) fn warn<T>(&mut self, at: &S<T>, message: impl Into<String>, hint: Option<String>) {
        self.warnings.push(ConfigError {
            file: self.file.to_owned(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message: message.into(),
            hint,
        });
    }

    pub(super) fn err_at(
        &mut self,
        line: u64,
        column: u64,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    /// Interpolates `${VAR}` / `${VAR:-default}` in a string value.
    pub(super) fn interp(&mut self, s: &S<String>, what: &str) -> Option<String> {
        match interpolate(&s.value, self.env) {
            Ok(v) => Some(v),
            Err(InterpError::Unset(var)) => {
                self.err(
                    s,
                    format!("{what}: environment variable `{var}` is not set"),
                    Some(format!(
                        "export {var}=..., or give a default: `${{{var}:-default}}`"
                    )),
                );
                None
            }
            Err(InterpError::Malformed(why)) => {
                self.err(
                    s,
                    format!("{what}: {why}"),
                    Some("write `${VAR}` or `${VAR:-default}`; `$$` is a literal `$`".into()),
                );
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        s: &Option<S<String>>,
        what: &str,
        default: Duration,
    ) -> Duration {
        let Some(s) = s else { return default };
        let Some(text) = self.interp(s, what) else {
            return default;
        };
        match parse_duration(&text) {
            Ok(d) => d,
            Err(e) => {
                self.err(
                    s,
                    format!("{what}: {e}"),
                    Some("durations look like `500ms`, `2s`, `5m`, `24h` or `7d`".into()),
                );
                default
            }
        }
    }
}
