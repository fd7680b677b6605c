//! `xvs import`: keepalived's LVS configuration (keepalived.conf(5), "LVS CONFIGURATION") into
//! xvs's TOML, with a report of every line that has no xvs equivalent.
//!
//! - `lexer.rs`: lines to tokens (comments, quotes, `include`, `@` conditionals, `$` parameters).
//! - `parser.rs`: tokens to keepalived's statement tree.
//! - `translate.rs`: the tree to TOML, with keepalived's defaults and inheritance.
//! - `report.rs`: what was not translated, line by line.
//!
//! The written TOML is validated in-process exactly as `xvs check` does ([`Config::parse`] and the
//! offline pipeline); a failure there is a bug of the translation and an error.
//!
//! ```no_run
//! # fn main() -> Result<(), xvs::import::ImportError> {
//! let done = xvs::import::import_file(
//!     std::path::Path::new("/etc/keepalived/keepalived.conf"),
//!     &xvs::import::ImportOptions::default(),
//! )?;
//! print!("{}", done.toml);
//! eprint!("{}", done.report_text());
//! std::process::exit(done.exit_code());
//! # }
//! ```

pub mod lexer;
pub mod parser;
pub mod report;
pub mod translate;

use std::path::{Path, PathBuf};

use crate::config::Config;
pub use report::{Pos, Report};

/// Exit status: everything translated.
pub const EXIT_OK: i32 = 0;
/// Exit status: the input could not be read or the output not written (or, a bug, the translation
/// fails validation).
pub const EXIT_ERROR: i32 = 1;
/// Exit status: keepalived's configuration does not parse (unbalanced braces, unterminated quote,
/// include loop, an included file that cannot be read); nothing is written.
pub const EXIT_PARSE: i32 = 2;
/// Exit status: a configuration was written, but some settings were reported untranslated.
pub const EXIT_UNTRANSLATED: i32 = 3;

/// A syntax error in keepalived's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Option<Pos>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: cannot read", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `location` is `file:line:col`.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    /// The translation produced a configuration `xvs check` rejects (a bug of `xvs import`).
    #[error("the translated configuration does not pass xvs check: {0}")]
    Invalid(String),
}

impl ImportError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ImportError::Parse { .. } => EXIT_PARSE,
            ImportError::Read { .. } | ImportError::Invalid(_) => EXIT_ERROR,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// keepalived's config id for `@ID` lines (keepalived's `-i`); default the first part of the
    /// host name, as keepalived's.
    pub config_id: Option<String>,
    /// The name the written TOML is validated under (only used in messages).
    pub out_name: Option<PathBuf>,
}

/// A finished translation.
#[derive(Debug, Clone)]
pub struct Import {
    pub toml: String,
    pub report: Report,
    /// The files read, as the report names them.
    pub files: Vec<String>,
    pub services: usize,
    pub backends: usize,
    pub checks: usize,
    pub config_id: String,
    /// `@` lines seen.
    pub conditionals: usize,
}

impl Import {
    /// [`EXIT_OK`] or [`EXIT_UNTRANSLATED`].
    pub fn exit_code(&self) -> i32 {
        if self.report.untranslated.is_empty() {
            EXIT_OK
        } else {
            EXIT_UNTRANSLATED
        }
    }

    /// The report: untranslated lines, warnings, summary.
    pub fn report_text(&self) -> String {
        let mut summary = format!(
            "{}: {} service(s), {} backend(s), {} health check(s) translated",
            self.files.first().map(String::as_str).unwrap_or("?"),
            self.services,
            self.backends,
            self.checks
        );
        if self.files.len() > 1 {
            summary.push_str(&format!(" from {} files", self.files.len()));
        }
        if self.conditionals > 0 {
            summary.push_str(&format!(
                "; {} conditional line(s) taken for config id {:?} (--config-id)",
                self.conditionals, self.config_id
            ));
        }
        self.report.render(&self.files, &summary)
    }
}

/// The host's config id as keepalived's default: the host name up to its first dot.
pub fn default_config_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    name.trim().split('.').next().unwrap_or("").to_string()
}

/// Translate the keepalived configuration in `path` (and the files it includes).
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Import, ImportError> {
    if let Err(source) = std::fs::File::open(path) {
        return Err(ImportError::Read {
            file: path.to_owned(),
            source,
        });
    }
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let config_id = opts.config_id.clone().unwrap_or_else(default_config_id);
    let mut report = Report::default();
    let mut lexer = lexer::Lexer::new(&base, &config_id, &mut report);
    let read = lexer.read_file(path, None);
    let files = std::mem::take(&mut lexer.files);
    let tokens = std::mem::take(&mut lexer.tokens);
    let conditionals = lexer.conditionals;
    drop(lexer);
    read.map_err(|e| parse_error(e, &files))?;
    finish(tokens, files, report, config_id, conditionals, opts)
}

/// Translate configuration text named `name`; its `include` lines are reported, not followed.
pub fn import_text(name: &str, text: &str, opts: &ImportOptions) -> Result<Import, ImportError> {
    let config_id = opts.config_id.clone().unwrap_or_else(default_config_id);
    let mut report = Report::default();
    let mut lexer = lexer::Lexer::new(Path::new("."), &config_id, &mut report);
    lexer.follow_includes = false;
    lexer.files.push(name.to_string());
    let read = lexer.read_text(0, Path::new("."), text);
    let files = std::mem::take(&mut lexer.files);
    let tokens = std::mem::take(&mut lexer.tokens);
    let conditionals = lexer.conditionals;
    drop(lexer);
    read.map_err(|e| parse_error(e, &files))?;
    finish(tokens, files, report, config_id, conditionals, opts)
}

fn parse_error(e: ParseError, files: &[String]) -> ImportError {
    ImportError::Parse {
        location: match &e.pos {
            Some(p) => p.full_ref(files),
            None => files.first().cloned().unwrap_or_default(),
        },
        message: e.message,
    }
}

fn finish(
    tokens: Vec<lexer::Token>,
    files: Vec<String>,
    mut report: Report,
    config_id: String,
    conditionals: usize,
    opts: &ImportOptions,
) -> Result<Import, ImportError> {
    let stmts = parser::parse(&tokens).map_err(|e| parse_error(e, &files))?;
    let t = translate::translate(&stmts, &mut report, &files);
    let out_name = opts
        .out_name
        .clone()
        .unwrap_or_else(|| PathBuf::from("xvs.toml"));
    validate(&out_name, &t.toml)?;
    Ok(Import {
        toml: t.toml,
        report,
        files,
        services: t.services,
        backends: t.backends,
        checks: t.checks,
        config_id,
        conditionals,
    })
}

/// What `xvs check` does with a file: load, validate, build the offline pipeline.
pub fn validate(name: &Path, toml: &str) -> Result<Config, ImportError> {
    let cfg = Config::parse(name, toml).map_err(|e| ImportError::Invalid(e.to_string()))?;
    crate::replay::offline_pipeline(&cfg).map_err(|e| ImportError::Invalid(format!("{e:#}")))?;
    Ok(cfg)
}
