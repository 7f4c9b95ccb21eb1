//! Connected systems: the data map of a customer's own databases (which
//! tables hold a subject's rows, how a row is found, what each column holds,
//! what an erasure does to it), the data-category taxonomy its columns are
//! labelled with, the forms an identifier may be stored in, and the SQL a
//! map yields — identifiers checked and quoted, values always bound.
//!
//! Nothing here touches a database; `yinyom::systems` runs the statements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::purpose::Channel;
use crate::validate::{self, Invalid};

/// A data category a column is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CategoryInfo {
    /// `group.name`, e.g. `contact.email`.
    pub key: &'static str,
    /// A sensitive category of PDPA s.26 (GDPR Art. 9/10): processed only
    /// with explicit consent or another s.26 ground.
    pub sensitive: bool,
    pub en: &'static str,
    pub th: &'static str,
}

const fn cat(
    key: &'static str,
    sensitive: bool,
    en: &'static str,
    th: &'static str,
) -> CategoryInfo {
    CategoryInfo {
        key,
        sensitive,
        en,
        th,
    }
}

/// The taxonomy, by group: `contact` (how a person is reached), `user`
/// (who the person is: identity), `financial`, `behaviour`, and
/// `sensitive` (PDPA s.26). Documented in docs/systems.md.
pub const CATEGORIES: &[CategoryInfo] = &[
    cat("contact.email", false, "Email address", "อีเมล"),
    cat("contact.phone", false, "Phone number", "หมายเลขโทรศัพท์"),
    cat("contact.address", false, "Postal address", "ที่อยู่ติดต่อ"),
    cat("contact.line_id", false, "LINE user id", "LINE user id"),
    cat(
        "contact.social",
        false,
        "Social media handle",
        "บัญชีโซเชียลมีเดีย",
    ),
    cat("user.name", false, "Name", "ชื่อ-นามสกุล"),
    cat("user.address", false, "Home address", "ที่อยู่"),
    cat("user.birth_date", false, "Date of birth", "วันเกิด"),
    cat("user.age", false, "Age or age band", "อายุ"),
    cat("user.gender", false, "Gender", "เพศ"),
    cat("user.nationality", false, "Nationality", "สัญชาติ"),
    cat(
        "user.national_id",
        false,
        "National id number",
        "เลขประจำตัวประชาชน",
    ),
    cat("user.passport", false, "Passport number", "เลขหนังสือเดินทาง"),
    cat(
        "user.account",
        false,
        "Account or customer number, username",
        "หมายเลขบัญชีลูกค้า ชื่อผู้ใช้",
    ),
    cat("user.photo", false, "Photograph", "รูปถ่าย"),
    cat(
        "user.device",
        false,
        "Device id, IP address, cookie id",
        "รหัสอุปกรณ์ IP คุกกี้",
    ),
    cat(
        "user.employment",
        false,
        "Employer, job title",
        "ข้อมูลการทำงาน",
    ),
    cat("financial.bank_account", false, "Bank account", "บัญชีธนาคาร"),
    cat("financial.card", false, "Payment card", "บัตรชำระเงิน"),
    cat(
        "financial.transaction",
        false,
        "Payments and orders",
        "ธุรกรรมการเงิน",
    ),
    cat("financial.income", false, "Income, credit", "รายได้ เครดิต"),
    cat("financial.tax", false, "Tax id and records", "ข้อมูลภาษี"),
    cat(
        "behaviour.purchase",
        false,
        "Purchase history",
        "ประวัติการซื้อ",
    ),
    cat(
        "behaviour.browsing",
        false,
        "Browsing and app use",
        "ประวัติการใช้งานเว็บและแอป",
    ),
    cat("behaviour.location", false, "Location", "ตำแหน่งที่อยู่"),
    cat(
        "behaviour.preference",
        false,
        "Preferences and interests",
        "ความชอบและความสนใจ",
    ),
    cat(
        "behaviour.communication",
        false,
        "Messages and calls",
        "การติดต่อสื่อสาร",
    ),
    cat(
        "sensitive.racial_ethnic",
        true,
        "Racial or ethnic origin",
        "เชื้อชาติ เผ่าพันธุ์",
    ),
    cat(
        "sensitive.political",
        true,
        "Political opinions",
        "ความคิดเห็นทางการเมือง",
    ),
    cat(
        "sensitive.religious",
        true,
        "Religious or philosophical beliefs",
        "ความเชื่อในลัทธิ ศาสนาหรือปรัชญา",
    ),
    cat(
        "sensitive.sexual",
        true,
        "Sexual behaviour",
        "พฤติกรรมทางเพศ",
    ),
    cat(
        "sensitive.criminal",
        true,
        "Criminal records",
        "ประวัติอาชญากรรม",
    ),
    cat("sensitive.health", true, "Health data", "ข้อมูลสุขภาพ"),
    cat("sensitive.disability", true, "Disability", "ความพิการ"),
    cat(
        "sensitive.trade_union",
        true,
        "Trade union membership",
        "ข้อมูลสหภาพแรงงาน",
    ),
    cat("sensitive.genetic", true, "Genetic data", "ข้อมูลพันธุกรรม"),
    cat("sensitive.biometric", true, "Biometric data", "ข้อมูลชีวภาพ"),
];

