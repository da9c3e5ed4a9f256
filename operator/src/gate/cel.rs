//! CEL for PolicyGate `cel` rules and `if` scopes, on the [`cel`] crate (cel-rust, MIT).
//!
//! **Compile** ([`CelProgram::compile`]) when the PolicyGate is applied, never when a PR arrives:
//! - the source is at most [`MAX_SOURCE_LEN`] bytes, its brackets nest at most [`MAX_NESTING`]
//!   deep, the parser's recursion limit is [`MAX_PARSE_DEPTH`] and the tree at most
//!   [`MAX_TREE_DEPTH`] deep;
//! - the only free variable is `pr`, and `pr.<field>` must be one of [`PR_FIELDS`] (a typo is a
//!   compile error, not a rule that silently never matches);
//! - every global function must exist in the standard environment;
//! - errors name the line and column.
//!
//! **Evaluate** ([`eval_all`]: every expression of one gate evaluation against one [`CelPr`],
//! converted once): a non-boolean result, a type error, a missing map key are all errors, never
//! `true`.
//!
//! **Stack.** The crate's parser and interpreter recurse with large frames, so parsing and
//! evaluation run on one short-lived thread with a 32 MiB stack (committed only as touched),
//! bracket nesting is limited to [`MAX_NESTING`] before parsing and the tree to
//! [`MAX_TREE_DEPTH`] levels; a panic inside the crate becomes an error.
//!
//! **Cost.** The crate has no cost model or deadline of its own, and CEL has no loops besides the
//! comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`). So at compile time every
//! comprehension's range is wrapped in a call that charges the range's size against a budget of
//! [`COST_LIMIT`] iterations per evaluation; past it the evaluation stops with an error. With the
//! source length bounded and no string-multiplying functions (only the standard library is
//! loaded: no `strings` extension with its `replace`/`repeat`), time and memory are bounded by
//! `COST_LIMIT` × the size of the snapshot's largest value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, SourceInfo};
use cel::common::value::CowVal;
use cel::{Context, Env, ExecutionError, FunctionContext, Value};
use serde::Serialize;

/// Longest accepted source (the CRD allows 1024 for `if`, 4096 for `cel`).
pub const MAX_SOURCE_LEN: usize = 4096;
/// Parser recursion limit (the crate's default is 96).
pub const MAX_PARSE_DEPTH: u16 = 48;
/// Deepest bracket nesting accepted, checked before parsing.
pub const MAX_NESTING: usize = 32;
/// Deepest expression tree accepted (evaluation recurses once per level).
pub const MAX_TREE_DEPTH: usize = 64;
/// Stack of the thread that parses and evaluates. The crate's parser and interpreter recurse
/// with large frames (in a debug build a bracket level costs about 200 KiB to parse and a tree
/// level about 60 KiB to evaluate), more than a 2 MiB async worker can spare; the pages are only
/// committed as they are touched.
const THREAD_STACK: usize = 32 << 20;
/// Comprehension iterations per evaluation of one expression.
pub const COST_LIMIT: i64 = 100_000;
/// Longest error text kept (a runtime error may quote values).
const MAX_ERROR_LEN: usize = 300;

/// Fields of `pr`; see [`CelInput`] for their types.
pub const PR_FIELDS: [&str; 22] = [
    "number",
    "title",
    "body",
    "author",
    "source",
    "target",
    "labels",
    "headSha",
    "draft",
    "fork",
    "files",
    "additions",
    "deletions",
    "approvals",
    "reviews",
    "changesRequested",
    "commits",
    "checks",
    "preview",
    "teams",
    "filesTruncated",
    "commitsTruncated",
];

/// CEL's type identifiers (`type(x) == string`).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "uint",
];

/// The range-charging function inserted around every comprehension range.
const COST_FN: &str = "__pullwarden_cost";

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

type CelFunction = Box<
    dyn for<'c, 'a> Fn(&mut FunctionContext<'c, 'a>) -> Result<CowVal<'c, 'a>, ExecutionError>
        + Send
        + Sync,
>;

/// A compile error with its position (1-based), when the crate reports one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelError {
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl fmt::Display for CelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

/// A compiled (and cost-instrumented) expression.
#[derive(Clone)]
pub struct CelProgram {
    expr: IdedExpr,
    source: String,
}

impl fmt::Debug for CelProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CelProgram").field(&self.source).finish()
    }
}

