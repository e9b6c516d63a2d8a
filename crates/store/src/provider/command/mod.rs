//! The `command` provider: an external program (a KMS or HSM client) run
//! once per call, speaking one JSON object each way (or, in `raw` mode,
//! printing only a key).

mod process;
mod protocol;

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use self::process::{Finished, Invocation};
use self::protocol::{Request, Response};
use super::config::{CommandSettings, Environment};
use super::keytext::{BASE64, decode_key, local_kek};
use super::{
    CommandFailure, CommandMode, KekId, KeyOrigin, KeyProvider, LocalKek, OutputProblem,
    ProviderError, RefusalCode,
};

/// The longest message from a program's error object kept in an error.
const MAX_MESSAGE: usize = 256;

/// Runs its program for every call; holds no key between calls.
pub(crate) struct CommandProvider {
    settings: CommandSettings,
    /// The allowlisted variables that were set when the provider was opened:
    /// the program's whole environment. Values may be credentials.
    env: Vec<(String, Zeroizing<Vec<u8>>)>,
}

impl fmt::Debug for CommandProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("CommandProvider")
            .field("settings", &self.settings)
            .field("env", &names)
            .finish()
    }
}

/// `text` with control characters replaced and cut to `max` characters, for
/// messages and log lines that come from a program.
pub(crate) fn printable(text: &str, max: usize) -> String {
    text.trim_end()
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

impl CommandProvider {
    /// Captures the allowlisted variables; runs nothing yet.
    pub(crate) fn new(settings: CommandSettings, env: &dyn Environment) -> Self {
        let env = settings
            .pass_env
            .iter()
            .filter_map(|name| env.var(name).map(|value| (name.clone(), value)))
            .collect();
        Self { settings, env }
    }

    fn fail(&self, failure: CommandFailure) -> ProviderError {
        ProviderError::Command {
            program: self.settings.program.clone(),
            failure,
        }
    }

    fn bad(&self, problem: OutputProblem) -> ProviderError {
        self.fail(CommandFailure::BadOutput { problem })
    }

    fn run(&self, input: Zeroizing<Vec<u8>>) -> Result<Finished, ProviderError> {
        let invocation = Invocation {
            program: &self.settings.program,
            args: &self.settings.args,
            env: &self.env,
            timeout: self.settings.timeout,
        };
        process::run(&invocation, input).map_err(|failure| self.fail(failure))
    }

    /// Sends `request` and hands the answer to `read`, after turning an
    /// error object into its typed error. `asked` is the key the request
    /// names, if any, so `unknown_key` and `invalid_ciphertext` become
    /// [`ProviderError::UnknownKek`] and [`ProviderError::WrongKek`].
    ///
    /// A run that exits unsuccessfully is [`CommandFailure::Exited`] unless
    /// its stdout is an error object.
    fn ask<T>(
        &self,
        request: &Request<'_>,
        asked: Option<&KekId>,
        read: impl FnOnce(&Response<'_>) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let finished = self.run(request.encode())?;
        let parsed = Response::parse(&finished.stdout);
        if !finished.status.success() {
            return match parsed.as_ref().map(Response::refusal) {
                Ok(Ok(Some(refusal))) => Err(self.refused(refusal, asked)),
                _ => Err(self.fail(CommandFailure::Exited {
                    status: finished.status,
                })),
            };
        }
        let response = parsed.map_err(|problem| self.bad(problem))?;
        match response.refusal() {
            Ok(Some(refusal)) => Err(self.refused(refusal, asked)),
            Ok(None) => read(&response),
            Err(problem) => Err(self.bad(problem)),
        }
    }

    fn refused(&self, refusal: protocol::Refusal<'_>, asked: Option<&KekId>) -> ProviderError {
        match (refusal.code, asked) {
            (RefusalCode::UnknownKey, Some(kek)) => ProviderError::UnknownKek { kek: kek.clone() },
            (RefusalCode::InvalidCiphertext, Some(kek)) => {
                ProviderError::WrongKek { kek: kek.clone() }
            }
            (code, _) => self.fail(CommandFailure::Refused {
                code,
                message: printable(refusal.message, MAX_MESSAGE),
            }),
        }
    }

    /// The key a `raw` program prints, named by its hash.
    fn raw_key(&self) -> Result<LocalKek, ProviderError> {
        let finished = self.run(Zeroizing::new(Vec::new()))?;
        if !finished.status.success() {
            return Err(self.fail(CommandFailure::Exited {
                status: finished.status,
            }));
        }
        let key = decode_key(&finished.stdout, || KeyOrigin::Command {
            program: self.settings.program.clone(),
        })?;
        local_kek(None, key)
    }

    /// Key version `kek`, from `get-key` or a `raw` program. Only the
    /// `get-key` and `raw` modes hold keys locally; `wrap` mode never calls
    /// this (its wrap and unwrap go to the program), and would mean `get-key`.
    fn key(&self, kek: &KekId) -> Result<LocalKek, ProviderError> {
        match self.settings.mode {
            CommandMode::Raw => {
                let key = self.raw_key()?;
                if key.id() == kek {
                    Ok(key)
                } else {
                    // A raw program only knows its current key.
                    Err(ProviderError::UnknownKek { kek: kek.clone() })
                }
            }
            CommandMode::GetKey | CommandMode::Wrap => {
                let request = Request::GetKey {
                    key_id: kek.as_str(),
                };
                self.ask(&request, Some(kek), |response| {
                    response.key_id_is(kek).map_err(|p| self.bad(p))?;
                    let text = response.key().map_err(|p| self.bad(p))?;
                    let key = decode_key(text, || KeyOrigin::Command {
                        program: self.settings.program.clone(),
                    })?;
                    local_kek(Some(kek), key)
                })
            }
        }
    }
}

impl KeyProvider for CommandProvider {
    fn current_kek_id(&self) -> Result<KekId, ProviderError> {
        match self.settings.mode {
            CommandMode::Raw => Ok(self.raw_key()?.id().clone()),
            CommandMode::Wrap | CommandMode::GetKey => {
                self.ask(&Request::KeyId, None, |response| {
                    response.key_id().map_err(|p| self.bad(p))
                })
            }
        }
    }

    fn wrap(&self, kek: &KekId, plaintext: &[u8]) -> Result<Vec<u8>, ProviderError> {
        match self.settings.mode {
            CommandMode::Wrap => {
                let encoded = Zeroizing::new(BASE64.encode(plaintext));
                let request = Request::Wrap {
                    key_id: kek.as_str(),
                    plaintext: &encoded,
                };
                self.ask(&request, Some(kek), |response| {
                    response.ciphertext().map_err(|p| self.bad(p))
                })
            }
            CommandMode::GetKey | CommandMode::Raw => self.key(kek)?.wrap(plaintext),
        }
    }

    fn unwrap(&self, kek: &KekId, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        match self.settings.mode {
            CommandMode::Wrap => {
                let encoded = BASE64.encode(wrapped);
                let request = Request::Unwrap {
                    key_id: kek.as_str(),
                    ciphertext: &encoded,
                };
                self.ask(&request, Some(kek), |response| {
                    response.plaintext().map_err(|p| self.bad(p))
                })
            }
            CommandMode::GetKey | CommandMode::Raw => self.key(kek)?.unwrap(wrapped),
        }
    }
}
