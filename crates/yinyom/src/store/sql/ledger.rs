//! [`Ledger`] for both databases: the consent write path (one transaction
//! per batch: chain heads locked in a fixed order, subjects, entries,
//! current state, outbox, idempotency, receipts) and reading history.
//! The statements it is made of are in `sql.rs` (`insert_entries`,
//! `write_outbox`, …), shared with the tests of their shapes.

use super::*;

#[async_trait]
impl Ledger for SqlStore {
    async fn commit(&self, items: &[WriteItem], seal: Sealer<'_>) -> Result<Vec<ItemOutcome>> {
        let _writing = self.exclusive().await;
        // Set-based: a handful of statements per batch, not per item, so a
        // batch costs little more than its fsync. The chain heads are locked
        // first: everything read after that is stable until commit.
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin())
            .await
            .map_err(unavailable)?;
        let mut heads = lock_heads(&mut tx, self.dialect, items).await?;
        let mut seen = prior_idempotency(&mut tx, self.dialect, items).await?;
        let fresh: Vec<&WriteItem> = items
            .iter()
            .filter(|i| {
                i.idempotency
                    .as_ref()
                    .is_none_or(|k| !seen.contains_key(&(i.tenant.clone(), k.key.clone())))
            })
            .collect();
        let uids = ensure_subjects(&mut tx, self.dialect, &fresh).await?;

        let mut outcomes = Vec::with_capacity(items.len());
        let mut rows = Rows::default();
        for item in items {
            if let Some(idem) = &item.idempotency
                && let Some((hash, response)) = seen.get(&(item.tenant.clone(), idem.key.clone()))
            {
                outcomes.push(if *hash == idem.request_hash {
                    ItemOutcome::Replayed {
                        response: response.clone(),
                    }
                } else {
                    ItemOutcome::KeyReused
                });
                continue;
            }
            let recorded_at = time::now();
            let uid = uids
                .get(&(item.tenant.clone(), item.subject_id.clone()))
                .cloned()
                .ok_or_else(|| StoreError::Unavailable("subject row missing".into()))?;
            let chain = heads
                .get_mut(&item.tenant)
                .ok_or_else(|| StoreError::Unavailable("chain head missing".into()))?;
            let ev_hash = item.evidence.as_ref().map(evidence_hash);
            let entries: Vec<LedgerEntry> = item
                .actions
                .iter()
                .map(|a| {
                    chain.append(EntryBody {
                        tenant: item.tenant.clone(),
                        subject_uid: uid.clone(),
                        purpose: a.purpose.clone(),
                        channel: a.channel,
                        action: a.action,
                        notice: item.notice.clone(),
                        source: item.source.clone(),
                        actor: item.actor.clone(),
                        evidence_hash: ev_hash.clone(),
                        occurred_at: item.occurred_at,
                        recorded_at,
                        expires_at: a.expires_at,
                        receipt: item
                            .receipt
                            .as_ref()
                            .filter(|_| a.action == Action::Grant)
                            .map(|r| r.id.clone()),
                        guardian: item.guardian && a.action == Action::Grant,
                    })
                })
                .collect();
            let response = seal(item, &entries);
            // Replays and reused keys were skipped above: index evidence by
            // written item, not by position in the batch.
            let written = rows.evidence.len();
            rows.evidence
                .push(item.evidence.as_ref().map(|e| e.to_string()));
            for e in &entries {
                rows.entries.push((e.clone(), written));
            }
            if let Some(r) = &item.receipt {
                rows.receipts.push((&item.tenant, uid.clone(), r));
            }
            if let Some(idem) = &item.idempotency {
                seen.insert(
                    (item.tenant.clone(), idem.key.clone()),
                    (idem.request_hash.clone(), response.clone()),
                );
                rows.idempotency.push((
                    &item.tenant,
                    &idem.key,
                    &idem.request_hash,
                    response.to_string(),
                    recorded_at,
                    uid.clone(),
                ));
            }
            outcomes.push(ItemOutcome::Written {
                subject_uid: uid,
                entries,
                response,
            });
        }

