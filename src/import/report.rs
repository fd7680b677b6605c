//! What `xvs import` could not carry over, line by line: `file:line: what: why`.
//!
//! Three kinds of entries: **not translated** (a keepalived setting with no xvs equivalent; the
//! written configuration lacks it, and `xvs import` exits with [`super::EXIT_UNTRANSLATED`]),
//! **warnings** (translated, but xvs behaves a little differently, or keepalived itself corrects the
//! line the way the translation does) and the sections that are not LVS settings at all (VRRP,
//! global definitions), named once in the summary.

use std::fmt::Write as _;

/// A place in the configuration: file (index into the file table), line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub file: u32,
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// `file:line`.
    pub fn line_ref(&self, files: &[String]) -> String {
        format!("{}:{}", file_name(files, self.file), self.line)
    }

    /// `file:line:col`.
    pub fn full_ref(&self, files: &[String]) -> String {
        format!("{}:{}:{}", file_name(files, self.file), self.line, self.col)
    }
}

fn file_name(files: &[String], i: u32) -> &str {
    files.get(i as usize).map(String::as_str).unwrap_or("?")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pos: Pos,
    /// The setting, as written (e.g. `sorry_server 198.18.0.9 80`).
    pub what: String,
    pub why: String,
}

/// Everything said about one import.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub untranslated: Vec<Entry>,
    pub warnings: Vec<Entry>,
    /// Top-level sections that are not LVS settings (`global_defs`, `vrrp_instance VI_1`, …).
    pub not_lvs: Vec<(Pos, String)>,
}

impl Report {
    /// A setting with no xvs equivalent.
    pub fn unsupported(&mut self, pos: Pos, what: &str, why: &str) {
        let e = Entry {
            pos,
            what: what.to_string(),
            why: why.to_string(),
        };
        if !self.untranslated.contains(&e) {
            self.untranslated.push(e);
        }
    }

    /// A setting translated with a difference worth knowing.
    pub fn warning(&mut self, pos: Pos, what: &str, why: &str) {
        let e = Entry {
            pos,
            what: what.to_string(),
            why: why.to_string(),
        };
        if !self.warnings.contains(&e) {
            self.warnings.push(e);
        }
    }

    /// Add the entries of `other`.
    pub fn merge(&mut self, other: Report) {
        for e in other.untranslated {
            self.unsupported(e.pos, &e.what, &e.why);
        }
        for e in other.warnings {
            self.warning(e.pos, &e.what, &e.why);
        }
        self.not_lvs.extend(other.not_lvs);
    }

    pub fn not_lvs(&mut self, pos: Pos, what: &str) {
        self.not_lvs.push((pos, what.to_string()));
    }

    /// The report as text: the untranslated lines, the warnings, then the summary.
    pub fn render(&self, files: &[String], summary: &str) -> String {
        let mut out = String::new();
        let mut untranslated = self.untranslated.clone();
        untranslated.sort_by(|a, b| a.pos.cmp(&b.pos));
        let mut warnings = self.warnings.clone();
        warnings.sort_by(|a, b| a.pos.cmp(&b.pos));
        for e in &untranslated {
            let _ = writeln!(
                out,
                "{}: not translated: {}: {}",
                e.pos.line_ref(files),
                e.what,
                e.why
            );
        }
        for e in &warnings {
            let _ = writeln!(
                out,
                "{}: warning: {}: {}",
                e.pos.line_ref(files),
                e.what,
                e.why
            );
        }
        let _ = writeln!(out, "{summary}");
        if !self.not_lvs.is_empty() {
            let names: Vec<String> = self
                .not_lvs
                .iter()
                .map(|(p, w)| format!("{w} ({})", p.line_ref(files)))
                .collect();
            let _ = writeln!(
                out,
                "not an LVS setting (VRRP stays with keepalived: see xvs docs): {}",
                names.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "{} setting(s) not translated, {} warning(s)",
            self.untranslated.len(),
            self.warnings.len()
        );
        out
    }
}
