//! keepalived.conf lines to tokens, after keepalived's configuration reader (`lib/parser.c`) and
//! keepalived.conf(5) ("DESCRIPTION", "Quoted strings", "ADVANCED CONFIGURATION"):
//!
//! - Comments start with `#` or `!` outside quotes, anywhere in a line.
//! - `include FILE` (and the variants `includer`, `includem`, `includew`, `includeb`, `includea`)
//!   reads the files matching the glob pattern FILE (csh braces `{a,b}` included), relative to the
//!   directory of the including file; it is recognised before conditionals and parameters, as in
//!   keepalived.
//! - `@ID line` keeps the line only when ID is the config id, `@^ID line` only when it is not.
//! - `$NAME=VALUE` defines a parameter; `$NAME` (followed by whitespace or the end of the line)
//!   and `${NAME}` are replaced by its value, recursively; undefined names stay as written.
//!   `${_PWD}`, `${_INSTANCE}`, `${_HASH}` and `${_BANG}` are predefined. Multi-line definitions
//!   (`$NAME= \`), `~SEQ`/`~LST` blocks and `${_RANDOM}`/`${_ENV}` are not expanded: they are
//!   reported, line by line.
//! - Words are separated by whitespace; `{` and `}` are tokens of their own; `"…"` and `'…'`
//!   quote (the quotes are removed, adjacent quoted and unquoted parts join into one word) and
//!   take the shell's escapes (`\n`, `\t`, `\\`, `\"`, `\xHH`, `\NNN`, …).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::report::{Pos, Report};
use super::ParseError;

/// One token and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    Word(String),
    Open,
    Close,
    /// End of a configuration line.
    Eol,
}

/// How deep includes may nest (keepalived stops at a similar depth).
const MAX_INCLUDE_DEPTH: usize = 32;
/// How many times a line may be substituted before the expansion is taken as endless.
const MAX_SUBSTITUTIONS: usize = 64;
/// Longest line after substitution.
const MAX_LINE: usize = 1 << 20;

/// The reader's state over the whole include tree.
pub struct Lexer<'a> {
    /// File names as shown in the report, indexed by `Pos::file`.
    pub files: Vec<String>,
    /// The directory file names are shown relative to.
    base: PathBuf,
    config_id: String,
    params: HashMap<String, String>,
    /// Canonical paths of the files being read (include cycle detection).
    stack: Vec<PathBuf>,
    pub tokens: Vec<Token>,
    /// Lines dropped or kept by `@` conditionals.
    pub conditionals: usize,
    /// Whether `include` reads files (false for text that is not from a file).
    pub follow_includes: bool,
    report: &'a mut Report,
}

impl<'a> Lexer<'a> {
    pub fn new(base: &Path, config_id: &str, report: &'a mut Report) -> Self {
        Lexer {
            files: Vec::new(),
            base: base.to_owned(),
            config_id: config_id.to_owned(),
            params: HashMap::new(),
            stack: Vec::new(),
            tokens: Vec::new(),
            conditionals: 0,
            follow_includes: true,
            report,
        }
    }