        insert_entries(&mut tx, self.dialect, &rows).await?;
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO receipts (tenant, id, subject_uid, jws, created_at)",
            "",
            &rows.receipts,
            5,
            |q, (tenant, uid, r)| {
                q.bind(tenant.as_str())
                    .bind(r.id.as_str())
                    .bind(uid.as_str())
                    .bind(r.jws.as_str())
                    .bind(r.created_at)
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO idempotency_keys (tenant, key, request_hash, response, created_at,
                 subject_uid)",
            "",
            &rows.idempotency,
            6,
            |q, (tenant, key, hash, response, at, uid)| {
                q.bind(tenant.as_str())
                    .bind(key.as_str())
                    .bind(hash.as_str())
                    .bind(response.as_str())
                    .bind(*at)
                    .bind(uid.as_str())
            },
        )
        .await?;
        for (tenant, head) in &heads {
            sqlx::query("UPDATE ledger_heads SET seq = $1, hash = $2 WHERE tenant = $3")
                .bind(head.seq as i64)
                .bind(head.hash.as_str())
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        for tenant in heads.keys() {
            self.announce(
                &mut *tx,
                &Change::Ledger {
                    tenant: tenant.clone(),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcomes)
    }

    async fn idempotent_response(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok((
                r.get("request_hash"),
                serde_json::from_str(r.get("response")).map_err(json_err)?,
            ))
        })
        .transpose()
    }

    async fn history(&self, tenant: &str, subject_uid: &str) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(hot::HISTORY)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| entry_from_row(r).map_err(StoreError::Unavailable))
            .collect()
    }

    async fn evidence(
        &self,
        tenant: &str,
        subject_uid: &str,
    ) -> Result<std::collections::BTreeMap<u64, serde_json::Value>> {
        let rows = sqlx::query(hot::EVIDENCE)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let seq: i64 = r.try_get("seq").map_err(unavailable)?;
            let text: String = r.try_get("evidence").map_err(unavailable)?;
            let v = serde_json::from_str(&text).map_err(json_err)?;
            out.insert(seq as u64, v);
        }
        Ok(out)
    }

    async fn receipts(&self, tenant: &str, subject_uid: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query(hot::RECEIPTS)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| StoredReceipt {
                id: r.get("id"),
                jws: r.get("jws"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    async fn ledger(&self, tenant: &str) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, 0, None).await
    }

    async fn ledger_after(
        &self,
        tenant: &str,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, seq, Some(limit)).await
    }

    async fn heads(&self) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query("SELECT tenant, seq FROM ledger_heads")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("tenant"), r.get::<i64, _>("seq") as u64))
            .collect())
    }
}

