//! Reading SQLite on the calling thread: sqlx's driver steps every
//! statement on the connection's worker thread and hands each row, its
//! values copied, to the caller (for verification a third of its time, in
//! allocation, copies and thread hand-offs, `BENCHMARKS.md`). Here the
//! connection's handle is locked out of its worker
//! ([`sqlx::sqlite::SqliteConnection::lock_handle`]), statements are
//! stepped on the thread that uses the rows, and values are read straight
//! from SQLite's own buffers. Used by verification (`verifications.rs`)
//! and the decision view's load (`current.rs`).

use std::ffi::{CStr, CString, c_int};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

/// A prepared statement, finalized when dropped.
pub(super) struct Stmt {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: prepared by `prepare` on `db`, finalized once.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}

fn message(db: *mut ffi::sqlite3) -> String {
    // SAFETY: `db` is an open connection; the message is copied at once.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned()
}

fn type_name(t: c_int) -> &'static str {
    match t {
        ffi::SQLITE_INTEGER => "an integer",
        ffi::SQLITE_FLOAT => "a real number",
        ffi::SQLITE_TEXT => "text",
        ffi::SQLITE_BLOB => "a blob",
        _ => "null",
    }
}

impl Stmt {
    pub(super) fn prepare(db: *mut ffi::sqlite3, sql: &str) -> Result<Stmt, String> {
        let sql = CString::new(sql).map_err(|e| e.to_string())?;
        let mut stmt = ptr::null_mut();
        // SAFETY: `db` is an open connection this thread holds locked.
        let rc =
            unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, ptr::null_mut()) };
        match NonNull::new(stmt) {
            Some(stmt) if rc == ffi::SQLITE_OK => Ok(Stmt { db, stmt }),
            _ => Err(message(db)),
        }
    }

    fn check(&self, rc: c_int) -> Result<(), String> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(message(self.db))
        }
    }

    pub(super) fn bind_text(&mut self, i: c_int, v: &str) -> Result<(), String> {
        // SAFETY: SQLITE_TRANSIENT makes SQLite copy the text.
        self.check(unsafe {
            ffi::sqlite3_bind_text(
                self.stmt.as_ptr(),
                i,
                v.as_ptr().cast(),
                v.len() as c_int,
                ffi::SQLITE_TRANSIENT(),
            )
        })
    }

    pub(super) fn bind_int(&mut self, i: c_int, v: i64) -> Result<(), String> {
        // SAFETY: a valid statement and parameter number.
        self.check(unsafe { ffi::sqlite3_bind_int64(self.stmt.as_ptr(), i, v) })
    }

    /// The next row; `false` when there are no more. `&mut`, so no
    /// value borrowed from the previous row outlives it.
    pub(super) fn step(&mut self) -> Result<bool, String> {
        // SAFETY: a valid statement.
        match unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => Err(message(self.db)),
        }
    }

    fn column_type(&self, i: usize) -> c_int {
        // SAFETY: a statement positioned on a row.
        unsafe { ffi::sqlite3_column_type(self.stmt.as_ptr(), i as c_int) }
    }

    /// The bytes of a text or blob value (valid until the next step).
    fn bytes(&self, i: usize, text: bool) -> &[u8] {
        let (stmt, i) = (self.stmt.as_ptr(), i as c_int);
        // SAFETY: the value is of the type asked for (checked by the
        // caller), so reading it converts nothing; the pointer is
        // then valid for `sqlite3_column_bytes` bytes until the next
        // step, which needs `&mut self`.
        unsafe {
            let p: *const u8 = if text {
                ffi::sqlite3_column_text(stmt, i)
            } else {
                ffi::sqlite3_column_blob(stmt, i).cast()
            };
            let n = ffi::sqlite3_column_bytes(stmt, i);
            if p.is_null() || n <= 0 {
                &[]
            } else {
                std::slice::from_raw_parts(p, n as usize)
            }
        }
    }

    fn mismatched(&self, i: usize, want: &str) -> String {
        format!(
            "column {i} holds {}, not {want}",
            type_name(self.column_type(i))
        )
    }
}

impl Columns for Stmt {
    fn text(&self, i: usize) -> Result<Option<&str>, String> {
        match self.column_type(i) {
            ffi::SQLITE_NULL => Ok(None),
            ffi::SQLITE_TEXT => std::str::from_utf8(self.bytes(i, true))
                .map(Some)
                .map_err(|_| format!("column {i} is not UTF-8 text")),
            _ => Err(self.mismatched(i, "text")),
        }
    }

    fn int(&self, i: usize) -> Result<Option<i64>, String> {
        match self.column_type(i) {
            ffi::SQLITE_NULL => Ok(None),
            // SAFETY: a statement positioned on a row.
            ffi::SQLITE_INTEGER => Ok(Some(unsafe {
                ffi::sqlite3_column_int64(self.stmt.as_ptr(), i as c_int)
            })),
            _ => Err(self.mismatched(i, "an integer")),
        }
    }

    fn blob(&self, i: usize) -> Result<Option<&[u8]>, String> {
        match self.column_type(i) {
            ffi::SQLITE_NULL => Ok(None),
            ffi::SQLITE_BLOB => Ok(Some(self.bytes(i, false))),
            _ => Err(self.mismatched(i, "a blob")),
        }
    }
}

/// A row as a reader holds it, its columns numbered as in its query;
/// values are borrowed from the row, `None` for SQL NULL.
pub(super) trait Columns {
    fn text(&self, i: usize) -> std::result::Result<Option<&str>, String>;
    fn int(&self, i: usize) -> std::result::Result<Option<i64>, String>;
    fn blob(&self, i: usize) -> std::result::Result<Option<&[u8]>, String>;
}

/// The same through sqlx's own rows, where a statement is not stepped here.
impl Columns for sqlx::postgres::PgRow {
    fn text(&self, i: usize) -> std::result::Result<Option<&str>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
    fn int(&self, i: usize) -> std::result::Result<Option<i64>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
    fn blob(&self, i: usize) -> std::result::Result<Option<&[u8]>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
}

impl Columns for sqlx::any::AnyRow {
    fn text(&self, i: usize) -> std::result::Result<Option<&str>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
    fn int(&self, i: usize) -> std::result::Result<Option<i64>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
    fn blob(&self, i: usize) -> std::result::Result<Option<&[u8]>, String> {
        sqlx::Row::try_get(self, i).map_err(|e| e.to_string())
    }
}