/// A category of the taxonomy by its key.
pub fn category(key: &str) -> Option<&'static CategoryInfo> {
    CATEGORIES.iter().find(|c| c.key == key)
}

/// Which identifier of the subject finds its rows in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum IdentifierKind {
    Email,
    Phone,
    CustomerId,
    LineId,
    /// The subject's id in Yinyom.
    Subject,
}

impl IdentifierKind {
    pub const ALL: [IdentifierKind; 5] = [
        Self::Email,
        Self::Phone,
        Self::CustomerId,
        Self::LineId,
        Self::Subject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::CustomerId => "customer_id",
            Self::LineId => "line_id",
            Self::Subject => "subject",
        }
    }

    /// Whether the stored value is compared in lower case (`LOWER(column)`):
    /// email addresses, which people type in any case.
    pub fn case_insensitive(self) -> bool {
        self == Self::Email
    }

    /// Every form the value (as Yinyom normalised it) may be stored in by
    /// another system, to query with `IN (…)`:
    ///
    /// - phone: E.164 (`+66812345678`), the same without `+`
    ///   (`66812345678`), international (`+66 81 234 5678`), national
    ///   (`081 234 5678`, `0812345678`, `081-234-5678`);
    /// - email: lower case (the column is compared as `LOWER(column)`);
    /// - LINE user id: `U` with lower- or upper-case hexadecimal;
    /// - customer id, subject id: as they are.
    pub fn forms(self, normalized: &str) -> Vec<String> {
        let mut out = vec![normalized.to_string()];
        match self {
            Self::Email => out[0] = normalized.to_lowercase(),
            Self::Phone => {
                if let Ok(n) = phonenumber::parse(None, normalized) {
                    let e164 = n.format().mode(phonenumber::Mode::E164).to_string();
                    let international = n
                        .format()
                        .mode(phonenumber::Mode::International)
                        .to_string();
                    let national = n.format().mode(phonenumber::Mode::National).to_string();
                    let digits: String = national.chars().filter(char::is_ascii_digit).collect();
                    let dashed = national.replace(' ', "-");
                    out = vec![
                        e164.clone(),
                        e164.trim_start_matches('+').to_string(),
                        international,
                        national,
                        digits,
                        dashed,
                    ];
                }
            }
            Self::LineId => {
                if let Some(hex) = normalized.strip_prefix('U') {
                    out = vec![
                        format!("U{}", hex.to_ascii_lowercase()),
                        format!("U{}", hex.to_ascii_uppercase()),
                    ];
                }
            }
            Self::CustomerId | Self::Subject => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        out.retain(|f| !f.is_empty() && seen.insert(f.clone()));
        out
    }
}

/// What a connected system is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SystemKind {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    /// A declarative HTTP connector (not yet available).
    Http,
    /// A team that acts by hand and confirms.
    Manual,
}

impl SystemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Http => "http",
            Self::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Postgres, Self::Mysql, Self::Http, Self::Manual]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// The SQL dialect of a database system.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Self::Postgres => Some(Dialect::Postgres),
            Self::Mysql => Some(Dialect::Mysql),
            Self::Http | Self::Manual => None,
        }
    }
}

