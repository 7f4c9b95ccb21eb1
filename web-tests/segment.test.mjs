// The real analytics.js (@segment/analytics-next from npm, its UMD build)
// on a customer's page, pointed at a real `yinyom serve`: it loads its
// settings from Yinyom (`cdnURL`), posts to the one-letter paths (/v1/t,
// /v1/p, /v1/i, /v1/b) with CORS preflights, and Yinyom keeps only what the
// visitor consented to in the banner on the same page. Nothing may reach
// Segment: every request the page makes is checked.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { eventually, expectStatus, launchBrowser, ledgerConsents, setupBanner, startServer, startSite, testPage } from './lib.mjs';

const require = createRequire(import.meta.url);
const UMD = path.join(path.dirname(require.resolve('@segment/analytics-next/package.json')), 'dist/umd');

let browser, server, banner, site, other, writeKey;
const pages = {};
const cleanup = [];

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
  banner = await setupBanner(server);
  // The UMD bundle and its lazily loaded chunks, served by the customer's site.
  for (const f of await fs.readdir(UMD)) {
    if (f.endsWith('.js')) pages[`/ajs/${f}`] = await fs.readFile(path.join(UMD, f), 'utf8');
  }
  site = await startSite(pages);
  other = await startSite(pages); // another origin, not listed by the tenant
  const origin = new URL(site.url).origin;
  expectStatus(await server.api('PATCH', '/v1/tenant', { banner: { notice: 'cookies', origins: [origin] } }), 200,
    'PATCH /v1/tenant banner.origins');
  const source = expectStatus(await server.api('POST', '/v1/sources', { name: 'website', purposes: ['analytics'] }), 201,
    'POST /v1/sources');
  writeKey = source.write_key;
  const load = (options) => `<script src="/ajs/index.js"></script>
<script>
window.ajsReady = AnalyticsNext.AnalyticsBrowser.load(
  { writeKey: ${JSON.stringify(writeKey)}, cdnURL: ${JSON.stringify(server.url)} },
  ${JSON.stringify(options)}
).then(function (r) { window.ajs = r[0]; return true; });
</script>`;
  pages['/'] = testPage({ server, siteKey: banner.siteKey, extra: load({}) });
  pages['/batch'] = testPage({
    server, siteKey: banner.siteKey,
    extra: load({ integrations: { 'Segment.io': { deliveryStrategy: { strategy: 'batching', config: { size: 3, timeout: 60000 } } } } }),
  });
  // Settings given inline, so nothing depends on the settings fetch.
  pages['/inline'] = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Other site</title></head><body>