/// `pr` as CEL sees it. All numbers are `int`; strings are as the forge wrote them.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CelPr {
    pub number: i64,
    pub title: String,
    pub body: String,
    pub author: String,
    pub source: String,
    pub target: String,
    pub labels: Vec<String>,
    pub head_sha: String,
    pub draft: bool,
    pub fork: bool,
    pub files: Vec<CelFile>,
    pub additions: i64,
    pub deletions: i64,
    /// Logins whose approval counts for the head (latest review per user, on the head commit or
    /// after the head was pushed; the author's own excluded).
    pub approvals: Vec<String>,
    pub reviews: Vec<CelReview>,
    /// Logins whose latest review requests changes.
    pub changes_requested: Vec<String>,
    pub commits: Vec<CelCommit>,
    /// Check or status name → `success`, `failure`, `error`, `pending`, `neutral`, `skipped`.
    pub checks: BTreeMap<String, String>,
    pub preview: CelPreview,
    /// Team → member logins, for the teams the gate names.
    pub teams: BTreeMap<String, Vec<String>>,
    pub files_truncated: bool,
    pub commits_truncated: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CelFile {
    pub path: String,
    /// Old path of a rename, else `""`.
    pub previous_path: String,
    /// `added`, `modified`, `removed`, `renamed` or `other`.
    pub status: String,
    pub additions: i64,
    pub deletions: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CelReview {
    pub user: String,
    /// `approved`, `changes_requested`, `commented`, `dismissed` or `pending`.
    pub state: String,
    /// Given on the head commit (or, without a commit, after the head was pushed).
    pub on_head: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CelCommit {
    pub sha: String,
    pub author: String,
    pub message: String,
    pub verified: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CelPreview {
    /// The PR has a PreviewEnvironment.
    pub exists: bool,
    pub ready: bool,
    /// Ready and no HealthCheck failing.
    pub healthy: bool,
}

/// The evaluation context: `pr` converted once, shared by every expression of one evaluation.
pub struct CelInput {
    ctx: Context<'static, 'static>,
    fuel: Arc<AtomicI64>,
}

impl fmt::Debug for CelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelInput").finish_non_exhaustive()
    }
}

/// Runs `f` on a thread with [`THREAD_STACK`]; a panic inside the crate becomes an error.
fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pullwarden-cel".into())
            .stack_size(THREAD_STACK)
            .spawn_scoped(scope, f)
            .map_err(|e| format!("cannot start the CEL thread: {e}"))?
            .join()
            .map_err(|_| "the CEL interpreter panicked".to_string())
    })
}

/// Evaluates `programs` against `pr`, in order, on one thread with a large stack: one result
/// per program (a boolean, or why not).
pub fn eval_all(pr: &CelPr, programs: &[&CelProgram]) -> Vec<Result<bool, String>> {
    if programs.is_empty() {
        return Vec::new();
    }
    let run = on_big_stack(|| match CelInput::new(pr) {
        Ok(input) => programs.iter().map(|p| p.eval_bool(&input)).collect(),
        Err(e) => vec![Err(e); programs.len()],
    });
    run.unwrap_or_else(|e| vec![Err(e); programs.len()])
}

impl CelInput {
    pub fn new(pr: &CelPr) -> Result<Self, String> {
        let value =
            cel::to_value(pr).map_err(|e| format!("cannot convert the pull request: {e}"))?;
        let fuel = Arc::new(AtomicI64::new(COST_LIMIT));
        let mut ctx = Context::with_env(Arc::clone(&ENV));
        ctx.add_variable_from_value("pr", value);
        let tank = Arc::clone(&fuel);
        let charge: CelFunction = Box::new(move |ftx| {
            let range = ftx
                .args
                .first()
                .cloned()
                .ok_or_else(|| ExecutionError::invalid_argument_count(1, 0))?;
            let n = range
                .as_sizer()
                .map(|s| *s.size().inner())
                .unwrap_or(1)
                .max(1);
            if tank.fetch_sub(n, Ordering::Relaxed) - n < 0 {
                return Err(ExecutionError::function_error(
                    "cost",
                    format!("more than {COST_LIMIT} iterations; simplify the expression"),
                ));
            }
            Ok(range)
        });
        ctx.add_function::<CelFunction, _>(COST_FN, charge)
            .map_err(|e| e.to_string())?;
        Ok(CelInput { ctx, fuel })
    }
}

