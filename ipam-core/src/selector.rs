//! Calico label selectors, as used by `IPPool` `nodeSelector` and
//! `namespaceSelector`.
//!
//! The planner uses [`Selector`] to decide which pools apply to a node or
//! namespace. This module is pure computation: it does no I/O and keeps no
//! global state.
//!
//! Syntax and semantics follow Calico v3.32 `libcalico-go/lib/selector`
//! (`tokenizer/tokenizer.go`, `parser/parser.go`, `parser/ast.go`):
//!
//! ```text
//! selector := [ or ]                      (nothing at all selects everything)
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!"* primary
//! primary  := "all()" | "global()" | "has(" label ")" | "(" or ")"
//!           | label ( "==" | "!=" | "contains" | "starts with" | "ends with" ) string
//!           | label ( "in" | "not in" ) "{" [ string ( "," string )* [ "," ] ] "}"
//! ```
//!
//! Blanks (space and tab only) may appear between any two tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

/// tokenizer.go `MaxLabelLength`, in bytes.
const MAX_LABEL_LEN: usize = 512;

/// Calico has no nesting limit (Go stacks grow on demand); we cap it so that
/// hostile input cannot overflow our fixed-size stack.
const MAX_NESTING: usize = 200;

/// A parsed Calico label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    root: Node,
}

/// Why a selector could not be parsed: names the selector text and the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?} at byte {position}: {reason}")]
pub struct SelectorError {
    /// The full selector text that failed to parse.
    pub selector: String,
    /// Byte offset into `selector` where the problem was found.
    pub position: usize,
    /// Human-readable description of the problem.
    pub reason: String,
}

impl Selector {
    /// Parses Calico selector syntax. Empty / whitespace-only input selects everything.
    ///
    /// Only spaces and tabs count as whitespace, as in Calico.
    ///
    /// # Errors
    /// Any syntax Calico rejects, e.g. an unterminated string or a newline.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut parser = Parser {
            src: text,
            at: 0,
            depth: 0,
        };
        parser
            .root()
            .map(|root| Selector { root })
            .map_err(|(position, reason)| SelectorError {
                selector: text.to_owned(),
                position,
                reason,
            })
    }

    /// Whether a set of labels satisfies the selector.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.root.eval(labels)
    }

    /// True for selectors that select everything (`all()`, empty).
    ///
    /// `global()` also matches any labels, but is reported as `false` here
    /// because Calico gives it a distinct meaning (non-namespaced entities).
    #[must_use]
    pub fn selects_all(&self) -> bool {
        self.root == Node::All
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Selector::parse(text)
    }
}

/// The string operators. All are false for an absent label; `!=` is parsed
/// as a negated `==` (see `OPERATORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrOp {
    Eq,
    Contains,
    StartsWith,
    EndsWith,
}

