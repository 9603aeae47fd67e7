//! Tables drawn exactly as calicoctl draws them: with Go's
//! `olekukonko/tablewriter` v0.0.5 (the version Calico v3.32.1 pins in
//! go.mod) and its defaults, so that `ipamctl show` is byte for byte
//! `calicoctl ipam show`.
//!
//! A hand-written renderer rather than comfy-table: tablewriter's output
//! depends on rules no general table crate shares — a cell is right-aligned
//! only when its whole text is a decimal number (`65536`, but not
//! `13 (0%)` or `1.8447e+19`), headers are centred with the odd space on
//! the right, cells wider than 30 columns are re-wrapped with a
//! minimal-raggedness line breaker, and the extra lines of a multi-line
//! row are filled with two spaces. Each rule below names the tablewriter
//! function it follows (table.go, util.go, wrap.go).
//!
//! Also here: Go's `%.5g` and `%.f` for the figures calicoctl prints.

use unicode_width::UnicodeWidthStr;

/// tablewriter's `MAX_ROW_WIDTH`: cells wider than this are wrapped.
const MAX_CELL_WIDTH: usize = 30;

/// wrap.go's `defaultPenalty` for a line longer than the limit.
const OVERLONG_PENALTY: i64 = 100_000;

/// A table with a header row, rendered as tablewriter renders it.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (upper-cased when drawn, as
    /// tablewriter's `Title` does).
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text, every line ending in a newline.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        // parseDimension: a cell's lines, and the widest line per column.
        let mut cell_lines = |text: &str, column: usize| {
            let (lines, width) = wrap_cell(text);
            widths[column] = widths[column].max(width);
            lines
        };
        let header: Vec<Vec<String>> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| cell_lines(h, i))
            .collect();
        let rows: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, c)| cell_lines(c, i))
                    .collect()
            })
            .collect();

        let mut out = String::new();
        rule(&mut out, &widths);
        if !header.is_empty() {
            let height = header.iter().map(Vec::len).max().unwrap_or(0);
            for line in 0..height {
                out.push('|');
                for (column, width) in widths.iter().enumerate() {
                    let text = header
                        .get(column)
                        .and_then(|lines| lines.get(line))
                        .map(String::as_str)
                        .unwrap_or("");
                    out.push(' ');
                    out.push_str(&centre(&title(text), *width));
                    out.push_str(" |");
                }
                out.push('\n');
            }
            rule(&mut out, &widths);
        }
        for row in rows {
            let height = row.iter().map(Vec::len).max().unwrap_or(0);
            for line in 0..height {
                for (column, lines) in row.iter().enumerate() {
                    // printRow fills the missing lines of a shorter cell
                    // with two spaces, not with nothing.
                    let text = lines.get(line).map(String::as_str).unwrap_or("  ");
                    out.push_str("| ");
                    if is_decimal(text.trim()) {
                        out.push_str(&pad_left(text, widths[column]));
                    } else {
                        out.push_str(&pad_right(text, widths[column]));
                    }
                    out.push(' ');
                }
                out.push_str("|\n");
            }
        }
        rule(&mut out, &widths);
        out
    }
}

// printLine: `+` then, per column, its width plus two dashes and a `+`.
fn rule(out: &mut String, widths: &[usize]) {
    out.push('+');
    for width in widths {
        out.push_str(&"-".repeat(width + 2));
        out.push('+');
    }
    out.push('\n');
}

fn display_width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

// util.go Pad: the smaller half of the gap on the left.
fn centre(text: &str, width: usize) -> String {
    let gap = width.saturating_sub(display_width(text));
    let left = gap / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(gap - left))
}

fn pad_left(text: &str, width: usize) -> String {
    let gap = width.saturating_sub(display_width(text));
    format!("{}{text}", " ".repeat(gap))
}

fn pad_right(text: &str, width: usize) -> String {
    let gap = width.saturating_sub(display_width(text));
    format!("{text}{}", " ".repeat(gap))
}

// util.go Title: `_` becomes a space, a `.` not between digits or spaces
// becomes a space, then trimmed and upper-cased.
fn title(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let num_or_space = |c: char| c.is_ascii_digit() || c == ' ';
    let replaced: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '_' => ' ',
            '.' if (i != 0 && !num_or_space(chars[i - 1]))
                || (i + 1 != chars.len() && !num_or_space(chars[i + 1])) =>
            {
                ' '
            }
            c => c,
        })
        .collect();
    let trimmed = replaced.trim();
    if trimmed.is_empty() && !name.is_empty() {
        return " ".to_string();
    }
    trimmed.to_uppercase()
}

