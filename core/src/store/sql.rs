//! A small SQL builder for queries with optional filters: `$n` placeholders numbered in
//! order of appearance, which both PostgreSQL and sqlx's SQLite driver accept. Statements
//! with many parameters (multi-row writes, long `IN` lists) are built with [`Sql::on`],
//! which uses SQLite's anonymous `?` there: sqlx looks each `$n` up by name, and SQLite's
//! lookup is linear in the number of names, so `$n` costs O(n²) per statement.

use sqlx::Arguments;
use sqlx::any::{Any, AnyArguments};

pub struct Sql {
    pub text: String,
    n: usize,
    pub args: AnyArguments,
    /// `?` placeholders (SQLite) instead of `$n`.
    anonymous: bool,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_string(),
            n: 0,
            args: AnyArguments::default(),
            anonymous: false,
        }
    }

    /// A statement for `conn`'s backend: `?` placeholders on SQLite, `$n` on PostgreSQL.
    pub fn on(conn: &sqlx::AnyConnection, text: &str) -> Self {
        let mut q = Sql::new(text);
        q.anonymous = conn.backend_name().eq_ignore_ascii_case("sqlite");
        q
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'static,
    {
        self.n += 1;
        if self.anonymous {
            self.text.push('?');
        } else {
            self.text.push('$');
            self.text.push_str(&self.n.to_string());
        }
        // Encoding into AnyArguments only fails for types Any cannot carry, which this
        // module never binds; keep the error visible in logs rather than panic.
        if let Err(e) = self.args.add(value) {
            tracing::error!(error = %e, "cannot bind a query argument");
        }
        self
    }

    /// Binds each value, comma-separated, and closes the list: `$a, $b, ...)` after an
    /// `IN (` the caller wrote.
    pub fn in_list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'static,
    {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// Opens row `i` of a multi-row `VALUES` list: `(`, or `, (` after the first.
    pub fn row(&mut self, i: usize) -> &mut Self {
        self.push(if i == 0 { "(" } else { ", (" })
    }

    /// The caller's scope as a condition: `<col> = $n` for a tenant, `1 = 1` for the
    /// operator. Not one bound `($n = '*' OR <col> = $n)` for both: the planner cannot use
    /// an index on `(tenant_id, ...)` for that, and a tenant's list read every tenant's rows.
    pub fn scope(&mut self, col: &str, scope: &super::Scope) -> &mut Self {
        match scope.tenant() {
            Some(t) => {
                self.push(col).push(" = ");
                self.bind(t.to_owned())
            }
            None => self.push("1 = 1"),
        }
    }

    /// ` AND <col> = $n` when `value` is set.
    pub fn and_eq<T>(&mut self, col: &str, value: Option<T>) -> &mut Self
    where
        T: for<'q> sqlx::Encode<'q, Any> + sqlx::Type<Any> + Send + 'static,
    {
        if let Some(v) = value {
            self.push(" AND ").push(col).push(" = ");
            self.bind(v);
        }
        self
    }
}