impl StrOp {
    fn holds(self, actual: &str, wanted: &str) -> bool {
        match self {
            StrOp::Eq => actual == wanted,
            StrOp::Contains => actual.contains(wanted),
            StrOp::StartsWith => actual.starts_with(wanted),
            StrOp::EndsWith => actual.ends_with(wanted),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    All,
    Global,
    Has(String),
    /// Label key, operator, value.
    Compare(String, StrOp, String),
    /// Label key and a sorted set, so that selectors differing only in set
    /// order compare equal.
    In(String, BTreeSet<String>),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
}

impl Node {
    fn eval(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            // ast.go: GlobalNode evaluates to true for any labels.
            Node::All | Node::Global => true,
            Node::Has(key) => labels.contains_key(key),
            Node::Compare(key, op, value) => labels.get(key).is_some_and(|v| op.holds(v, value)),
            Node::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Node::Not(inner) => !inner.eval(labels),
            Node::And(terms) => terms.iter().all(|t| t.eval(labels)),
            Node::Or(terms) => terms.iter().any(|t| t.eval(labels)),
        }
    }
}

/// A parse failure before the selector text is attached: (byte position, reason).
type Fault = (usize, String);

/// What may follow a label; see `OPERATORS`.
#[derive(Clone, Copy)]
enum Operator {
    Str(StrOp),
    In,
}

/// Operators with whether they negate. ast.go: `!=` and `not in` are true
/// for an absent label, i.e. they are exactly `!(a == v)` and `!(a in s)`.
/// tokenizer.go: the words of `starts with`, `ends with` and `not in` may be
/// separated by any number of blanks, including none (`startswith`, `notin`).
const OPERATORS: [(&[&str], Operator, bool); 7] = [
    (&["=="], Operator::Str(StrOp::Eq), false),
    (&["!="], Operator::Str(StrOp::Eq), true),
    (&["contains"], Operator::Str(StrOp::Contains), false),
    (&["starts", "with"], Operator::Str(StrOp::StartsWith), false),
    (&["ends", "with"], Operator::Str(StrOp::EndsWith), false),
    (&["not", "in"], Operator::In, true),
    (&["in"], Operator::In, false),
];

/// tokenizer.go `identifierChar`: label keys are ASCII letters, digits and `_ . / -`.
fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// tokenizer.go `trimWhitespace`: only space and tab are blanks.
fn trim_blanks(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Recursive descent straight over the text. Calico tokenizes first, but its
/// tokenizer only reads a word as an operator right after a label, which is
/// exactly where this parser looks for one, so both accept the same inputs.
struct Parser<'a> {
    src: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn root(&mut self) -> Result<Node, Fault> {
        // parser.go: input with no tokens at all is `all()`.
        if self.at_end() {
            return Ok(Node::All);
        }
        let root = self.or_expr()?;
        if !self.at_end() {
            return Err(self.unexpected("'&&', '||' or end of input"));
        }
        Ok(root)
    }

    fn rest(&self) -> &'a str {
        &self.src[self.at..]
    }

    fn skip_blanks(&mut self) {
        self.at = self.src.len() - trim_blanks(self.rest()).len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_blanks();
        self.rest().is_empty()
    }

    fn label_len(&self) -> usize {
        self.rest()
            .bytes()
            .take_while(|&b| is_label_byte(b))
            .count()
    }

    /// Consumes `prefix` (after any blanks) if the input continues with it.
    fn eat(&mut self, prefix: &str) -> bool {
        self.skip_blanks();
        let found = self.rest().starts_with(prefix);
        if found {
            self.at += prefix.len();
        }
        found
    }

    fn expect(&mut self, prefix: &str, wanted: &str) -> Result<(), Fault> {
        if self.eat(prefix) {
            return Ok(());
        }
        Err(self.unexpected(wanted))
    }

    /// A fault at the next non-blank byte, describing what is there.
    fn unexpected(&mut self, wanted: &str) -> Fault {
        self.skip_blanks();
        let found = match (self.label_len(), self.rest().chars().next()) {
            (0, Some(c)) => format!("{c:?}"),
            (0, None) => "end of input".to_owned(),
            (len, _) => format!("{:?}", &self.rest()[..len]),
        };
        (self.at, format!("expected {wanted}, found {found}"))
    }