impl CelProgram {
    /// Parses, checks and instruments `source`.
    pub fn compile(source: &str) -> Result<Self, CelError> {
        if source.len() > MAX_SOURCE_LEN {
            return Err(CelError {
                message: format!(
                    "expression is {} bytes long; at most {MAX_SOURCE_LEN} are allowed",
                    source.len()
                ),
                line: None,
                column: None,
            });
        }
        if let Some(offset) = too_deep(source, MAX_NESTING) {
            let (line, column) = line_column(source, offset).unzip();
            return Err(CelError {
                message: format!("brackets nest deeper than {MAX_NESTING} levels"),
                line,
                column,
            });
        }
        on_big_stack(|| Self::compile_here(source)).map_err(|message| CelError {
            message,
            line: None,
            column: None,
        })?
    }

    fn compile_here(source: &str) -> Result<Self, CelError> {
        let (mut expr, info) = ENV
            .parser()
            .max_recursion_depth(MAX_PARSE_DEPTH)
            .parse_with_source_info(source)
            .map_err(|errors| {
                let first = errors.errors.first();
                CelError {
                    message: first
                        .map(|e| e.msg.clone())
                        .unwrap_or_else(|| errors.to_string()),
                    line: first
                        .and_then(|e| u32::try_from(e.pos.0).ok())
                        .filter(|l| *l > 0),
                    column: first
                        .and_then(|e| u32::try_from(e.pos.1).ok())
                        .filter(|_| first.is_some_and(|e| e.pos.0 > 0)),
                }
            })?;
        let mut checker = Checker {
            info: &info,
            source,
            bound: Vec::new(),
        };
        checker.check(&mut expr, 1)?;
        Ok(CelProgram {
            expr,
            source: source.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean; anything else (another type, an error, the cost limit) is `Err`.
    /// Runs on the caller's stack: use [`eval_all`] unless that is known to be large.
    pub fn eval_bool(&self, input: &CelInput) -> Result<bool, String> {
        input.fuel.store(COST_LIMIT, Ordering::Relaxed);
        match Value::resolve(&self.expr, &input.ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the expression returned {}, not a bool",
                other.type_of()
            )),
            Err(e) => Err(crate::forge::truncate_chars(&e.to_string(), MAX_ERROR_LEN)),
        }
    }
}

struct Checker<'a> {
    info: &'a SourceInfo,
    source: &'a str,
    /// Comprehension variables in scope.
    bound: Vec<String>,
}

impl Checker<'_> {
    fn error(&self, id: u64, message: String) -> CelError {
        let (line, column) = self
            .info
            .offset_for(id)
            .and_then(|(start, _)| line_column(self.source, start as usize))
            .map_or((None, None), |(l, c)| (Some(l), Some(c)));
        CelError {
            message,
            line,
            column,
        }
    }

    fn check(&mut self, e: &mut IdedExpr, depth: usize) -> Result<(), CelError> {
        let id = e.id;
        if depth > MAX_TREE_DEPTH {
            return Err(self.error(
                id,
                format!("the expression nests deeper than {MAX_TREE_DEPTH} levels"),
            ));
        }
        let d = depth + 1;
        match &mut e.expr {
            Expr::Ident(name) => {
                if name != "pr"
                    && !TYPE_NAMES.contains(&name.as_str())
                    && !self.bound.iter().any(|b| b == name)
                {
                    return Err(self.error(
                        id,
                        format!("unknown variable `{name}`: the only variable is `pr`"),
                    ));
                }
            }
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && root == "pr"
                    && !self.bound.iter().any(|b| b == "pr")
                    && !PR_FIELDS.contains(&select.field.as_str())
                {
                    return Err(self.error(
                        id,
                        format!(
                            "`pr` has no field `{}`; it has {}",
                            select.field,
                            PR_FIELDS.join(", ")
                        ),
                    ));
                }
                self.check(&mut select.operand, d)?;
            }
            Expr::Call(call) => {
                if call.target.is_none() && !known_function(&call.func_name) {
                    return Err(self.error(id, format!("unknown function `{}`", call.func_name)));
                }
                if let Some(t) = call.target.as_deref_mut() {
                    self.check(t, d)?;
                }
                for a in &mut call.args {
                    self.check(a, d)?;
                }
            }
            Expr::List(list) => {
                for el in &mut list.elements {
                    self.check(el, d)?;
                }
            }
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.check(&mut m.key, d)?;
                            self.check(&mut m.value, d)?;
                        }
                        EntryExpr::StructField(f) => self.check(&mut f.value, d)?,
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &mut s.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.check(&mut m.key, d)?;
                            self.check(&mut m.value, d)?;
                        }
                        EntryExpr::StructField(f) => self.check(&mut f.value, d)?,
                    }
                }
            }
            Expr::Comprehension(c) => {
                self.check(&mut c.iter_range, d)?;
                self.check(&mut c.accu_init, d)?;
                let range = std::mem::take(&mut c.iter_range);
                c.iter_range = IdedExpr {
                    id: range.id,
                    expr: Expr::Call(CallExpr {
                        func_name: COST_FN.to_string(),
                        target: None,
                        args: vec![range],
                    }),
                };
                let scope = self.bound.len();
                self.bound.push(c.iter_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.bound.push(v.clone());
                }
                self.bound.push(c.accu_var.clone());
                let r = self
                    .check(&mut c.loop_cond, d)
                    .and_then(|()| self.check(&mut c.loop_step, d))
                    .and_then(|()| self.check(&mut c.result, d));
                self.bound.truncate(scope);
                r?;
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
        Ok(())
    }
}