    fn display_name(&self, path: &Path) -> String {
        path.strip_prefix(&self.base)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Read `path` (and what it includes) into [`Lexer::tokens`].
    pub fn read_file(&mut self, path: &Path, included_at: Option<Pos>) -> Result<(), ParseError> {
        let name = self.display_name(path);
        let text = std::fs::read(path).map_err(|e| ParseError {
            pos: included_at.clone(),
            message: format!("{name}: cannot read: {e}"),
        })?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        if self.stack.contains(&canonical) {
            return Err(ParseError {
                pos: included_at,
                message: format!("{name}: included from itself (include loop)"),
            });
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(ParseError {
                pos: included_at,
                message: format!("{name}: includes nested deeper than {MAX_INCLUDE_DEPTH}"),
            });
        }
        let file = self.files.len() as u32;
        self.files.push(name);
        self.stack.push(canonical);
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let result = self.read_text(file, &dir, &text);
        self.stack.pop();
        result
    }

    /// Tokenize `text`, the contents of file number `file` in directory `dir`.
    pub fn read_text(&mut self, file: u32, dir: &Path, text: &str) -> Result<(), ParseError> {
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let lineno = i as u32 + 1;
            let raw = lines[i];
            i += 1;
            let pos = |col: usize| Pos {
                file,
                line: lineno,
                col: col as u32 + 1,
            };
            let line = strip_comment(raw);
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let trimmed = trimmed.trim_end();
            if trimmed.is_empty() {
                continue;
            }

            // include, before conditionals and parameters (keepalived.conf(5)).
            let first = trimmed.split_whitespace().next().unwrap_or("");
            if matches!(
                first,
                "include" | "includer" | "includem" | "includew" | "includeb" | "includea"
            ) {
                let rest = trimmed[first.len()..].trim();
                // The pattern is taken whole (braces are part of it), quotes removed.
                let pattern = match rest.chars().next() {
                    Some(q @ ('"' | '\'')) if rest.len() >= 2 && rest.ends_with(q) => {
                        &rest[1..rest.len() - 1]
                    }
                    _ => rest,
                };
                if pattern.is_empty() || (pattern == rest && rest.contains(char::is_whitespace)) {
                    self.report.unsupported(
                        pos(indent),
                        trimmed,
                        "needs exactly one file name (pattern)",
                    );
                    continue;
                }
                if self.follow_includes {
                    self.include(pattern, dir, pos(indent))?;
                } else {
                    self.report.unsupported(
                        pos(indent),
                        trimmed,
                        "not followed: the text was not read from a file",
                    );
                }
                continue;
            }

            let mut body = trimmed.to_string();
            let mut col = indent;
            // @ID / @^ID conditionals.
            if let Some(cond) = body.strip_prefix('@') {
                self.conditionals += 1;
                let (negate, cond) = match cond.strip_prefix('^') {
                    Some(c) => (true, c),
                    None => (false, cond),
                };
                let id_len = cond.find(char::is_whitespace).unwrap_or(cond.len());
                let id = &cond[..id_len];
                let keep = (id == self.config_id) != negate;
                if !keep {
                    continue;
                }
                let rest = &cond[id_len..];
                let skipped = body.len() - rest.trim_start().len();
                col += skipped;
                body = rest.trim_start().to_string();
                if body.is_empty() {
                    continue;
                }
            }

            // $NAME=VALUE definitions.
            if let Some(def) = body.strip_prefix('$') {
                let name_len = def
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(def.len());
                let name = &def[..name_len];
                if !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && def[name_len..].starts_with('=')
                {
                    let value = def[name_len + 1..].trim();
                    if value == "\\" || value.ends_with('\\') {
                        // A multi-line definition: skip its continuation lines.
                        let start = pos(col);
                        let mut last = raw;
                        while last.trim_end().ends_with('\\') && i < lines.len() {
                            last = lines[i];
                            i += 1;
                        }
                        self.report.unsupported(
                            start,
                            &format!("${name}="),
                            "multi-line parameter definitions are not expanded by xvs import \
                             (expand them with keepalived -d / by hand first)",
                        );
                        continue;
                    }
                    self.params.insert(name.to_string(), value.to_string());
                    continue;
                }
            }

            if body.starts_with("~SEQ") || body.starts_with("~LST") {
                self.report.unsupported(
                    pos(col),
                    &body[..4],
                    "sequence and list blocks are not expanded by xvs import (expand them first)",
                );
                continue;
            }

            let body = match self.substitute(&body, dir) {
                Ok(b) => b,
                Err(what) => {
                    self.report
                        .unsupported(pos(col), &what, "not expanded by xvs import");
                    continue;
                }
            };
            let words = split_line(&body, &pos(col))?;
            self.tokens.extend(words);
            self.tokens.push(Token {
                kind: TokenKind::Eol,
                pos: pos(col),
            });
        }
        Ok(())
    }

    fn include(&mut self, pattern: &str, dir: &Path, at: Pos) -> Result<(), ParseError> {
        let mut matched = Vec::new();
        for p in expand_braces(pattern) {
            let full = if Path::new(&p).is_absolute() {
                PathBuf::from(&p)
            } else {
                dir.join(&p)
            };
            let Some(full_str) = full.to_str() else {
                continue;
            };
            match glob::glob(full_str) {
                Ok(paths) => {
                    // Sorted within one alternative, alternatives in written order (glob(3)
                    // with GLOB_BRACE).
                    let mut these: Vec<PathBuf> = paths.flatten().filter(|p| p.is_file()).collect();
                    these.sort();
                    for path in these {
                        if !matched.contains(&path) {
                            matched.push(path);
                        }
                    }
                }
                Err(e) => {
                    return Err(ParseError {
                        pos: Some(at),
                        message: format!("include {pattern}: bad pattern: {e}"),
                    })
                }
            }
        }
        if matched.is_empty() {
            self.report.warning(
                at,
                &format!("include {pattern}"),
                "no file matched (keepalived skips it too)",
            );
            return Ok(());
        }
        for path in matched {
            self.read_file(&path, Some(at.clone()))?;
        }
        Ok(())
    }

