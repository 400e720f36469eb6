//! Multi-row statements with bound parameters, for the writer's bulk work.
//!
//! Rows go to SQLite as `VALUES (?, ?, …), (?, ?, …)` with every value bound, in chunks whose
//! sizes are powers of two up to [`CHUNK`]: a handful of statement texts cover every row
//! count, so they stay prepared in the connection's statement cache, and no row is encoded
//! as JSON only for SQLite to parse it again.
//!
//! [`query`] does the same for a statement with `RETURNING` and hands each returned row over.
//! Statements for which a repeated row changes nothing (an `UPDATE … FROM (VALUES …)` keyed
//! by id, or an `IN (VALUES …)` list) go through [`execute_padded`]: one statement per
//! [`CHUNK`] rows, the last chunk padded up to a power of two by repeating its last row.

use rusqlite::{
    types::{FromSql, ToSql},
    CachedStatement, Connection, Row,
};

/// Most rows in one statement (× at most 10 columns stays far below SQLite's 32,766
/// parameters).
pub(super) const CHUNK: usize = 256;

/// Splits `rows` into chunks of power-of-two sizes, largest first, none over [`CHUNK`].
pub(super) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = CHUNK.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// `(?,?,?),(?,?,?)`: `rows` groups of `cols` placeholders.
pub(super) fn values(rows: usize, cols: usize) -> String {
    let group = format!("({})", vec!["?"; cols].join(","));
    vec![group; rows].join(",")
}

/// Binds a statement's parameters one after another, in placeholder order.
pub(super) struct Binder<'s, 'c> {
    stmt: &'s mut CachedStatement<'c>,
    next: usize,
}

impl Binder<'_, '_> {
    /// Binds the next parameter.
    pub fn add<V: ToSql>(&mut self, value: V) -> rusqlite::Result<()> {
        self.next += 1;
        self.stmt.raw_bind_parameter(self.next, value)
    }
}

/// Binds one row's values, in column order.
pub(super) type Bind<T> = fn(&mut Binder<'_, '_>, &T) -> rusqlite::Result<()>;

/// Runs `sql` (which holds one `{values}` marker) over `rows` in chunks, binding each row's
/// `cols` values with `bind`.
pub(super) fn execute<T>(conn: &Connection, sql: &str, cols: usize, rows: &[T], bind: Bind<T>) -> anyhow::Result<()> {
    let statements = chunks(rows).map(|chunk| (chunk, chunk.len()));
    each_statement(conn, sql, cols, statements, bind, run_once)
}

/// As [`execute`], for a statement with `RETURNING`: `read` gets every row it returns.
pub(super) fn query<T>(
    conn: &Connection,
    sql: &str,
    cols: usize,
    rows: &[T],
    bind: Bind<T>,
    mut read: impl FnMut(&Row<'_>) -> rusqlite::Result<()>,
) -> anyhow::Result<()> {
    let statements = chunks(rows).map(|chunk| (chunk, chunk.len()));
    each_statement(conn, sql, cols, statements, bind, |stmt| {
        let mut returned = stmt.raw_query();
        while let Some(row) = returned.next()? {
            read(row)?;
        }
        Ok(())
    })
}

/// The two columns of every row `sql` returns for its one parameter, `list` (a JSON array
/// that `json_each` walks): the writer's lookups by a list of keys.
pub(super) fn pairs<A: FromSql, B: FromSql, C: FromIterator<(A, B)>>(
    conn: &Connection,
    sql: &str,
    list: &str,
) -> anyhow::Result<C> {
    let mut stmt = conn.prepare_cached(sql)?;
    let found = stmt.query_map([list], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(found.collect::<rusqlite::Result<C>>()?)
}

/// Splits `rows` into chunks of [`CHUNK`]; each chunk is run as one statement padded to the
/// next power of two with copies of its last row.
pub(super) fn padded_chunks<T>(rows: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    rows.chunks(CHUNK).map(|chunk| (chunk, chunk.len().next_power_of_two()))
}

/// As [`execute`], for statements where a row given twice has the same effect as once: one
/// statement per [`CHUNK`] rows.
pub(super) fn execute_padded<T>(
    conn: &Connection,
    sql: &str,
    cols: usize,
    rows: &[T],
    bind: Bind<T>,
) -> anyhow::Result<()> {
    each_statement(conn, sql, cols, padded_chunks(rows), bind, run_once)
}

/// Runs a statement that returns no rows.
fn run_once(stmt: &mut CachedStatement<'_>) -> anyhow::Result<()> {
    stmt.raw_execute()?;
    Ok(())
}

/// Prepares one statement per `(chunk, size)`, `size` rows of placeholders, binds the chunk's
/// rows first and its last row repeated for the rest, and hands it to `run`.
fn each_statement<'r, T: 'r>(
    conn: &Connection,
    sql: &str,
    cols: usize,
    statements: impl Iterator<Item = (&'r [T], usize)>,
    bind: Bind<T>,
    mut run: impl FnMut(&mut CachedStatement<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for (chunk, size) in statements {
        let text = sql.replace("{values}", &values(size, cols));
        let mut stmt = conn.prepare_cached(&text)?;
        let mut binder = Binder { stmt: &mut stmt, next: 0 };
        let repeats = chunk.last().into_iter().cycle().take(size - chunk.len());
        for row in chunk.iter().chain(repeats) {
            bind(&mut binder, row)?;
        }
        run(&mut stmt)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_and_cover_every_row() {
        let rows: Vec<u32> = (0..1000).collect();
        let sizes: Vec<usize> = chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 256, 256, 128, 64, 32, 8]);
        assert_eq!(chunks(&rows[..0]).count(), 0);
        assert_eq!(chunks(&rows[..3]).map(<[u32]>::len).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn padded_chunks_make_one_statement_per_chunk() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<(usize, usize)> = padded_chunks(&rows).map(|(c, n)| (c.len(), n)).collect();
        assert_eq!(sizes, [(256, 256), (256, 256), (88, 128)]);
        assert_eq!(padded_chunks(&rows[..1]).map(|(c, n)| (c.len(), n)).collect::<Vec<_>>(), [(1, 1)]);
        assert_eq!(padded_chunks(&rows[..0]).count(), 0);
    }

    #[test]
    fn values_lists_placeholders() {
        assert_eq!(values(2, 3), "(?,?,?),(?,?,?)");
    }
}