/// Whether the standard environment (or CEL's operators) defines a global function `name`.
fn known_function(name: &str) -> bool {
    // Operators are spelled `_+_`, `!_`, `-_`, `@in`, `@not_strictly_false`, `_[_]`, `_?_:_`.
    if name.starts_with('_') || name.starts_with('@') || name.ends_with('_') {
        return true;
    }
    // The crate offers no lookup; adding a function of that name to a scratch context fails
    // exactly when the environment already declares it.
    static KNOWN: LazyLock<std::sync::Mutex<BTreeMap<String, bool>>> =
        LazyLock::new(Default::default);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = known.get(name) {
        return *k;
    }
    let mut probe = Context::with_env(Arc::clone(&ENV));
    let declared = probe.add_function(name, || true).is_err();
    if known.len() < 1024 {
        known.insert(name.to_string(), declared);
    }
    declared
}

/// Where the brackets of `source` first nest deeper than `limit` (brackets inside string
/// literals count too: conservative, and cheap before parsing).
fn too_deep(source: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in source.bytes().enumerate() {
        match b {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(i);
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(source: &str, offset: usize) -> Option<(u32, u32)> {
    let before = source.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Some((u32::try_from(line).ok()?, u32::try_from(column).ok()?))
}

/// Every team name in a map, sorted (for `pr.teams`).
pub fn teams_view(teams: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, Vec<String>> {
    teams
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr() -> CelPr {
        CelPr {
            number: 42,
            title: "feat: add thing".into(),
            author: "alice".into(),
            target: "main".into(),
            labels: vec!["ready".into()],
            files: (0..50)
                .map(|i| CelFile {
                    path: format!("src/f{i}.rs"),
                    status: "modified".into(),
                    additions: i,
                    ..CelFile::default()
                })
                .collect(),
            approvals: vec!["bob".into()],
            checks: BTreeMap::from([("ci".to_string(), "success".to_string())]),
            ..CelPr::default()
        }
    }

    fn eval(src: &str) -> Result<bool, String> {
        let p = CelProgram::compile(src).map_err(|e| e.to_string())?;
        eval_all(&pr(), &[&p]).remove(0)
    }

    #[test]
    fn evaluates_over_the_pull_request() {
        assert_eq!(eval("pr.title.startsWith('feat')"), Ok(true));
        assert_eq!(eval("'ready' in pr.labels && pr.number == 42"), Ok(true));
        assert_eq!(eval("pr.files.all(f, f.path.startsWith('src/'))"), Ok(true));
        assert_eq!(eval("pr.files.exists(f, f.additions > 48)"), Ok(true));
        assert_eq!(
            eval("pr.files.filter(f, f.additions > 10).size() == 39"),
            Ok(true)
        );
        assert_eq!(eval("size(pr.approvals) >= 2"), Ok(false));
        assert_eq!(eval("pr.checks['ci'] == 'success'"), Ok(true));
        assert_eq!(eval("pr.title.matches('^(feat|fix):')"), Ok(true));
        assert_eq!(eval("!pr.draft && !pr.preview.exists"), Ok(true));
    }

    #[test]
    fn runtime_errors_are_errors_never_true() {
        // Missing map key.
        assert!(
            eval("pr.checks['lint'] == 'success'")
                .unwrap_err()
                .contains("lint")
        );
        // Type error.
        assert!(eval("pr.title > 3").is_err());
        // Not a bool.
        assert!(eval("pr.number").unwrap_err().contains("not a bool"));
        // An error on the left of || with a true right is true (CEL's commutative logic), but
        // an error with nothing to absorb it stays an error.
        assert_eq!(eval("pr.checks['x'] == 'y' || true"), Ok(true));
        assert!(eval("pr.checks['x'] == 'y' || false").is_err());
    }

    #[test]
    fn compile_errors_name_the_position() {
        let e = CelProgram::compile("pr.title ==").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.column.is_some(), "{e}");
        let e = CelProgram::compile("pr.title == 'x' &&\n  pr.titel == 'y'").unwrap_err();
        assert!(e.message.contains("no field `titel`"), "{e}");
        // The position of the selection: `.titel`.
        assert_eq!((e.line, e.column), (Some(2), Some(5)), "{e}");
        let e = CelProgram::compile("prr.title == 'x'").unwrap_err();
        assert!(e.message.contains("unknown variable `prr`"), "{e}");
        let e = CelProgram::compile("lower(pr.title) == 'x'").unwrap_err();
        assert!(e.message.contains("unknown function `lower`"), "{e}");
        // Comprehension variables are in scope inside, not outside.
        CelProgram::compile("pr.files.all(f, f.additions < 10)").unwrap();
        assert!(CelProgram::compile("pr.files.all(f, true) && f.path == ''").is_err());
        // Standard functions are known.
        for ok in [
            "size(pr.title) > 0",
            "int(pr.additions) >= 0",
            "string(pr.number) == '42'",
            "type(pr.title) == string && type(pr.number) == int",
            "has(pr.preview.ready)",
            "pr.title.contains('x') || pr.title.endsWith('y')",
        ] {
            CelProgram::compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!("pr.title == '{}'", "x".repeat(MAX_SOURCE_LEN));
        assert!(
            CelProgram::compile(&long)
                .unwrap_err()
                .message
                .contains("bytes long")
        );
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        let e = CelProgram::compile(&deep).unwrap_err();
        assert!(e.message.contains("nest deeper than 32"), "{e}");
        assert_eq!((e.line, e.column), (Some(1), Some(33)));
        let chain = format!("pr.number{} > 0", " + 1".repeat(100));
        assert!(
            CelProgram::compile(&chain)
                .unwrap_err()
                .message
                .contains("nests deeper than 64")
        );
    }

    #[test]
    fn deep_expressions_within_the_limits_run_on_the_cel_thread() {
        // Nested 30 deep: too deep for a 2 MiB stack in a debug build, fine on the CEL thread.
        let src = format!("{}pr.number{} > 0", "(1 + ".repeat(30), ")".repeat(30));
        assert_eq!(eval(&src), Ok(true));
        let src = format!("{}pr.draft", "!".repeat(40));
        assert_eq!(eval(&src), Ok(false));
    }

    #[test]
    fn cost_limit_stops_runaway_comprehensions() {
        // 50 × 50 × 50 = 125 000 iterations > COST_LIMIT.
        let e = eval(
            "pr.files.all(a, pr.files.all(b, pr.files.all(c, a.additions + b.additions + c.additions >= 0)))",
        )
        .unwrap_err();
        assert!(e.contains("iterations"), "{e}");
        // 50 × 50 is fine, and the budget is per expression, not per input.
        let p =
            CelProgram::compile("pr.files.all(a, pr.files.exists(b, b.path == a.path))").unwrap();
        assert_eq!(eval_all(&pr(), &[&p, &p, &p]), vec![Ok(true); 3]);
        // Literal ranges are charged too.
        let big: Vec<String> = (0..400).map(|i| i.to_string()).collect();
        let list = format!("[{}]", big.join(","));
        let src = format!("{list}.all(x, {list}.all(y, x + y >= 0))");
        assert!(src.len() < MAX_SOURCE_LEN);
        assert!(eval(&src).unwrap_err().contains("iterations"));
    }
}