    /// Consumes a (possibly multi-word) operator. A word must not run on into
    /// a label (`a inx` is not `a in x`); symbols like `==` need no boundary.
    fn eat_words(&mut self, words: &[&str]) -> bool {
        let mut rest = self.rest();
        for word in words {
            match trim_blanks(rest).strip_prefix(word) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        let is_word = words.iter().all(|w| w.bytes().all(is_label_byte));
        if is_word && rest.bytes().next().is_some_and(is_label_byte) {
            return false;
        }
        self.at = self.src.len() - rest.len();
        true
    }

    /// parser.go: `||` has the lowest precedence, then `&&`.
    fn or_expr(&mut self) -> Result<Node, Fault> {
        let mut terms = vec![self.and_expr()?];
        while self.eat("||") {
            terms.push(self.and_expr()?);
        }
        Ok(flatten(terms, Node::Or))
    }

    fn and_expr(&mut self) -> Result<Node, Fault> {
        let mut terms = vec![self.unary()?];
        while self.eat("&&") {
            terms.push(self.unary()?);
        }
        Ok(flatten(terms, Node::And))
    }

    /// parser.go: a run of `!` collapses to one negation (or none), and it
    /// applies to the whole comparison, so `!a == 'x'` means `!(a == 'x')`.
    fn unary(&mut self) -> Result<Node, Fault> {
        let mut negated = false;
        while self.eat("!") {
            negated = !negated;
        }
        Ok(negate_if(negated, self.primary()?))
    }

    fn primary(&mut self) -> Result<Node, Fault> {
        self.skip_blanks();
        let open = self.at;
        // tokenizer.go: a function name must touch its `(`, so `has (a)` is
        // the label "has" followed by a stray parenthesis.
        if self.eat("has(") {
            let key = self.label("a label")?;
            self.expect(")", "')' to close has(")?;
            Ok(Node::Has(key))
        } else if self.eat("all(") {
            self.expect(")", "')' to close all(")?;
            Ok(Node::All)
        } else if self.eat("global(") {
            self.expect(")", "')' to close global(")?;
            Ok(Node::Global)
        } else if self.eat("(") {
            self.group(open)
        } else {
            let key = self.label("an expression")?;
            self.comparison(key)
        }
    }

    fn group(&mut self, open: usize) -> Result<Node, Fault> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err((open, "parentheses nested too deeply".into()));
        }
        let inner = self.or_expr()?;
        self.expect(")", "')'")?;
        self.depth -= 1;
        Ok(inner)
    }

    fn comparison(&mut self, key: String) -> Result<Node, Fault> {
        let Some(&(_, operator, negated)) = OPERATORS.iter().find(|(w, ..)| self.eat_words(w))
        else {
            return Err(self.unexpected(&format!("an operator after label {key:?}")));
        };
        let node = match operator {
            Operator::Str(op) => Node::Compare(key, op, self.string()?),
            Operator::In => Node::In(key, self.set_literal()?),
        };
        Ok(negate_if(negated, node))
    }

    fn label(&mut self, wanted: &str) -> Result<String, Fault> {
        self.skip_blanks();
        let (start, len) = (self.at, self.label_len());
        if len == 0 {
            return Err(self.unexpected(wanted));
        }
        if len > MAX_LABEL_LEN {
            return Err((start, format!("label longer than {MAX_LABEL_LEN} bytes")));
        }
        self.at += len;
        Ok(self.src[start..self.at].to_owned())
    }

    fn at_quote(&mut self) -> bool {
        self.skip_blanks();
        self.rest().starts_with(['"', '\''])
    }

    /// tokenizer.go: strings have no escapes, so a value can hold the other
    /// quote character but never its own.
    fn string(&mut self) -> Result<String, Fault> {
        if !self.at_quote() {
            return Err(self.unexpected("a quoted string"));
        }
        let start = self.at;
        let quote = if self.rest().starts_with('"') {
            '"'
        } else {
            '\''
        };
        let body = &self.src[start + 1..];
        let Some(len) = body.find(quote) else {
            return Err((start, "unterminated string".into()));
        };
        self.at = start + 1 + len + 1;
        Ok(body[..len].to_owned())
    }

    /// parser.go: `{}` is the empty set and a trailing comma before `}` is allowed.
    fn set_literal(&mut self) -> Result<BTreeSet<String>, Fault> {
        self.expect("{", "'{' to start a set")?;
        let mut values = BTreeSet::new();
        while self.at_quote() {
            values.insert(self.string()?);
            if !self.eat(",") {
                break;
            }
        }
        self.expect("}", "',' or '}' in set")?;
        Ok(values)
    }
}

fn negate_if(negated: bool, node: Node) -> Node {
    if negated {
        return Node::Not(Box::new(node));
    }
    node
}