/// How a table's rows are found: the column holding one of the subject's
/// identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub column: String,
    pub identifier: IdentifierKind,
}

/// What an erasure does to a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OnErasure {
    /// Delete the rows.
    Delete,
    /// Keep the rows; the mapped columns become NULL (or a keyed hash where
    /// the column is NOT NULL).
    Mask,
    /// Keep the rows as they are, for the legal reason given.
    Retain,
}

impl OnErasure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Mask => "mask",
            Self::Retain => "retain",
        }
    }
}

/// A column that mirrors a consent: true while the subject's consent to
/// the purpose (on the channel) is granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConsentColumn {
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

/// One table of a system's data map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TableMap {
    /// `table` or `schema.table`.
    pub name: String,
    pub identity: Identity,
    /// Column → data category (see [`CATEGORIES`]).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    pub on_erasure: OnErasure,
    /// Why the rows are retained (`retain`): shown in the request's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Columns that mirror consents (set at once on a withdrawal or grant).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, ConsentColumn>,
}

/// A table or column name: a letter or `_`, then letters, digits, `_` or
/// `$`, at most 63 bytes (the PostgreSQL limit; MySQL allows 64). Nothing
/// that would need quoting is accepted, and names are also checked against
/// the database's catalogue before any statement runs.
pub fn check_identifier(field: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "{name:?} is not a plain SQL name: a letter or '_', then letters, digits, '_' or '$' (at most 63)"
            ),
        ))
    }
}

/// A table's name split into an optional schema (database, for MySQL) and
/// the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<String>,
    pub table: String,
}

impl TableName {
    pub fn parse(field: &str, name: &str) -> Result<TableName, Invalid> {
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name),
        };
        if let Some(s) = schema {
            check_identifier(field, s)?;
        }
        check_identifier(field, table)?;
        Ok(TableName {
            schema: schema.map(str::to_string),
            table: table.to_string(),
        })
    }
}