// table.go's `decimal` pattern: ^-?(?:\d{1,3}(?:,\d{3})*|\d+)(?:\.\d+)?$
// (its `percent` pattern can never match, so it is left out).
fn is_decimal(text: &str) -> bool {
    let text = text.strip_prefix('-').unwrap_or(text);
    let (integer, fraction) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(fraction) = fraction {
        if !digits(fraction) {
            return false;
        }
    }
    if digits(integer) {
        return true;
    }
    // Thousands separated by commas: 1,234,567.
    let mut groups = integer.split(',');
    let first = groups.next().unwrap_or("");
    digits(first) && first.len() <= 3 && groups.all(|g| g.len() == 3 && digits(g))
}

// parseDimension with autoWrap and reflow on (tablewriter's defaults): the
// cell's lines and its widest line.
fn wrap_cell(text: &str) -> (Vec<String>, usize) {
    let raw: Vec<&str> = text.split('\n').collect();
    let widest = raw.iter().map(|l| display_width(l)).max().unwrap_or(0);
    let limit = widest.min(MAX_CELL_WIDTH);
    let lines = wrap_string(&raw.join(" "), limit);
    let width = lines
        .iter()
        .map(|l| display_width(l))
        .max()
        .unwrap_or(0)
        .max(limit);
    (lines, width)
}

// wrap.go WrapString: split on spaces, raise the limit to the longest
// word, break with minimal raggedness.
fn wrap_string(text: &str, limit: usize) -> Vec<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let limit = words
        .iter()
        .map(|w| display_width(w))
        .fold(limit, usize::max);
    wrap_words(&words, limit)
        .into_iter()
        .map(|line| line.join(" "))
        .collect()
}

// wrap.go WrapWords with one space between words: the squared shortfall
// of every line but the last is minimised.
fn wrap_words<'a>(words: &[&'a str], limit: usize) -> Vec<Vec<&'a str>> {
    let n = words.len();
    let limit = limit as i64;
    let widths: Vec<i64> = words.iter().map(|w| display_width(w) as i64).collect();
    // length(i, j): words i..=j joined by single spaces.
    let length = |i: usize, j: usize| -> i64 { widths[i..=j].iter().sum::<i64>() + (j - i) as i64 };
    let mut next_break = vec![0usize; n];
    let mut cost = vec![i64::from(i32::MAX); n];
    for i in (0..n).rev() {
        if length(i, n - 1) <= limit {
            cost[i] = 0;
            next_break[i] = n;
            continue;
        }
        for j in i + 1..n {
            let line = length(i, j - 1);
            let shortfall = limit - line;
            let mut c = shortfall * shortfall + cost[j];
            if line > limit {
                c += OVERLONG_PENALTY;
            }
            if c < cost[i] {
                cost[i] = c;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..next_break[i]].to_vec());
        i = next_break[i];
    }
    lines
}

/// Go's `fmt.Sprintf("%.5g", x)`: five significant digits, trailing zeros
/// dropped, exponent form (`1.8447e+19`) when the exponent is below -4 or
/// at least 5. Ties round to even, as Go's strconv does.
pub fn go_g5(x: f64) -> String {
    const PRECISION: i32 = 5;
    // Rust's `{:e}` rounds exactly (half to even), as Go does; the exponent
    // is read after rounding, as Go reads it.
    let scientific = format!("{:.*e}", (PRECISION - 1) as usize, x);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes an integer exponent");
    if !(-4..PRECISION).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim_fraction(mantissa),
            exponent.unsigned_abs()
        )
    } else {
        let decimals = (PRECISION - 1 - exponent) as usize;
        trim_fraction(&format!("{x:.decimals$}")).to_string()
    }
}

/// Go's `fmt.Sprintf("%.f", x)`: no decimals, ties to even.
pub fn go_f0(x: f64) -> String {
    format!("{x:.0}")
}

