//! Tokens to keepalived's statement tree, after keepalived's block reader (`lib/parser.c`,
//! `process_stream`): a statement is the words of one line up to `{`, `}` or the end of the line;
//! a `{` opens the block of the statement before it (on the same line, or alone on the next line)
//! and the matching `}` closes it. Blocks of values (the entries of `virtual_server_group`,
//! `local_address_group`, …) are statements whose first word is the value.

use super::lexer::{Token, TokenKind};
use super::report::Pos;
use super::ParseError;

/// One keepalived statement: `keyword args… [{ block }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// Where the keyword is.
    pub pos: Pos,
    /// Keyword then arguments (never empty).
    pub words: Vec<String>,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }

    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }

    pub fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i + 1).map(String::as_str)
    }

    /// The statement as written (keyword and arguments, one space apart).
    pub fn text(&self) -> String {
        self.words.join(" ")
    }

    pub fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Deepest block nesting accepted (keepalived's deepest is five).
const MAX_DEPTH: usize = 64;

/// Build the statement tree of a token stream.
pub fn parse(tokens: &[Token]) -> Result<Vec<Stmt>, ParseError> {
    let mut i = 0;
    let stmts = parse_block(tokens, &mut i, None, 0)?;
    Ok(stmts)
}

fn parse_block(
    tokens: &[Token],
    i: &mut usize,
    open: Option<&Pos>,
    depth: usize,
) -> Result<Vec<Stmt>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError {
            pos: open.cloned(),
            message: format!("blocks nested deeper than {MAX_DEPTH}"),
        });
    }
    let mut stmts: Vec<Stmt> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start: Option<Pos> = None;
    // The statement just ended by the end of a line, which a `{` alone on the next line opens.
    let mut awaiting_block = false;
    while *i < tokens.len() {
        let t = &tokens[*i];
        *i += 1;
        match &t.kind {
            TokenKind::Word(w) => {
                if words.is_empty() {
                    start = Some(t.pos.clone());
                }
                words.push(w.clone());
                awaiting_block = false;
            }
            TokenKind::Eol => {
                if !words.is_empty() {
                    stmts.push(Stmt {
                        pos: start.take().unwrap_or_else(|| t.pos.clone()),
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                    awaiting_block = true;
                }
            }
            TokenKind::Open => {
                let block = parse_block(tokens, i, Some(&t.pos), depth + 1)?;
                if !words.is_empty() {
                    stmts.push(Stmt {
                        pos: start.take().unwrap_or_else(|| t.pos.clone()),
                        words: std::mem::take(&mut words),
                        block: Some(block),
                    });
                } else if awaiting_block && stmts.last().is_some_and(|s| s.block.is_none()) {
                    if let Some(last) = stmts.last_mut() {
                        last.block = Some(block);
                    }
                } else {
                    return Err(ParseError {
                        pos: Some(t.pos.clone()),
                        message: "'{' without a keyword before it".into(),
                    });
                }
                awaiting_block = false;
            }
            TokenKind::Close => {
                if open.is_none() {
                    return Err(ParseError {
                        pos: Some(t.pos.clone()),
                        message: "'}' without a matching '{'".into(),
                    });
                }
                if !words.is_empty() {
                    stmts.push(Stmt {
                        pos: start.take().unwrap_or_else(|| t.pos.clone()),
                        words: std::mem::take(&mut words),
                        block: None,
                    });
                }
                return Ok(stmts);
            }
        }
    }
    if let Some(open) = open {
        return Err(ParseError {
            pos: Some(open.clone()),
            message: "'{' is never closed".into(),
        });
    }
    if !words.is_empty() {
        stmts.push(Stmt {
            pos: start.unwrap_or(Pos {
                file: 0,
                line: 0,
                col: 0,
            }),
            words,
            block: None,
        });
    }
    Ok(stmts)
}