/// Check a system's data map: names, categories, reasons, no duplicates.
pub fn validate_tables(tables: &[TableMap]) -> Result<(), Invalid> {
    if tables.len() > 200 {
        return Err(Invalid::new("tables", "at most 200 tables"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in tables.iter().enumerate() {
        let f = |s: &str| format!("tables/{i}/{s}");
        TableName::parse(&f("name"), &t.name)?;
        if !names.insert(t.name.as_str()) {
            return Err(Invalid::new(
                f("name"),
                format!("{:?} is listed twice", t.name),
            ));
        }
        check_identifier(&f("identity/column"), &t.identity.column)?;
        if t.columns.len() > 500 {
            return Err(Invalid::new(f("columns"), "at most 500 columns"));
        }
        for (c, category_key) in &t.columns {
            check_identifier(&f(&format!("columns/{c}")), c)?;
            if category(category_key).is_none() {
                return Err(Invalid::new(
                    f(&format!("columns/{c}")),
                    format!(
                        "{category_key:?} is not a data category; see GET /v1/systems/categories (e.g. contact.email, user.name, financial.card, sensitive.health)"
                    ),
                ));
            }
        }
        match (t.on_erasure, &t.reason) {
            (OnErasure::Retain, None) => {
                return Err(Invalid::new(
                    f("reason"),
                    "rows that are retained need the legal reason (e.g. tax records kept 5 years, Revenue Code s.87/3)",
                ));
            }
            (_, Some(r)) => validate::text(&f("reason"), r, 500)?,
            _ => {}
        }
        if t.on_erasure == OnErasure::Mask && t.columns.is_empty() {
            return Err(Invalid::new(
                f("columns"),
                "a masked table needs the columns to mask",
            ));
        }
        for (c, cc) in &t.consent {
            check_identifier(&f(&format!("consent/{c}")), c)?;
            validate::key(&f(&format!("consent/{c}/purpose")), &cc.purpose)?;
            if t.columns.contains_key(c) {
                return Err(Invalid::new(
                    f(&format!("consent/{c}")),
                    "a consent column is not also a personal-data column",
                ));
            }
        }
    }
    Ok(())
}

/// The SQL dialects of connected databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Bool(bool),
    Int(i64),
}

/// A statement built from a data map: SQL text made only of checked,
/// quoted names, and the values bound to it in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// What an UPDATE sets a column to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetTo {
    Null,
    Value(Bind),
}

impl Dialect {
    /// A name quoted for this dialect (`"name"`, `` `name` ``); the quote
    /// character is doubled, though checked names never hold it.
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", name.replace('`', "``")),
        }
    }

    pub fn table(self, t: &TableName) -> String {
        match &t.schema {
            Some(s) => format!("{}.{}", self.quote(s), self.quote(&t.table)),
            None => self.quote(&t.table),
        }
    }

    /// The `n`th (1-based) parameter.
    fn param(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Mysql => "?".into(),
        }
    }

    /// `WHERE column IN (…)` for the identifier's forms, numbering
    /// parameters from `first`.
    fn matching(
        self,
        identity: &Identity,
        forms: &[String],
        first: usize,
        binds: &mut Vec<Bind>,
    ) -> String {
        let col = self.quote(&identity.column);
        let lhs = if identity.identifier.case_insensitive() {
            format!("LOWER({col})")
        } else {
            col
        };
        let params: Vec<String> = (0..forms.len()).map(|i| self.param(first + i)).collect();
        binds.extend(forms.iter().cloned().map(Bind::Text));
        format!("WHERE {lhs} IN ({})", params.join(", "))
    }

    /// The subject's rows as JSON objects of the named columns, one a row.
    pub fn select(
        self,
        t: &TableName,
        identity: &Identity,
        columns: &[&str],
        forms: &[String],
    ) -> Statement {
        let mut binds = Vec::new();
        let table = self.table(t);
        let sql = match self {
            Dialect::Postgres => {
                let cols: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
                let w = self.matching(identity, forms, 1, &mut binds);
                format!(
                    "SELECT row_to_json(r)::text FROM (SELECT {} FROM {table} {w}) r",
                    cols.join(", ")
                )
            }
            Dialect::Mysql => {
                let pairs: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        binds.push(Bind::Text((*c).to_string()));
                        format!("?, {}", self.quote(c))
                    })
                    .collect();
                let w = self.matching(identity, forms, binds.len() + 1, &mut binds);
                format!(
                    "SELECT CAST(JSON_OBJECT({}) AS CHAR) FROM {table} {w}",
                    pairs.join(", ")
                )
            }
        };
        Statement { sql, binds }
    }

    /// How many of the subject's rows the table holds.
    pub fn count(self, t: &TableName, identity: &Identity, forms: &[String]) -> Statement {
        let mut binds = Vec::new();
        let w = self.matching(identity, forms, 1, &mut binds);
        Statement {
            sql: format!("SELECT COUNT(*) FROM {} {w}", self.table(t)),
            binds,
        }
    }

    /// Delete the subject's rows.
    pub fn delete(self, t: &TableName, identity: &Identity, forms: &[String]) -> Statement {
        let mut binds = Vec::new();
        let w = self.matching(identity, forms, 1, &mut binds);
        Statement {
            sql: format!("DELETE FROM {} {w}", self.table(t)),
            binds,
        }
    }

    /// Set columns of the subject's rows.
    pub fn update(
        self,
        t: &TableName,
        identity: &Identity,
        set: &[(&str, SetTo)],
        forms: &[String],
    ) -> Statement {
        let mut binds = Vec::new();
        let assignments: Vec<String> = set
            .iter()
            .map(|(c, to)| match to {
                SetTo::Null => format!("{} = NULL", self.quote(c)),
                SetTo::Value(b) => {
                    binds.push(b.clone());
                    format!("{} = {}", self.quote(c), self.param(binds.len()))
                }
            })
            .collect();
        let w = self.matching(identity, forms, binds.len() + 1, &mut binds);
        Statement {
            sql: format!(
                "UPDATE {} SET {} {w}",
                self.table(t),
                assignments.join(", ")
            ),
            binds,
        }
    }

    /// The columns of a table in the catalogue (`information_schema`):
    /// name, whether NULL is allowed, data type, maximum characters.
    pub fn catalogue(self, t: &TableName) -> Statement {
        let mut binds = Vec::new();
        let schema = match (&t.schema, self) {
            (Some(s), _) => {
                binds.push(Bind::Text(s.clone()));
                self.param(1)
            }
            (None, Dialect::Postgres) => "current_schema()".into(),
            (None, Dialect::Mysql) => "DATABASE()".into(),
        };
        binds.push(Bind::Text(t.table.clone()));
        let table_param = self.param(binds.len());
        let sql = match self {
            Dialect::Postgres => format!(
                "SELECT column_name::text, is_nullable::text, data_type::text, character_maximum_length::bigint \
                 FROM information_schema.columns WHERE table_schema = {schema} AND table_name = {table_param}"
            ),
            Dialect::Mysql => format!(
                "SELECT CAST(column_name AS CHAR), CAST(is_nullable AS CHAR), CAST(data_type AS CHAR), \
                 CAST(character_maximum_length AS SIGNED) \
                 FROM information_schema.columns WHERE table_schema = {schema} AND table_name = {table_param}"
            ),
        };
        Statement { sql, binds }
    }
}