    /// Replace parameters in `line`. `Err(name)` for a predefined one xvs does not expand.
    fn substitute(&self, line: &str, dir: &Path) -> Result<String, String> {
        let mut line = line.to_string();
        for _ in 0..MAX_SUBSTITUTIONS {
            let Some((start, end, name)) = self.find_param(&line) else {
                return Ok(line);
            };
            let value = match name.as_str() {
                "_PWD" => dir.display().to_string(),
                "_INSTANCE" => self.config_id.clone(),
                "_HASH" => "#".into(),
                "_BANG" => "!".into(),
                n if n.starts_with("_RANDOM") || n.starts_with("_ENV") => {
                    return Err(format!("${{{n}}}"))
                }
                n => match self.params.get(n) {
                    Some(v) => v.clone(),
                    None => return Ok(line),
                },
            };
            line.replace_range(start..end, &value);
            if line.len() > MAX_LINE {
                return Err("parameter expansion longer than 1 MiB".into());
            }
        }
        Err("parameter expansion that does not end".into())
    }

    /// The first `$NAME` / `${NAME}` in `line` that is defined or predefined: (start, end, name).
    fn find_param(&self, line: &str) -> Option<(usize, usize, String)> {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                i += 1;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'{') {
                if let Some(close) = line[i + 2..].find('}') {
                    let name = &line[i + 2..i + 2 + close];
                    let known = self.params.contains_key(name)
                        || matches!(name, "_PWD" | "_INSTANCE" | "_HASH" | "_BANG")
                        || name.starts_with("_RANDOM")
                        || name.starts_with("_ENV");
                    if known {
                        return Some((i, i + 3 + close, name.to_string()));
                    }
                }
            } else {
                let rest = &line[i + 1..];
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let followed_ok = rest[len..].chars().next().is_none_or(|c| c.is_whitespace());
                let name = &rest[..len];
                if len > 0 && followed_ok && self.params.contains_key(name) {
                    return Some((i, i + 1 + len, name.to_string()));
                }
            }
            i += 1;
        }
        None
    }
}

/// `line` up to its first `#` or `!` outside quotes.
pub fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match quote {
            Some(q) => {
                if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' | '!' => return &line[..i],
                _ => {}
            },
        }
    }
    line
}

/// Split a line into tokens (words, `{`, `}`); `at` is the position of the line's first byte.
fn split_line(line: &str, at: &Pos) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    let pos = |byte: usize| Pos {
        file: at.file,
        line: at.line,
        col: at.col + line[..byte].chars().count() as u32,
    };
    while i < chars.len() {
        let (b, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '{' || c == '}' {
            out.push(Token {
                kind: if c == '{' {
                    TokenKind::Open
                } else {
                    TokenKind::Close
                },
                pos: pos(b),
            });
            i += 1;
            continue;
        }
        let start = b;
        let mut word = String::new();
        while i < chars.len() {
            let (bq, c) = chars[i];
            if c.is_whitespace() || c == '{' || c == '}' {
                break;
            }
            if c == '"' || c == '\'' {
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    let (_, d) = chars[i];
                    if d == c {
                        closed = true;
                        i += 1;
                        break;
                    }
                    if d == '\\' && i + 1 < chars.len() {
                        i = unescape(&chars, i + 1, &mut word);
                        continue;
                    }
                    word.push(d);
                    i += 1;
                }
                if !closed {
                    return Err(ParseError {
                        pos: Some(pos(bq)),
                        message: format!("unterminated {c}quoted{c} string"),
                    });
                }
                continue;
            }
            word.push(c);
            i += 1;
        }
        out.push(Token {
            kind: TokenKind::Word(word),
            pos: pos(start),
        });
    }
    Ok(out)
}

