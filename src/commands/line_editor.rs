//! Line editing for `weir sql`'s shell on a terminal: the cursor keys, history recall with ↑ and
//! ↓ (kept in `~/.weir_sql_history` across runs), and the Emacs keys every shell has (Ctrl-A,
//! Ctrl-E, Ctrl-U, Ctrl-K, Ctrl-W, Ctrl-L). termion puts the terminal in raw mode and decodes
//! the keys; [`Line`] is the editing itself, kept apart from the terminal so that it is tested
//! key by key.
//!
//! Why not rustyline: it brings nix, which turns on a feature of libc that half of the
//! dependency tree (DataFusion included) would be rebuilt for.

use std::io::{self, Write};
use std::path::PathBuf;

use termion::event::Key;
use termion::input::TermRead;
use termion::raw::IntoRawMode;

/// Most history entries kept in memory and in the file.
const HISTORY_MAX: usize = 1000;

/// What reading a line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadLine {
    Line(String),
    /// Ctrl-C: the statement being typed is dropped.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of input.
    Eof,
}

/// Reads lines from the terminal, with history.
pub struct LineEditor {
    history: Vec<String>,
    file: Option<PathBuf>,
}

impl LineEditor {
    /// An editor whose history is loaded from, and appended to, `~/.weir_sql_history`.
    pub fn open() -> LineEditor {
        let file =
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".weir_sql_history"));
        let history = file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| {
                let lines: Vec<String> = text.lines().map(unescape).collect();
                let skip = lines.len().saturating_sub(HISTORY_MAX);
                lines.into_iter().skip(skip).collect()
            })
            .unwrap_or_default();
        LineEditor { history, file }
    }

    /// Adds an entry (a statement or a `\` command) to the history, unless it repeats the last.
    /// A statement of several lines is one entry, recalled whole (its line breaks shown as
    /// `↵`), so that a `--` comment does not swallow the lines after it.
    pub fn add_history(&mut self, entry: &str) {
        let entry = entry.to_owned();
        if entry.is_empty() || self.history.last() == Some(&entry) {
            return;
        }
        if let Some(path) = &self.file {
            // Best effort: a full disk or a read-only home does not stop the shell.
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(file, "{}", escape(&entry));
            }
        }
        self.history.push(entry);
        if self.history.len() > HISTORY_MAX {
            self.history.remove(0);
        }
    }

    /// Shows `prompt` and reads one line, edited in raw mode.
    pub fn read_line(&mut self, prompt: &str) -> io::Result<ReadLine> {
        let mut out = io::stdout().into_raw_mode()?;
        let mut line = Line::new(&self.history);
        // A pseudo-terminal may report no size at all (0 columns).
        let width = termion::terminal_size()
            .ok()
            .map(|(w, _)| w as usize)
            .filter(|&w| w > 0)
            .unwrap_or(80);
        line.draw(&mut out, prompt, width)?;
        for key in io::stdin().keys() {
            match line.apply(key?) {
                Step::Edit => line.draw(&mut out, prompt, width)?,
                Step::Clear => {
                    write!(
                        out,
                        "{}{}",
                        termion::clear::All,
                        termion::cursor::Goto(1, 1)
                    )?;
                    line.draw(&mut out, prompt, width)?;
                }
                Step::Done(result) => {
                    if result == ReadLine::Interrupted {
                        write!(out, "^C")?;
                    }
                    write!(out, "\r\n")?;
                    out.flush()?;
                    return Ok(result);
                }
            }
        }
        write!(out, "\r\n")?;
        Ok(ReadLine::Eof)
    }
}

/// What a key did to the line.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Edit,
    Clear,
    Done(ReadLine),
}

/// A line being edited: its characters, the cursor, and where it is in the history.
struct Line<'h> {
    chars: Vec<char>,
    cursor: usize,
    history: &'h [String],
    /// Index into `history` being shown; `history.len()` is the new line.
    recalled: usize,
    /// The new line, kept while the history is browsed.
    draft: Vec<char>,
}