// %g drops trailing zeros of the fraction, and the point with them.
fn trim_fraction(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/calico");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}"))
            .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    #[test]
    fn the_configuration_fixture_is_reproduced_byte_for_byte() {
        let mut table = Table::new(&["PROPERTY", "VALUE"]);
        for (name, value) in [
            ("StrictAffinity", "false"),
            ("AutoAllocateBlocks", "true"),
            ("MaxBlocksPerHost", "0"),
        ] {
            table.push(vec![name.into(), value.into()]);
        }
        assert_eq!(table.render(), fixture("ipam-show-configuration.txt"));
    }

    #[test]
    fn numbers_are_right_aligned_and_text_left_aligned() {
        let mut table = Table::new(&["a", "b"]);
        table.push(vec!["1,234.5".into(), "13 (0%)".into()]);
        table.push(vec!["1.8447e+19".into(), "-7".into()]);
        assert_eq!(
            table.render(),
            "+------------+---------+\n\
             |     A      |    B    |\n\
             +------------+---------+\n\
             |    1,234.5 | 13 (0%) |\n\
             | 1.8447e+19 |      -7 |\n\
             +------------+---------+\n"
        );
    }

    #[test]
    fn a_table_without_rows_keeps_its_header_and_both_rules() {
        let table = Table::new(&["GROUPING", "CIDR"]);
        assert_eq!(
            table.render(),
            "+----------+------+\n\
             | GROUPING | CIDR |\n\
             +----------+------+\n\
             +----------+------+\n"
        );
    }

    #[test]
    // The two-space filler overflows a one-column cell, as it does in Go.
    fn cells_wider_than_thirty_columns_wrap_and_short_cells_fill_with_two_spaces() {
        let mut table = Table::new(&["x", "y"]);
        table.push(vec![
            "aaaa bbbb cccc dddd eeee ffff gggg hhhh".into(),
            "1".into(),
        ]);
        assert_eq!(
            table.render(),
            "+--------------------------------+---+\n\
             |               X                | Y |\n\
             +--------------------------------+---+\n\
             | aaaa bbbb cccc dddd eeee ffff  | 1 |\n\
             | gggg hhhh                      |    |\n\
             +--------------------------------+---+\n"
        );
    }

    #[test]
    fn a_long_word_is_not_broken() {
        let word = "a".repeat(40);
        let (lines, width) = wrap_cell(&word);
        assert_eq!((lines, width), (vec![word], 40));
    }

    #[test]
    fn headers_are_titled_as_tablewriter_titles_them() {
        assert_eq!(title("block_owner"), "BLOCK OWNER");
        assert_eq!(title("v1.2"), "V1.2");
        assert_eq!(title("a.b"), "A B");
        assert_eq!(title("IPS IN USE"), "IPS IN USE");
    }

    #[test]
    fn only_whole_decimal_numbers_count_as_numbers() {
        for yes in ["0", "65536", "-3", "1,234", "12.50", "1,234,567.8"] {
            assert!(is_decimal(yes), "{yes}");
        }
        for no in [
            "", "13 (0%)", "1e+05", "1,23", "1234,567", "12.", ".5", "abc", "-",
        ] {
            assert!(!is_decimal(no), "{no}");
        }
    }

    #[test]
    fn g5_matches_go_for_pool_and_block_sizes() {
        let cases = [
            (0.0, "0"),
            (13.0, "13"),
            (256.0, "256"),
            (65536.0, "65536"),
            (65523.0, "65523"),
            (99999.0, "99999"),
            (100000.0, "1e+05"),
            (1048576.0, "1.0486e+06"),
            (16777216.0, "1.6777e+07"),
            (4294967296.0, "4.295e+09"),
            (2f64.powi(64), "1.8447e+19"),
            (2f64.powi(80), "1.2089e+24"),
            (2f64.powi(128), "3.4028e+38"),
            (123456.0, "1.2346e+05"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
        ];
        for (x, want) in cases {
            assert_eq!(go_g5(x), want, "{x}");
        }
    }

    #[test]
    fn f0_rounds_half_to_even_as_go_does() {
        assert_eq!(go_f0(0.5), "0");
        assert_eq!(go_f0(1.5), "2");
        assert_eq!(go_f0(2.5), "2");
        assert_eq!(go_f0(99.98), "100");
        assert_eq!(go_f0(100.0 * 13.0 / 65536.0), "0");
    }
}