/// A column as the database's catalogue describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogueColumn {
    pub name: String,
    pub nullable: bool,
    pub data_type: String,
    pub max_chars: Option<i64>,
}

impl CatalogueColumn {
    pub fn is_text(&self) -> bool {
        let t = self.data_type.to_ascii_lowercase();
        t.contains("char") || t.contains("text") || t == "citext"
    }

    pub fn is_bool(&self) -> bool {
        matches!(
            self.data_type.to_ascii_lowercase().as_str(),
            "boolean" | "bool"
        )
    }

    pub fn is_integer(&self) -> bool {
        matches!(
            self.data_type.to_ascii_lowercase().as_str(),
            "smallint" | "integer" | "bigint" | "int" | "tinyint" | "mediumint"
        )
    }
}

/// What masking sets a column to: NULL where allowed, else (a text column)
/// the keyed hash cut to the column's length; `None`: it cannot be masked.
pub fn mask_value(col: &CatalogueColumn, keyed_hash: &str) -> Option<SetTo> {
    if col.nullable {
        return Some(SetTo::Null);
    }
    if !col.is_text() {
        return None;
    }
    let mut v = format!("yy_{keyed_hash}");
    if let Some(max) = col.max_chars
        && max >= 0
    {
        v.truncate(max as usize);
    }
    Some(SetTo::Value(Bind::Text(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(identifier: IdentifierKind) -> Identity {
        Identity {
            column: "email".into(),
            identifier,
        }
    }

    #[test]
    fn a_thai_number_is_queried_in_every_usual_stored_form() {
        let forms = IdentifierKind::Phone.forms("+66812345678");
        for f in [
            "+66812345678",
            "66812345678",
            "0812345678",
            "081 234 5678",
            "081-234-5678",
            "+66 81 234 5678",
        ] {
            assert!(forms.contains(&f.to_string()), "{f} missing from {forms:?}");
        }
        // Every form normalises back to the same number.
        for f in &forms {
            assert_eq!(
                crate::contact::ContactKind::Phone.normalize(f).unwrap(),
                "+66812345678",
                "{f}"
            );
        }
    }

    #[test]
    fn emails_are_compared_in_lower_case_and_line_ids_in_either_case() {
        assert_eq!(IdentifierKind::Email.forms("A@B.co"), vec!["a@b.co"]);
        let line = IdentifierKind::LineId.forms("Uabcdef0123456789abcdef0123456789");
        assert_eq!(line.len(), 2);
        assert!(line.contains(&"UABCDEF0123456789ABCDEF0123456789".to_string()));
        assert_eq!(IdentifierKind::CustomerId.forms("C-1"), vec!["C-1"]);
    }

    #[test]
    fn names_that_would_need_quoting_are_refused() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a\"b",
            "a`b",
            "a;drop",
            "a-b",
            &"x".repeat(64),
        ] {
            assert!(check_identifier("f", bad).is_err(), "{bad:?}");
        }
        for good in ["customers", "_x", "Orders2", "a$b"] {
            assert!(check_identifier("f", good).is_ok(), "{good:?}");
        }
        assert!(TableName::parse("f", "shop.orders").is_ok());
        assert!(TableName::parse("f", "a.b.c").is_err());
    }

    #[test]
    fn statements_quote_names_and_bind_every_value() {
        let t = TableName::parse("f", "shop.customers").unwrap();
        let forms = vec!["a@b.co".to_string()];
        let s = Dialect::Postgres.delete(&t, &identity(IdentifierKind::Email), &forms);
        assert_eq!(
            s.sql,
            "DELETE FROM \"shop\".\"customers\" WHERE LOWER(\"email\") IN ($1)"
        );
        assert_eq!(s.binds, vec![Bind::Text("a@b.co".into())]);
        let phone = Identity {
            column: "phone".into(),
            identifier: IdentifierKind::Phone,
        };
        let forms = vec!["+66812345678".to_string(), "0812345678".to_string()];
        let s = Dialect::Mysql.update(
            &TableName::parse("f", "orders").unwrap(),
            &phone,
            &[
                ("ship_address", SetTo::Null),
                ("phone", SetTo::Value(Bind::Text("yy_x".into()))),
            ],
            &forms,
        );
        assert_eq!(
            s.sql,
            "UPDATE `orders` SET `ship_address` = NULL, `phone` = ? WHERE `phone` IN (?, ?)"
        );
        assert_eq!(s.binds.len(), 3);
        let s = Dialect::Postgres.update(
            &TableName::parse("f", "orders").unwrap(),
            &phone,
            &[("phone", SetTo::Value(Bind::Text("x".into())))],
            &forms,
        );
        assert_eq!(
            s.sql,
            "UPDATE \"orders\" SET \"phone\" = $1 WHERE \"phone\" IN ($2, $3)"
        );
        let s = Dialect::Mysql.select(
            &TableName::parse("f", "orders").unwrap(),
            &phone,
            &["phone", "ship_address"],
            &forms,
        );
        assert_eq!(
            s.sql,
            "SELECT CAST(JSON_OBJECT(?, `phone`, ?, `ship_address`) AS CHAR) FROM `orders` WHERE `phone` IN (?, ?)"
        );
        assert_eq!(s.binds[0], Bind::Text("phone".into()));
    }

    fn table(on_erasure: OnErasure) -> TableMap {
        TableMap {
            name: "customers".into(),
            identity: identity(IdentifierKind::Email),
            columns: [("email".to_string(), "contact.email".to_string())].into(),
            on_erasure,
            reason: None,
            consent: BTreeMap::new(),
        }
    }

    #[test]
    fn a_map_needs_known_categories_and_a_reason_to_retain() {
        assert!(validate_tables(&[table(OnErasure::Delete)]).is_ok());
        let retained = validate_tables(&[table(OnErasure::Retain)]).unwrap_err();
        assert_eq!(retained.field, "tables/0/reason");
        let mut t = table(OnErasure::Retain);
        t.reason = Some("tax records, Revenue Code s.87/3".into());
        assert!(validate_tables(&[t]).is_ok());
        let mut t = table(OnErasure::Mask);
        t.columns.insert("dob".into(), "user.dob".into());
        assert_eq!(
            validate_tables(&[t]).unwrap_err().field,
            "tables/0/columns/dob"
        );
        assert!(validate_tables(&[table(OnErasure::Delete), table(OnErasure::Mask)]).is_err());
        assert!(CATEGORIES.iter().filter(|c| c.sensitive).count() >= 10);
    }

    #[test]
    fn masking_nulls_nullable_columns_and_hashes_the_rest() {
        let mut col = CatalogueColumn {
            name: "email".into(),
            nullable: true,
            data_type: "character varying".into(),
            max_chars: Some(8),
        };
        assert_eq!(mask_value(&col, "abcdef0123"), Some(SetTo::Null));
        col.nullable = false;
        assert_eq!(
            mask_value(&col, "abcdef0123"),
            Some(SetTo::Value(Bind::Text("yy_abcde".into())))
        );
        col.data_type = "integer".into();
        assert_eq!(mask_value(&col, "abc"), None);
    }
}