/// Lock the chain head of every tenant in the batch (creating it at
/// genesis if the tenant has none), in a fixed order so that concurrent
/// writers cannot deadlock, and return the heads.
async fn lock_heads(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[WriteItem],
) -> Result<HashMap<String, Chain>> {
    let tenants: BTreeSet<&String> = items.iter().map(|i| &i.tenant).collect();
    let genesis = Chain::genesis();
    let select = format!(
        "SELECT seq, hash FROM ledger_heads WHERE tenant = $1{}",
        d.for_update()
    );
    let mut heads = HashMap::new();
    for tenant in tenants {
        sqlx::query(
            "INSERT INTO ledger_heads (tenant, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(genesis.hash.as_str())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        let r = sqlx::query(&select)
            .bind(tenant.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
        heads.insert(
            tenant.clone(),
            Chain {
                seq: r.get::<i64, _>("seq") as u64,
                hash: r.get("hash"),
            },
        );
    }
    Ok(heads)
}

/// Earlier uses of the batch's idempotency keys: (tenant, key) → (request hash, response).
async fn prior_idempotency(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[WriteItem],
) -> Result<HashMap<Key, (String, serde_json::Value)>> {
    let mut found = HashMap::new();
    let wanted: Vec<(&String, &String)> = items
        .iter()
        .filter_map(|i| i.idempotency.as_ref().map(|k| (&i.tenant, &k.key)))
        .collect();
    select_pairs(
        tx,
        d,
        "SELECT tenant, key, request_hash, response FROM idempotency_keys WHERE (tenant, key)",
        &wanted,
        |r| {
            found.insert(
                (r.get("tenant"), r.get("key")),
                (
                    r.get("request_hash"),
                    serde_json::from_str(r.get("response")).map_err(json_err)?,
                ),
            );
            Ok(())
        },
    )
    .await?;
    Ok(found)
}

/// The uids of the items' subjects, (tenant, id) → uid, creating the
/// subjects that do not exist yet. A subject created meanwhile by another
/// writer (a `PUT /v1/subjects` on another node) is read back, not
/// duplicated.
async fn ensure_subjects(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[&WriteItem],
) -> Result<HashMap<Key, String>> {
    ensure_subject_ids(tx, d, items.iter().map(|i| (&i.tenant, &i.subject_id))).await
}

/// [`ensure_subjects`] for (tenant, id) pairs.
pub(super) async fn ensure_subject_ids<'a>(
    tx: &mut Tx<'_>,
    d: Dialect,
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<HashMap<Key, String>> {
    let wanted: Vec<(&String, &String)> = pairs.collect::<BTreeSet<_>>().into_iter().collect();
    let mut found = HashMap::new();
    let select = "SELECT tenant, id, uid FROM subjects WHERE (tenant, id)";
    select_pairs(tx, d, select, &wanted, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    let missing: Vec<(&String, &String)> = wanted
        .into_iter()
        .filter(|(t, id)| !found.contains_key(&((*t).clone(), (*id).clone())))
        .collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let at = time::now();
    // Time-ordered uids: index inserts append instead of splitting pages.
    let new: Vec<(&String, &String, String)> = missing
        .iter()
        .map(|(t, id)| (*t, *id, uuid::Uuid::now_v7().to_string()))
        .collect();
    insert_rows(
        tx,
        d,
        "INSERT INTO subjects (tenant, id, uid, created_at, updated_at)",
        " ON CONFLICT (tenant, id) DO NOTHING",
        &new,
        5,
        |q, (tenant, id, uid)| {
            q.bind(tenant.as_str())
                .bind(id.as_str())
                .bind(uid.as_str())
                .bind(at)
                .bind(at)
        },
    )
    .await?;
    select_pairs(tx, d, select, &missing, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    Ok(found)
}

/// Append the ledger rows and fold them into `consent_states`. Current
/// state follows the latest `(occurred_at, seq)`, like the domain fold; an
/// older event (an import of history) leaves it alone. Only the latest
/// entry per state row is written (PostgreSQL refuses to update one row
/// twice in a statement).
async fn insert_entries(tx: &mut Tx<'_>, d: Dialect, rows: &Rows<'_>) -> Result<()> {
    let ledger: Vec<(&LedgerEntry, Option<&str>)> = rows
        .entries
        .iter()
        .map(|(e, item)| (e, rows.evidence[*item].as_deref()))
        .collect();
    insert_rows(tx, d,
        "INSERT INTO ledger (tenant, seq, subject_uid, purpose, channel, action, notice_key, notice_version,
            notice_hash, source, actor, evidence_hash, evidence, occurred_at, recorded_at, expires_at, receipt_id,
            prev_hash, hash, guardian)",
        "",
        &ledger,
        20,
        |q, (e, evidence)| {
            let b = &e.body;
            q.bind(b.tenant.as_str())
                .bind(e.seq as i64)
                .bind(b.subject_uid.as_str())
                .bind(b.purpose.as_str())
                .bind(b.channel.map(Channel::as_str))
                .bind(b.action.as_str())
                .bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .bind(b.notice.as_ref().map(|n| n.version as i64))
                .bind(b.notice.as_ref().map(|n| n.hash.as_str()))
                .bind(b.source.as_str())
                .bind(b.actor.as_str())
                .bind(b.evidence_hash.as_deref())
                .bind(*evidence)
                .bind(b.occurred_at)
                .bind(b.recorded_at)
                .bind(b.expires_at)
                .bind(b.receipt.as_deref())
                .bind(e.prev_hash.as_str())
                .bind(e.hash.as_str())
                .bind(i64::from(b.guardian))
        },
    )
    .await?;

    write_outbox(tx, d, &ledger).await?;

    let mut latest: HashMap<(&str, &str, &str, Option<Channel>), &LedgerEntry> = HashMap::new();
    // Flag changes (restrict, object, …) set no consent state.
    for (e, _) in rows
        .entries
        .iter()
        .filter(|(e, _)| e.body.action.is_consent())
    {
        let b = &e.body;
        let key = (
            b.tenant.as_str(),
            b.subject_uid.as_str(),
            b.purpose.as_str(),
            b.channel,
        );
        let slot = latest.entry(key).or_insert(e);
        if (b.occurred_at, e.seq) > (slot.body.occurred_at, slot.seq) {
            *slot = e;
        }
    }
    let mut states: Vec<&LedgerEntry> = latest.into_values().collect();
    states.sort_by_key(|e| e.seq);
    insert_rows(tx, d,
        "INSERT INTO consent_states (tenant, subject_uid, purpose, channel, state, seq, occurred_at, expires_at,
            notice_key, notice_version, source, guardian)",
        " ON CONFLICT (tenant, subject_uid, purpose, channel) DO UPDATE SET
            state = excluded.state, seq = excluded.seq, occurred_at = excluded.occurred_at,
            expires_at = excluded.expires_at, notice_key = excluded.notice_key,
            notice_version = excluded.notice_version, source = excluded.source,
            guardian = excluded.guardian
         WHERE (excluded.occurred_at, excluded.seq) > (consent_states.occurred_at, consent_states.seq)",
        &states,
        12,
        |q, e| {
            let b = &e.body;
            q.bind(b.tenant.as_str())
                .bind(b.subject_uid.as_str())
                .bind(b.purpose.as_str())
                .bind(b.channel.map(Channel::as_str).unwrap_or(""))
                .bind(b.action.state().unwrap_or(ConsentState::Unspecified).as_str())
                .bind(e.seq as i64)
                .bind(b.occurred_at)
                .bind(b.expires_at)
                .bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .bind(b.notice.as_ref().map(|n| n.version as i64))
                .bind(b.source.as_str())
                .bind(i64::from(b.guardian))
        },
    )
    .await
}

/// (tenant, subject uid, purpose, channel or '') of a `consent_states` row.
type StateKey = (String, String, String, String);

/// One outbox row per entry, with the state in force before and after it,
/// computed from `consent_states` before this batch updates it.
async fn write_outbox(
    tx: &mut Tx<'_>,
    d: Dialect,
    ledger: &[(&LedgerEntry, Option<&str>)],
) -> Result<()> {
    let key = |e: &LedgerEntry| -> StateKey {
        let b = &e.body;
        (
            b.tenant.clone(),
            b.subject_uid.clone(),
            b.purpose.clone(),
            b.channel.map(Channel::as_str).unwrap_or("").to_string(),
        )
    };
    let keys: Vec<_> = ledger
        .iter()
        .map(|(e, _)| key(e))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // (state, occurred_at, seq) per key.
    let mut current: HashMap<StateKey, (ConsentState, Micros, u64)> = HashMap::new();
    for chunk in keys.chunks(CHUNK) {
        let sql = format!(
            "SELECT tenant, subject_uid, purpose, channel, state, occurred_at, seq FROM consent_states
             WHERE (tenant, subject_uid, purpose, channel) IN (VALUES {})",
            groups(d, 1, chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (t, u, p, c) in chunk {
            q = q
                .bind(t.as_str())
                .bind(u.as_str())
                .bind(p.as_str())
                .bind(c.as_str());
        }
        for r in q.fetch_all(&mut **tx).await.map_err(unavailable)? {
            let state = ConsentState::parse(r.get("state")).unwrap_or(ConsentState::Unspecified);
            current.insert(
                (
                    r.get("tenant"),
                    r.get("subject_uid"),
                    r.get("purpose"),
                    r.get("channel"),
                ),
                (state, r.get("occurred_at"), r.get::<i64, _>("seq") as u64),
            );
        }
    }
    let mut rows = Vec::with_capacity(ledger.len());
    for (e, _) in ledger {
        let slot = current
            .entry(key(e))
            .or_insert((ConsentState::Unspecified, i64::MIN, 0));
        let before = slot.0;
        if let Some(state) = e.body.action.state()
            && (e.body.occurred_at, e.seq) > (slot.1, slot.2)
        {
            *slot = (state, e.body.occurred_at, e.seq);
        }
        rows.push((*e, before, slot.0));
    }
    let now = time::now();
    insert_rows(
        tx,
        d,
        "INSERT INTO outbox (tenant, seq, subject_uid, purpose, kind, before_state, after_state, created_at)",
        "",
        &rows,
        8,
        |q, (e, before, after)| {
            q.bind(e.body.tenant.as_str())
                .bind(e.seq as i64)
                .bind(e.body.subject_uid.as_str())
                .bind(e.body.purpose.as_str())
                .bind(events::kind(e.body.action))
                .bind(before.as_str())
                .bind(after.as_str())
                .bind(now)
        },
    )
    .await
}