/// Decode the escape whose first character (after `\`) is at `chars[i]`; return the index after it.
fn unescape(chars: &[(usize, char)], i: usize, out: &mut String) -> usize {
    let c = chars[i].1;
    let simple = match c {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'E' | 'e' => Some('\x1b'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        _ => None,
    };
    if let Some(s) = simple {
        out.push(s);
        return i + 1;
    }
    if c == 'x' {
        let mut v = 0u32;
        let mut j = i + 1;
        while j < chars.len() && j < i + 3 && chars[j].1.is_ascii_hexdigit() {
            v = v * 16 + chars[j].1.to_digit(16).unwrap_or(0);
            j += 1;
        }
        if j == i + 1 {
            out.push('x');
            return j;
        }
        out.push(char::from_u32(v).unwrap_or('\u{fffd}'));
        return j;
    }
    if ('0'..='7').contains(&c) {
        let mut v = 0u32;
        let mut j = i;
        while j < chars.len() && j < i + 3 && ('0'..='7').contains(&chars[j].1) {
            v = v * 8 + chars[j].1.to_digit(8).unwrap_or(0);
            j += 1;
        }
        out.push(char::from_u32(v & 0xff).unwrap_or('\u{fffd}'));
        return j;
    }
    if c == 'c' && i + 1 < chars.len() {
        let ctl = (chars[i + 1].1 as u32) & 0x1f;
        out.push(char::from_u32(ctl).unwrap_or('\u{fffd}'));
        return i + 2;
    }
    out.push(c);
    i + 1
}

/// csh-style brace expansion: `a{b,c}d` → `abd`, `acd` (nested braces too).
pub fn expand_braces(pattern: &str) -> Vec<String> {
    // Find the first top-level `{…}` that holds a comma.
    let bytes = pattern.as_bytes();
    let mut depth = 0usize;
    let mut open = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let o = open.unwrap_or(0);
                    let inner = &pattern[o + 1..i];
                    let parts = split_top_level_commas(inner);
                    if parts.len() < 2 {
                        continue;
                    }
                    let (pre, post) = (&pattern[..o], &pattern[i + 1..]);
                    let mut out = Vec::new();
                    for part in parts {
                        for tail in expand_braces(&format!("{part}{post}")) {
                            out.push(format!("{pre}{tail}"));
                            if out.len() > 1024 {
                                return out;
                            }
                        }
                    }
                    return out;
                }
            }
            _ => {}
        }
    }
    vec![pattern.to_string()]
}

fn split_top_level_commas(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_line(
            line,
            &Pos {
                file: 0,
                line: 1,
                col: 1,
            },
        )
        .unwrap()
        .into_iter()
        .map(|t| match t.kind {
            TokenKind::Word(w) => w,
            TokenKind::Open => "{".into(),
            TokenKind::Close => "}".into(),
            TokenKind::Eol => "\n".into(),
        })
        .collect()
    }

    #[test]
    fn quotes_join_and_keep_spaces() {
        // The two examples of keepalived.conf(5) "Quoted strings".
        assert_eq!(
            words(r#"abcd" efg h jkl "mnop"#),
            vec!["abcd efg h jkl mnop"]
        );
        assert_eq!(
            words(r#"abcd "efg h jkl" mnop"#),
            vec!["abcd", "efg h jkl", "mnop"]
        );
        assert_eq!(words(r#""a\tb\x41\101\\""#), vec!["a\tbAA\\"]);
        assert_eq!(words("url{path /}"), vec!["url", "{", "path", "/", "}"]);
    }

    #[test]
    fn comments_outside_quotes_only() {
        assert_eq!(strip_comment("weight 1 # two"), "weight 1 ");
        assert_eq!(strip_comment("a ! b"), "a ");
        assert_eq!(
            strip_comment(r#"misc_path "/bin/x #1 !2" # c"#),
            r#"misc_path "/bin/x #1 !2" "#
        );
    }

    #[test]
    fn braces_expand() {
        assert_eq!(
            expand_braces("{foo/{,cat,dog},bar}"),
            vec!["foo/", "foo/cat", "foo/dog", "bar"]
        );
        assert_eq!(expand_braces("conf.d/*.conf"), vec!["conf.d/*.conf"]);
    }

    #[test]
    fn unterminated_quote_is_an_error_with_its_column() {
        let e = split_line(
            "path \"/x",
            &Pos {
                file: 0,
                line: 3,
                col: 5,
            },
        )
        .unwrap_err();
        assert_eq!(e.pos.unwrap().col, 10);
    }
}