<script src="/ajs/index.js"></script>
<script>
window.ajsReady = AnalyticsNext.AnalyticsBrowser.load({
  writeKey: ${JSON.stringify(writeKey)},
  cdnSettings: { integrations: { 'Segment.io': {
    apiKey: ${JSON.stringify(writeKey)}, apiHost: ${JSON.stringify(`${new URL(server.url).host}/v1`)}, protocol: 'http' } },
    metrics: { sampleRate: 0 } },
}).then(function (r) { window.ajs = r[0]; return true; });
</script></body></html>`;
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
  await site?.stop();
  await other?.stop();
  await browser?.close();
  await server?.stop();
});

/**
 * A fresh visitor whose analytics.js anonymous id is `anon` (set before any
 * script runs, as analytics.js keeps it). Every request URL is recorded.
 */
async function visit(url, anon) {
  const context = await browser.newContext({ locale: 'en-US' });
  cleanup.push(() => context.close());
  await context.addInitScript((id) => {
    localStorage.setItem('ajs_anonymous_id', JSON.stringify(id));
    document.cookie = `ajs_anonymous_id=${encodeURIComponent(JSON.stringify(id))}; path=/`;
  }, anon);
  const page = await context.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  return { page, requests, errors };
}

/** The collector's answer to the next POST analytics.js makes to `short`. */
function answer(page, short) {
  return page.waitForResponse((r) => new URL(r.url()).pathname === `/v1/${short}` && r.request().method() === 'POST');
}

/** Every request went to the customer's site or to Yinyom: none to Segment. */
function onlyOurHosts(requests, ...urls) {
  const ours = new Set(urls.map((u) => new URL(u).host));
  const foreign = requests.filter((u) => !u.startsWith('data:') && !ours.has(new URL(u).host));
  assert.deepEqual(foreign, [], 'requests to other hosts');
}

async function events(subject) {
  const r = await server.api('GET', `/v1/subjects/${encodeURIComponent(subject)}/events`);
  return r.status === 200 ? r.body : [];
}

async function sourceCounts() {
  const list = expectStatus(await server.api('GET', '/v1/sources'), 200, 'GET /v1/sources');
  return list[0];
}

test('analytics.js loads its settings from Yinyom and posts to /v1/t, /v1/p, /v1/i; only consented events are kept', async () => {
  const anon = '5b1d5d8e-3c2f-4b7a-9a1e-1f2e3d4c5b6a';
  const { page, requests, errors } = await visit(site.url, anon);
  assert.equal(await page.evaluate(() => window.ajsReady), true);
  assert.ok(requests.some((u) => u === `${server.url}/v1/projects/${writeKey}/settings`), 'settings came from Yinyom');
  assert.equal(await page.evaluate(() => window.ajs.user().anonymousId()), anon);
  assert.equal(await page.evaluate(() => window.yinyom.anonymousId()), anon, 'the banner shares analytics.js\'s anonymous id');

  // Before any consent: accepted by the collector, dropped, never stored.
  // (The answers' bodies are not read here: analytics.js never reads them,
  // and Chromium does not keep them; the source's counters tell instead.)
  const start = await sourceCounts();
  const dropped = answer(page, 't');
  await page.evaluate(() => window.ajs.track('Before Consent').then(() => true));
  const r0 = await dropped;
  assert.equal(r0.status(), 200);
  assert.equal(r0.headers()['access-control-allow-origin'], new URL(site.url).origin);
  assert.deepEqual(await sourceCounts(), { ...start, dropped: start.dropped + 1 });

  // The visitor accepts in the banner on the same page.
  await page.getByRole('region', { name: 'Cookies' }).getByRole('button', { name: 'Accept all', exact: true }).click();
  await ledgerConsents(server, anon, (b) => b.analytics?.state === 'granted');

  const shorts = ['p', 't', 'i'].map((s) => answer(page, s));
  await page.evaluate(async () => {
    await window.ajs.page('Home');
    await window.ajs.track('Viewed Product', { sku: 'A-1' });
    await window.ajs.identify('cust-ajs-1', { email: 'ploy@example.com', plan: 'gold' });
  });
  for (const res of await Promise.all(shorts)) {
    assert.equal(res.status(), 200, res.url());
    assert.equal(res.headers()['access-control-allow-origin'], new URL(site.url).origin);
  }
  assert.deepEqual(await sourceCounts(), { ...start, accepted: start.accepted + 3, dropped: start.dropped + 1 });

  const before = await eventually(async () => {
    const e = await events(anon);
    return e.length >= 2 && e;
  }, { what: `the events of ${anon}` });
  assert.deepEqual(before.map((e) => [e.type, e.name]).sort(), [['page', 'Home'], ['track', 'Viewed Product']]);
  const viewed = before.find((e) => e.type === 'track');
  assert.equal(viewed.body.properties.sku, 'A-1');
  assert.equal(viewed.body.anonymousId, anon);
  assert.equal(viewed.body.writeKey, undefined, 'the write key is not stored with the event');
  // identify links the visitor to the person, who now has the events and the traits.
  const person = await eventually(async () => {
    const e = await events('cust-ajs-1');
    return e.length >= 1 && e;
  }, { what: 'the events of cust-ajs-1' });
  assert.equal(person[0].type, 'identify');
  const profile = expectStatus(await server.api('GET', '/v1/subjects/cust-ajs-1'), 200, 'GET /v1/subjects/cust-ajs-1');
  assert.equal(profile.identifiers.email, 'ploy@example.com');

  onlyOurHosts(requests, site.url, server.url);
  assert.deepEqual(errors, []);
});

test('analytics.js batching delivery posts one /v1/b with every event', async () => {
  const anon = '6c2e6e9f-4d3a-4c8b-8b2f-2a3b4c5d6e7f';
  expectStatus(await server.api('POST', '/v1/consents', {
    subject: anon, notice: { key: 'cookies', version: 1 }, source: 'api',
    actions: [{ purpose: 'analytics', action: 'grant' }],
  }), 201, 'POST /v1/consents');
  const { page, requests, errors } = await visit(new URL('/batch', site.url).href, anon);
  assert.equal(await page.evaluate(() => window.ajsReady), true);
  const start = await sourceCounts();
  const batch = answer(page, 'b');
  await page.evaluate(() => {
    window.ajs.track('Added to Cart', { sku: 'B-2' });
    window.ajs.track('Checked Out', { total: 120 });
    window.ajs.page('Thanks');
  });
  const res = await batch;
  assert.equal(res.status(), 200);
  assert.equal(res.headers()['access-control-allow-origin'], new URL(site.url).origin);
  assert.deepEqual(await sourceCounts(), { ...start, accepted: start.accepted + 3 });
  const sent = JSON.parse(res.request().postData());
  assert.equal(sent.batch.length, 3);
  const stored = await eventually(async () => {
    const e = await events(anon);
    return e.length >= 3 && e;
  }, { what: `the events of ${anon}` });
  assert.deepEqual(stored.map((e) => [e.type, e.name]).sort(),
    [['page', 'Thanks'], ['track', 'Added to Cart'], ['track', 'Checked Out']]);
  assert.ok(!requests.some((u) => /\/v1\/[tp]$/.test(u)), 'batching sends nothing one by one');
  onlyOurHosts(requests, site.url, server.url);
  assert.deepEqual(errors, []);
});

test('A site the tenant does not list gets no CORS: its preflight fails and nothing is stored', async () => {
  const anon = '7d3f7fa0-5e4b-4d9c-9c3a-3b4c5d6e7f80';
  expectStatus(await server.api('POST', '/v1/consents', {
    subject: anon, notice: { key: 'cookies', version: 1 }, source: 'api',
    actions: [{ purpose: 'analytics', action: 'grant' }],
  }), 201, 'POST /v1/consents');
  const { page, requests } = await visit(new URL('/inline', other.url).href, anon);
  assert.equal(await page.evaluate(() => window.ajsReady), true);
  const failed = page.waitForEvent('requestfailed', (r) => new URL(r.url()).pathname === '/v1/t');
  page.evaluate(() => window.ajs.track('From Elsewhere')).catch(() => {});
  const f = await failed;
  assert.match(f.failure().errorText, /ERR_FAILED|CORS|blocked/i);
  // Its settings cannot be read from there either.
  const settings = await page.evaluate((u) => fetch(u).then((r) => `HTTP ${r.status}`, (e) => `failed: ${e.name}`),
    `${server.url}/v1/projects/${writeKey}/settings`);
  assert.equal(settings, 'failed: TypeError');
  await new Promise((r) => setTimeout(r, 500));
  assert.deepEqual(await events(anon), [], 'nothing from the unlisted site was stored');
  onlyOurHosts(requests, other.url, server.url);
});
