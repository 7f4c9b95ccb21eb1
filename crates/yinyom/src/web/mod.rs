//! The web surfaces: the website banner SDK (`sdk`), the subject's
//! preference center (`preferences`) and the staff console (`admin`).
//! Pages are rendered on the server, escaped by construction, and sent
//! with a strict Content-Security-Policy.

pub mod admin;
pub mod console;
pub mod design;
pub mod page;
pub mod preferences;
pub mod sdk;
pub mod tcf;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use yinyom_core::notice::NoticeText;
use yinyom_core::purpose::Lang;

use crate::api::problem::Problem;
use crate::app::App;

type NoticeTexts = Arc<BTreeMap<Lang, NoticeText>>;
type NoticeCache = HashMap<(String, String, u32), NoticeTexts>;

/// What the web surfaces keep in memory: failed logins, and published
/// notice texts (a version never changes, so a cached copy is never stale).
#[derive(Default)]
pub struct WebState {
    login: admin::LoginThrottle,
    notices: Mutex<NoticeCache>,
}

impl WebState {
    /// The texts of one published notice version.
    pub async fn notice_texts(
        &self,
        app: &App,
        tenant: &str,
        key: &str,
        version: u32,
    ) -> Result<NoticeTexts, Problem> {
        let id = (tenant.to_string(), key.to_string(), version);
        if let Some(t) = self.lock().get(&id) {
            return Ok(t.clone());
        }
        let all = app.store.notices(tenant).await?;
        let mut cache = self.lock();
        for n in all {
            cache
                .entry((tenant.to_string(), n.key.clone(), n.version))
                .or_insert_with(|| Arc::new(n.texts));
        }
        cache
            .get(&id)
            .cloned()
            .ok_or_else(|| Problem::not_found(format!("no notice {key} version {version}")))
    }

    pub fn login_allowed(&self, email: &str) -> bool {
        self.login.allowed(email)
    }

    pub fn login_failed(&self, email: &str) {
        self.login.failed(email)
    }

    pub fn login_succeeded(&self, email: &str) {
        self.login.succeeded(email)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NoticeCache> {
        self.notices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every route of the web surfaces.
pub fn routes() -> axum::Router<Arc<App>> {
    axum::Router::new()
        .merge(sdk::routes())
        .merge(tcf::routes())
        .merge(preferences::routes())
        .merge(console::routes())
}