/// parser.go: a single term is kept as-is rather than wrapped.
fn flatten(terms: Vec<Node>, wrap: fn(Vec<Node>) -> Node) -> Node {
    match <[Node; 1]>::try_from(terms) {
        Ok([only]) => only,
        Err(terms) => wrap(terms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `"a=x,b="` is the label set {a: x, b: ""}; `""` is no labels.
    fn labels(spec: &str) -> BTreeMap<String, String> {
        let pairs = spec.split(',').filter_map(|p| p.split_once('='));
        pairs.map(|(k, v)| (k.into(), v.into())).collect()
    }

    /// Asserts `text` matches every label set in `hits` and none in `misses`.
    fn check(text: &str, hits: &[&str], misses: &[&str]) {
        let sel = Selector::parse(text).unwrap();
        for spec in hits {
            assert!(sel.matches(&labels(spec)), "{text:?} should match {spec:?}");
        }
        for spec in misses {
            let hit = sel.matches(&labels(spec));
            assert!(!hit, "{text:?} should not match {spec:?}");
        }
    }

    /// Asserts `text` is rejected at byte `position` with a reason mentioning `fragment`.
    fn rejected_at(text: &str, position: usize, fragment: &str) {
        let err = Selector::parse(text).unwrap_err();
        let got = (err.selector.as_str(), err.position);
        assert_eq!(got, (text, position), "{err}");
        assert!(err.reason.contains(fragment), "{err}");
    }

    #[test]
    fn empty_or_blank_input_selects_everything() {
        for text in ["", " \t  "] {
            assert!(Selector::parse(text).unwrap().selects_all());
            check(text, &["", "a=b"], &[]);
        }
    }

    #[test]
    fn all_selects_everything_and_its_negation_nothing() {
        for text in ["all()", " all( ) ", "(all())", "!!all()"] {
            assert!(Selector::parse(text).unwrap().selects_all(), "{text}");
        }
        assert!(!Selector::parse("!all()").unwrap().selects_all());
        check("!all()", &[], &["", "a=b"]);
    }

    #[test]
    fn global_matches_any_labels_but_is_not_select_all() {
        check(" global( )", &["", "a=b"], &[]);
        assert!(!Selector::parse("global()").unwrap().selects_all());
    }

    #[test]
    fn positive_operators_need_the_label_present() {
        check("has( a )", &["a="], &["b=a", ""]);
        check("a == 'x'", &["a=x"], &["a=y", "b=x"]);
        check("n contains 'gpu'", &["n=a-gpu-1"], &["n=a-cpu", "m=gpu"]);
        check("n starts with 'n-'", &["n=n-gpu"], &["n=a-n-", "m=n-"]);
        check("n ends with '-1'", &["n=n-1"], &["n=n-1x", "m=-1"]);
        check("r in {'r1', \"r2\"}", &["r=r1", "r=r2"], &["r=r3", "s=r1"]);
    }

    #[test]
    fn not_equal_and_not_in_match_when_label_is_absent() {
        check("a != 'x'", &["", "a=y"], &["a=x"]);
        check("t not in {'x', 'y'}", &["", "t=z"], &["t=x", "t=y"]);
    }

    #[test]
    fn sets_may_be_empty_unordered_or_end_in_a_comma() {
        check("a in {}", &[], &["a="]);
        check("a in {'x',}", &["a=x"], &[]);
        let unordered = Selector::parse("a in {'y', 'x', 'y'}").unwrap();
        assert_eq!(unordered, Selector::parse("a in {'x','y'}").unwrap());
    }

    #[test]
    fn blanks_are_optional_between_tokens_and_operator_words() {
        check("a=='x'&&b!='y'||has(c)", &["a=x", "c="], &["b=y"]);
        check("a startswith 'x' && a ends \t with 'y'", &["a=xy"], &[]);
        check("a notin {'x'}", &["a=y"], &["a=x"]);
    }

    #[test]
    fn either_quote_style_works_and_has_no_escapes() {
        check(r#"a in {"'", '"'}"#, &["a='", "a=\""], &[]);
        check(r"a == 'x\'", &[r"a=x\"], &[]);
    }

    #[test]
    fn label_keys_allow_dns_style_names_and_keywords() {
        let text = r#"kubernetes.io/os == "linux" && !has(edge) && my_key-2 == 'v'"#;
        let hit = "kubernetes.io/os=linux,my_key-2=v";
        check(text, &[hit], &["kubernetes.io/os=linux"]);
        let text = "all == 'x' && has == 'y' && in == 'z'";
        check(text, &["all=x,has=y,in=z"], &[]);
    }

    #[test]
    fn and_binds_tighter_than_or_unless_parenthesised() {
        check("has(a) || has(b) && has(c)", &["a="], &["b="]);
        check("has(b) && has(c) || has(a)", &["a="], &["b="]);
        let text = "(a == 'x' || b != 'y') && has(c)";
        check(text, &["b=z,c="], &["a=x", "b=y,c="]);
    }

    #[test]
    fn negation_covers_the_whole_comparison_and_cancels_in_pairs() {
        check("!a == 'x'", &["", "a=y"], &["a=x"]);
        check("!(has(b) || !has(a))", &["a="], &["a=,b="]);
        check("! !! has(a)", &[""], &["a="]);
    }

    #[test]
    fn from_str_delegates_to_parse() {
        let sel: Selector = "has(a)".parse().unwrap();
        assert_eq!(sel, Selector::parse("has(a)").unwrap());
        assert_eq!("has(".parse::<Selector>(), Selector::parse("has("));
    }

    #[test]
    fn error_message_names_the_selector_text_and_position() {
        let message = Selector::parse("zone == ").unwrap_err().to_string();
        assert!(message.contains(r#""zone == " at byte 8"#), "{message}");
    }

    #[test]
    fn unterminated_string_is_rejected_at_its_opening_quote() {
        rejected_at("a == 'x", 5, "unterminated");
        rejected_at(r#"a == "x'"#, 5, "unterminated");
    }

    #[test]
    fn missing_operand_is_rejected() {
        rejected_at("a == ", 5, "expected a quoted string, found end of input");
        rejected_at("a == b", 5, r#"expected a quoted string, found "b""#);
        rejected_at("has(a) &&", 9, "expected an expression");
        rejected_at("!", 1, "expected an expression");
        rejected_at("'b' == b", 0, "expected an expression");
    }

    #[test]
    fn unknown_function_or_operator_is_rejected() {
        rejected_at("any()", 3, r#"operator after label "any", found '('"#);
        rejected_at("has (a)", 4, "expected an operator");
        rejected_at("a", 1, "expected an operator");
        rejected_at("a like 'x'", 2, r#"found "like""#);
        rejected_at("a inx {'x'}", 2, "expected an operator");
        rejected_at("a = 'x'", 2, "expected an operator");
        rejected_at("has(a) & has(b)", 7, "found '&'");
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        rejected_at("a == 'x' b", 9, r#"'||' or end of input, found "b""#);
        rejected_at("has(a))", 6, "found ')'");
        rejected_at("has(a)\n", 6, r"found '\n'"); // Calico: newline is not a blank.
    }

    #[test]
    fn bad_label_characters_are_rejected() {
        rejected_at("%", 0, "expected an expression, found '%'");
        rejected_at("a$b == 'x'", 1, "expected an operator");
        rejected_at("has(é)", 4, "expected a label, found 'é'");
        rejected_at("has()", 4, "expected a label");
        rejected_at("has(a b)", 6, "expected ')' to close has(");
    }

    #[test]
    fn unbalanced_parentheses_are_rejected() {
        rejected_at("(a == 'x'", 9, "expected ')', found end of input");
        rejected_at(")", 0, "expected an expression");
        rejected_at("()", 1, "expected an expression");
        rejected_at("all(", 4, "expected ')' to close all(");
    }

    #[test]
    fn set_operators_require_a_closed_set_literal() {
        rejected_at("a in 'x'", 5, "expected '{'");
        rejected_at("a in {'x' 'y'}", 10, "expected ',' or '}'");
        rejected_at("a in {,}", 6, "expected ',' or '}'");
    }

    #[test]
    fn label_length_and_nesting_depth_are_bounded() {
        assert!(Selector::parse(&format!("has({})", "k".repeat(512))).is_ok());
        rejected_at(&format!("has({})", "k".repeat(513)), 4, "longer than 512");
        let deep = format!("{}all(){}", "(".repeat(10_000), ")".repeat(10_000));
        rejected_at(&deep, MAX_NESTING, "nested too deeply");
    }
}