impl<'h> Line<'h> {
    fn new(history: &'h [String]) -> Line<'h> {
        Line {
            chars: Vec::new(),
            cursor: 0,
            history,
            recalled: history.len(),
            draft: Vec::new(),
        }
    }

    fn text(&self) -> String {
        self.chars.iter().collect()
    }

    fn apply(&mut self, key: Key) -> Step {
        match key {
            Key::Char('\n') | Key::Char('\r') => return Step::Done(ReadLine::Line(self.text())),
            Key::Ctrl('c') => return Step::Done(ReadLine::Interrupted),
            Key::Ctrl('d') if self.chars.is_empty() => return Step::Done(ReadLine::Eof),
            Key::Ctrl('l') => return Step::Clear,
            Key::Char('\t') => self.insert(' '),
            Key::Char(c) => self.insert(c),
            Key::Backspace | Key::Ctrl('h') if self.cursor > 0 => {
                self.cursor -= 1;
                self.chars.remove(self.cursor);
            }
            Key::Delete | Key::Ctrl('d') if self.cursor < self.chars.len() => {
                self.chars.remove(self.cursor);
            }
            Key::Left | Key::Ctrl('b') => self.cursor = self.cursor.saturating_sub(1),
            Key::Right | Key::Ctrl('f') => self.cursor = (self.cursor + 1).min(self.chars.len()),
            Key::Home | Key::Ctrl('a') => self.cursor = 0,
            Key::End | Key::Ctrl('e') => self.cursor = self.chars.len(),
            Key::CtrlLeft | Key::Alt('b') => self.cursor = self.word_start(),
            Key::CtrlRight | Key::Alt('f') => self.cursor = self.word_end(),
            Key::Ctrl('u') => {
                self.chars.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::Ctrl('k') => self.chars.truncate(self.cursor),
            Key::Ctrl('w') => {
                let start = self.word_start();
                self.chars.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::Up | Key::Ctrl('p') => self.recall(-1),
            Key::Down | Key::Ctrl('n') => self.recall(1),
            _ => {}
        }
        Step::Edit
    }

    fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Where the word before the cursor starts (spaces before it skipped).
    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    /// Where the word after the cursor ends.
    fn word_end(&self) -> usize {
        let mut i = self.cursor;
        while i < self.chars.len() && self.chars[i].is_whitespace() {
            i += 1;
        }
        while i < self.chars.len() && !self.chars[i].is_whitespace() {
            i += 1;
        }
        i
    }

    /// Moves through the history: `-1` older, `1` newer; past the newest is the new line again.
    fn recall(&mut self, step: isize) {
        let Some(next) = self.recalled.checked_add_signed(step) else {
            return;
        };
        if next > self.history.len() {
            return;
        }
        if self.recalled == self.history.len() {
            self.draft = std::mem::take(&mut self.chars);
        }
        self.recalled = next;
        self.chars = match self.history.get(next) {
            Some(entry) => entry.chars().collect(),
            None => std::mem::take(&mut self.draft),
        };
        self.cursor = self.chars.len();
    }

    /// Redraws the line in place. A line wider than the terminal scrolls sideways, so that it
    /// always takes one row and the cursor stays in view.
    fn draw(&self, out: &mut impl Write, prompt: &str, width: usize) -> io::Result<()> {
        let room = width.saturating_sub(prompt.chars().count() + 1).max(10);
        let start = (self.cursor + 1).saturating_sub(room);
        let end = (start + room).min(self.chars.len());
        let shown: String = self.chars[start..end]
            .iter()
            .map(|&c| if c == '\n' { '↵' } else { c })
            .collect();
        write!(out, "\r{prompt}{shown}{}", termion::clear::UntilNewline)?;
        let back = end - self.cursor;
        if back > 0 {
            write!(out, "{}", termion::cursor::Left(back as u16))?;
        }
        out.flush()
    }
}

/// One history entry as one line of the file: `\` and line breaks escaped.
fn escape(entry: &str) -> String {
    entry.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Reverses [`escape`]; a `\` before anything else is kept as it is, so that older history
/// files (`\d telemetry`) read back unchanged.
fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(line: &mut Line, text: &str) {
        for c in text.chars() {
            assert_eq!(line.apply(Key::Char(c)), Step::Edit);
        }
    }

    #[test]
    fn keys_edit_the_line_where_the_cursor_is() {
        let mut line = Line::new(&[]);
        typed(&mut line, "SELCT 1");
        for _ in 0..4 {
            line.apply(Key::Left);
        }
        typed(&mut line, "E");
        assert_eq!(line.text(), "SELECT 1");
        line.apply(Key::Ctrl('a'));
        line.apply(Key::Delete);
        typed(&mut line, "s");
        line.apply(Key::End);
        line.apply(Key::Backspace);
        typed(&mut line, "2;");
        assert_eq!(line.text(), "sELECT 2;");
        line.apply(Key::Ctrl('w'));
        assert_eq!(line.text(), "sELECT ");
        line.apply(Key::Ctrl('a'));
        line.apply(Key::Ctrl('k'));
        assert_eq!(line.text(), "");
        assert_eq!(line.apply(Key::Ctrl('d')), Step::Done(ReadLine::Eof));
    }

    #[test]
    fn up_and_down_walk_the_history_and_keep_the_new_line() {
        let history = ["SELECT 1;".to_owned(), "\\d telemetry".to_owned()];
        let mut line = Line::new(&history);
        typed(&mut line, "SEL");
        line.apply(Key::Up);
        assert_eq!(line.text(), "\\d telemetry");
        line.apply(Key::Up);
        line.apply(Key::Up);
        assert_eq!(line.text(), "SELECT 1;", "the oldest entry stays");
        line.apply(Key::Down);
        line.apply(Key::Down);
        assert_eq!(
            line.text(),
            "SEL",
            "past the newest entry is the line being typed"
        );
        line.apply(Key::Down);
        assert_eq!(line.text(), "SEL");
        line.apply(Key::Up);
        typed(&mut line, " x");
        assert_eq!(
            line.apply(Key::Char('\r')),
            Step::Done(ReadLine::Line("\\d telemetry x".into()))
        );
    }

    #[test]
    fn history_entries_survive_the_file_whole() {
        for entry in ["SELECT 1 -- one\n AS n;", "\\d telemetry", "a\\nb\\", ""] {
            let line = escape(entry);
            assert!(!line.contains('\n'));
            assert_eq!(unescape(&line), entry);
        }
        assert_eq!(
            unescape("\\d telemetry"),
            "\\d telemetry",
            "an older file's line"
        );
    }

    #[test]
    fn a_long_line_scrolls_and_keeps_the_cursor_in_view() {
        let mut line = Line::new(&[]);
        typed(&mut line, &"x".repeat(100));
        let mut out = Vec::new();
        line.draw(&mut out, "weir> ", 40).unwrap();
        let drawn = String::from_utf8(out).unwrap();
        // The prompt, the last 32 characters and the cursor: 39 columns, one spare so that
        // the terminal never wraps.
        assert_eq!(drawn.matches('x').count(), 32, "{drawn:?}");
        assert_eq!(
            line.apply(Key::Ctrl('c')),
            Step::Done(ReadLine::Interrupted)
        );
    }
}
