// The website consent banner, as a visitor meets it: a customer's page on its
// own origin embeds /sdk/yinyom.js from a real `yinyom serve`, and every
// choice is checked in the server's ledger.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import zlib from 'node:zlib';

import {
  NOTICE, PURPOSES, SDK_FILE, anonymousId, checkA11y, consentCalls, describeViolations, eventually,
  expectStatus, focused, launchBrowser, ledgerConsents, publishNotice, setupBanner, startServer,
  startSite, tabTo, testPage,
} from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let browser, server, banner, site;
const cleanup = [];

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
  banner = await setupBanner(server);
  site = await startSite({
    '/': testPage({
      server,
      siteKey: banner.siteKey,
      // A module, an external script and one needing two purposes.
      extra: `<script type="text/plain" data-yinyom-purpose="analytics" data-type="module">window.moduleRan = typeof import.meta</script>
<script type="text/plain" data-yinyom-purpose="analytics" src="/tag.js"></script>
<script type="text/plain" data-yinyom-purpose="analytics ads">window.bothRan=(window.bothRan||0)+1</script>`,
    }),
    '/tag.js': 'window.externalRan = (window.externalRan || 0) + 1;',
  });
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
  await site?.stop();
  await browser?.close();
  await server?.stop();
});

/** A fresh visitor (own cookies and storage) on `url`; page errors are kept. */
async function visit(url = site.url, contextOptions = {}, { init } = {}) {
  const context = await browser.newContext({ locale: 'en-US', ...contextOptions });
  cleanup.push(() => context.close());
  if (init) await context.addInitScript(init);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Registered before navigating: the banner may fetch its config before goto returns.
  const config = page.waitForResponse((r) => r.url().includes('/sdk/v1/config'));
  config.catch(() => {}); // most tests never wait for it
  await page.goto(url);
  return { context, page, errors, config };
}

const region = (page, name = 'Cookies') => page.getByRole('region', { name });
const settingsButton = (page, name = 'Cookie settings') => page.getByRole('button', { name, exact: true });

function isConsentPost(r) {
  return r.url().endsWith('/sdk/v1/consents') && r.request().method() === 'POST';
}

function lastEntry(history, purpose) {
  const mine = history.filter((e) => e.purpose === purpose);
  return mine[mine.length - 1];
}

test('Accept all: nothing tagged runs before consent, then each tag runs once; the ledger and Consent Mode follow', async () => {
  const { page, errors } = await visit();
  const changes = [];
  await page.exposeFunction('reportChange', (d) => changes.push(d));
  await page.evaluate(() => window.addEventListener('yinyom:change', (e) => window.reportChange(e.detail)));

  await region(page).waitFor();
  assert.deepEqual(await page.evaluate(() => [window.analyticsRan, window.moduleRan, window.externalRan, window.bothRan]),
    [undefined, undefined, undefined, undefined], 'no tagged script runs before a choice');
  assert.equal(await page.evaluate(() => window.yinyom.consent('analytics')), undefined);

  const posted = page.waitForResponse(isConsentPost);
  await region(page).getByRole('button', { name: 'Accept all', exact: true }).click();
  const res = await posted;
  assert.equal(res.status(), 201, 'POST /sdk/v1/consents answers 201');
  assert.equal(res.headers()['access-control-allow-origin'], new URL(site.url).origin, 'CORS echoes the site origin');
  assert.equal((await res.json()).recorded, 2);

  await page.waitForFunction(() => window.analyticsRan === 1 && window.externalRan === 1 && window.bothRan === 1 && window.moduleRan);
  assert.equal(await page.evaluate(() => window.moduleRan), 'object', 'data-type="module" became the type');
  // A tag added later runs too, once.
  await page.evaluate(() => {
    const s = document.createElement('script');
    s.type = 'text/plain';
    s.setAttribute('data-yinyom-purpose', 'analytics');
    s.textContent = 'window.lateRan=(window.lateRan||0)+1';
    document.body.append(s);
  });
  await page.waitForFunction(() => window.lateRan === 1);
  await sleep(300);
  assert.deepEqual(await page.evaluate(() => [window.analyticsRan, window.externalRan, window.bothRan, window.lateRan]), [1, 1, 1, 1],
    'every tag ran exactly once');

  assert.equal(await region(page).count(), 0, 'the banner is gone');
  assert.ok(await settingsButton(page).isVisible(), 'a cookie settings button lets the visitor change their mind');
  assert.deepEqual(await page.evaluate(() => ['analytics', 'ads', 'necessary', 'nope'].map((p) => window.yinyom.consent(p))),
    [true, true, true, undefined]);
  assert.deepEqual(changes.at(-1), { necessary: true, analytics: true, ads: true }, 'yinyom:change carries the choices');

  const anon = await anonymousId(page);
  assert.match(anon, UUID);
  const stored = await page.evaluate(() => ({
    anon: localStorage.getItem('yinyom.anon'),
    cookie: document.cookie,
    consent: JSON.parse(localStorage.getItem('yinyom.consent')),
  }));
  assert.equal(stored.anon, anon);
  assert.ok(stored.cookie.includes(`yinyom_anon=${anon}`));
  assert.equal(stored.consent.v, banner.notice.version);
  assert.deepEqual(stored.consent.choices, { analytics: true, ads: true });

  const { by, history } = await ledgerConsents(server, anon, (b) => b.analytics && b.ads);
  for (const purpose of ['analytics', 'ads']) {
    assert.equal(by[purpose].state, 'granted', `${purpose} granted in the ledger`);
    assert.equal(by[purpose].source, 'web');
    const e = lastEntry(history, purpose);
    assert.ok(e, `a ledger entry for ${purpose}`);
    assert.equal(e.source, 'web');
    assert.ok(e.evidence, `the history entry shows its evidence: ${JSON.stringify(e)}`);
    assert.equal(e.evidence.page_url, site.url);
    assert.equal(e.evidence.ui_element, 'accept_all');
  }
  assert.equal(by.necessary, undefined, 'nothing recorded for a purpose that needs no consent');

  const calls = await consentCalls(page);
  assert.equal(calls[0].kind, 'default', 'the first consent call is the default');
  assert.deepEqual(calls[0].signals, {
    ad_storage: 'denied', analytics_storage: 'denied', ad_user_data: 'denied', ad_personalization: 'denied', wait_for_update: 500,
  });
  const updates = calls.filter((c) => c.kind === 'update');
  assert.ok(updates.length >= 1, 'an update follows the choice');
  assert.deepEqual(updates.at(-1).signals, {
    ad_storage: 'granted', analytics_storage: 'granted', ad_user_data: 'granted', ad_personalization: 'granted',
  });
  assert.deepEqual(errors, []);
});

test('Reject all: denied in the ledger, no tag runs, Consent Mode stays denied; the choice holds after a reload', async () => {
  const { page, errors } = await visit();
  await region(page).waitFor();
  await tabTo(page, 'Reject all');
  await page.keyboard.press('Enter');
  await region(page).waitFor({ state: 'hidden' });
  assert.equal((await focused(page)).name, 'Cookie settings', 'focus moves to the settings button, not lost on <body>');
  const anon = await anonymousId(page);
  const { by } = await ledgerConsents(server, anon, (b) => b.analytics && b.ads);
  assert.equal(by.analytics.state, 'denied');
  assert.equal(by.ads.state, 'denied');

  const check = async () => {
    assert.deepEqual(await page.evaluate(() => [window.analyticsRan, window.externalRan, window.bothRan]),
      [undefined, undefined, undefined], 'no tagged script ran');
    for (const c of await consentCalls(page)) {
      for (const s of ['ad_storage', 'analytics_storage', 'ad_user_data', 'ad_personalization']) {
        assert.equal(c.signals[s], 'denied', `${c.kind} ${s}`);
      }
    }
  };
  await check();
  await page.reload();
  await settingsButton(page).waitFor(); // the SDK has applied the stored choice
  assert.equal(await region(page).count(), 0, 'no banner after a reload');
  await sleep(300);
  await check();
  assert.equal(await page.evaluate(() => window.yinyom.consent('analytics')), false);

  // The page's own link (data-yinyom-open) opens the preferences; Esc gives the focus back.
  await page.getByRole('link', { name: 'Cookie preferences' }).focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  assert.equal(await dialog.getByRole('switch', { name: 'Analytics' }).isChecked(), false);
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await focused(page)).name, 'Cookie preferences');
  assert.deepEqual(errors, []);
});

test('Global Privacy Control: sale or sharing stays denied even on Accept all, recorded as GPC without a click', async () => {
  const { page, errors, config } = await visit(undefined, { extraHTTPHeaders: { 'Sec-GPC': '1' } }, {
    init: () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true }),
  });
  assert.equal((await (await config).json()).gpc, true, 'the server saw Sec-GPC: 1');
  await region(page).waitFor();
  const anon = await anonymousId(page);

  // Before any click: the opt-out is in the ledger.
  const first = await ledgerConsents(server, anon, (b) => b.ads);
  assert.equal(first.by.ads.state, 'denied');
  assert.equal(first.by.analytics, undefined, 'only sale/sharing purposes are decided by GPC');
  const g = lastEntry(first.history, 'ads');
  assert.ok(g.evidence, `the history entry shows its evidence: ${JSON.stringify(g)}`);
  assert.equal(g.evidence.ui_element, 'gpc');
  assert.equal(g.evidence.gpc, true);

  await region(page).getByRole('button', { name: 'Accept all', exact: true }).click();
  const { by, history } = await ledgerConsents(server, anon, (b) => b.analytics?.state === 'granted');
  assert.equal(by.analytics.state, 'granted');
  assert.equal(by.ads.state, 'denied', 'GPC wins over Accept all');
  const adsEntries = history.filter((e) => e.purpose === 'ads');
  assert.ok(adsEntries.every((e) => e.action === 'deny' && e.evidence?.gpc === true), JSON.stringify(adsEntries));
  assert.equal(await page.evaluate(() => window.yinyom.consent('ads')), false);

  const updates = (await consentCalls(page)).filter((c) => c.kind === 'update');
  assert.equal(updates.at(-1).signals.analytics_storage, 'granted');
  for (const u of updates) assert.equal(u.signals.ad_storage, 'denied');

  await settingsButton(page).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByText('Global Privacy Control honoured', { exact: false }).waitFor();
  assert.equal(await dialog.getByRole('switch', { name: 'Advertising' }).isChecked(), false);
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });

  // Once per notice version: a reload does not record it again.
  const before = (await ledgerConsents(server, anon)).history.length;
  await page.reload();
  await settingsButton(page).waitFor();
  await sleep(500);
  assert.equal((await ledgerConsents(server, anon)).history.length, before);
  assert.deepEqual(errors, []);
});

test('GPC from navigator.globalPrivacyControl alone: honoured on the first layer, denied on load, the switch stays off', async () => {
  const { page, errors, config } = await visit(undefined, {}, {
    init: () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true }),
  });
  assert.equal((await (await config).json()).gpc, false, 'no Sec-GPC header: only the script sees the signal');
  const r = region(page);
  await r.waitFor();
  await r.getByRole('note').getByText('Global Privacy Control honoured', { exact: false }).waitFor();
  const anon = await anonymousId(page);
  const first = await ledgerConsents(server, anon, (b) => b.ads);
  assert.equal(first.by.ads.state, 'denied', 'recorded without a click');
  const g = lastEntry(first.history, 'ads');
  assert.equal(g.evidence.ui_element, 'gpc');
  assert.equal(g.evidence.gpc, true);

  // Manage preferences: the sale/sharing switch is off and cannot be turned on.
  await r.getByRole('button', { name: 'Manage preferences' }).click();
  const dialog = page.getByRole('dialog');
  const ads = dialog.getByRole('switch', { name: 'Advertising' });
  assert.equal(await ads.isChecked(), false);
  assert.equal(await ads.isDisabled(), true);
  await dialog.getByRole('switch', { name: 'Analytics' }).check();
  await dialog.getByRole('button', { name: 'Save preferences' }).click();
  const { by, history } = await ledgerConsents(server, anon, (b) => b.analytics?.state === 'granted');
  assert.equal(by.ads.state, 'denied');
  assert.ok(history.filter((e) => e.purpose === 'ads').every((e) => e.action === 'deny'), JSON.stringify(history));
  assert.equal(await page.evaluate(() => window.yinyom.consent('ads')), false);
  assert.deepEqual(errors, []);
});

test('The server enforces GPC: a script that posts a grant of advertising under Sec-GPC gets a denial recorded', async () => {
  const { page } = await visit(undefined, { extraHTTPHeaders: { 'Sec-GPC': '1' } });
  await region(page).waitFor();
  // Not the banner: a page script calling the banner's endpoint directly,
  // granting everything and claiming no GPC.
  const answer = await page.evaluate(async ({ base, siteKey }) => {
    const anon = crypto.randomUUID();
    const r = await fetch(`${base}/sdk/v1/consents`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        site_key: siteKey, anonymous_id: anon, notice: { key: 'cookies', version: 1 },
        actions: [{ purpose: 'analytics', action: 'grant' }, { purpose: 'ads', action: 'grant' }],
        evidence: { ui_element: 'accept_all', gpc: false },
      }),
    });
    return { anon, status: r.status, body: await r.json() };
  }, { base: server.url, siteKey: banner.siteKey });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  assert.deepEqual(answer.body.gpc_denied, ['ads']);
  const { by, history } = await ledgerConsents(server, answer.anon, (b) => b.ads && b.analytics);
  assert.equal(by.analytics.state, 'granted');
  assert.equal(by.ads.state, 'denied');
  const e = lastEntry(history, 'ads');
  assert.equal(e.action, 'deny');
  assert.equal(e.evidence.gpc, true, 'the header counts, whatever the body says');
  assert.deepEqual(e.evidence.gpc_denied, ['ads']);
  const d = expectStatus(await server.api('GET', `/v1/decisions?subject=${answer.anon}&purpose=ads`), 200, 'GET /v1/decisions');
  assert.equal(d.allowed, false);
});

test('Keyboard only: manage preferences, grant analytics, then withdraw it from the settings button; its cookie goes', async () => {
  const { page, context, errors } = await visit();
  await region(page).waitFor();

  await tabTo(page, 'Manage preferences');
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Privacy preferences' });
  await dialog.waitFor();
  assert.equal(await dialog.getAttribute('aria-modal'), 'true');
  const inDialog = () => page.evaluate(() => {
    let a = document.activeElement;
    while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
    return !!(a && a.closest('dialog'));
  });
  assert.ok(await inDialog(), 'focus moved into the dialog');
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    assert.ok(await inDialog(), `Tab ${i + 1} stays in the dialog (on ${JSON.stringify(await focused(page))})`);
  }
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Shift+Tab');
    assert.ok(await inDialog(), `Shift+Tab ${i + 1} stays in the dialog`);
  }
  const necessary = dialog.getByRole('switch', { name: 'Strictly necessary' });
  assert.ok(await necessary.isChecked() && await necessary.isDisabled(), 'necessary is always on');
  await dialog.getByText('Always active').waitFor();

  // Esc closes and puts focus back where it was.
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await focused(page)).name, 'Manage preferences');

  await page.keyboard.press('Enter');
  await dialog.waitFor();
  await tabTo(page, 'Analytics');
  await page.keyboard.press('Space');
  assert.equal(await dialog.getByRole('switch', { name: 'Analytics' }).isChecked(), true);
  await tabTo(page, 'Save preferences');
  await page.keyboard.press('Enter');
  await dialog.waitFor({ state: 'hidden' });

  const anon = await anonymousId(page);
  let l = await ledgerConsents(server, anon, (b) => b.analytics && b.ads);
  assert.equal(l.by.analytics.state, 'granted');
  assert.equal(l.by.ads.state, 'denied');
  assert.equal(lastEntry(l.history, 'analytics').evidence?.ui_element, 'save_preferences');
  await page.waitForFunction(() => window.analyticsRan === 1);
  assert.ok((await context.cookies()).some((c) => c.name === '_ga'), '_ga is there while analytics is granted');

  // The settings button has the focus and reopens the preferences.
  assert.equal((await focused(page)).name, 'Cookie settings');
  await page.keyboard.press('Enter');
  await dialog.waitFor();
  assert.equal(await dialog.getByRole('switch', { name: 'Analytics' }).isChecked(), true, 'the dialog shows the current choice');
  await tabTo(page, 'Analytics');
  await page.keyboard.press('Space');
  await tabTo(page, 'Save preferences');
  await page.keyboard.press('Enter');

  l = await ledgerConsents(server, anon, (b) => b.analytics?.state !== 'granted');
  assert.equal(l.by.analytics.state, 'withdrawn');
  assert.equal(lastEntry(l.history, 'analytics').action, 'withdraw');
  assert.equal(l.by.ads.state, 'denied', 'ads was never granted: still a refusal, not a withdrawal');
  const d = expectStatus(await server.api('GET', `/v1/decisions?subject=${anon}&purpose=analytics`), 200, 'GET /v1/decisions');
  assert.equal(d.allowed, false);
  const left = (await context.cookies()).map((c) => c.name);
  assert.ok(!left.includes('_ga') && !left.includes('_ga_TEST'), `withdrawal deleted _ga and _ga_* (left: ${left})`);
  assert.ok(left.includes('yinyom_anon'), 'the banner\'s own cookie stays');
  assert.equal(await page.evaluate(() => window.yinyom.consent('analytics')), false);
  assert.deepEqual(errors, []);
});

test('Re-prompt: a material notice change asks again, a non-material one does not', async () => {
  const own = await startServer();
  cleanup.push(() => own.stop());
  const b = await setupBanner(own);
  const ownSite = await startSite(testPage({ server: own, siteKey: b.siteKey }));
  cleanup.push(() => ownSite.stop());

  const { page, context, errors } = await visit(ownSite.url);
  await region(page).getByRole('button', { name: 'Accept all', exact: true }).click();
  const anon = await anonymousId(page);
  await ledgerConsents(own, anon, (x) => x.analytics && x.ads);

  // The config is cacheable for a minute: come back as the same visitor
  // with a fresh HTTP cache (their cookies and storage carried over).
  const comeBack = async () => {
    const state = await context.storageState();
    const c = await browser.newContext({ locale: 'en-US', storageState: state });
    cleanup.push(() => c.close());
    const p = await c.newPage();
    p.on('pageerror', (e) => errors.push(e.message));
    await p.goto(ownSite.url);
    await p.waitForFunction(() => window.yinyom && window.yinyom.consent('necessary') === true);
    return p;
  };

  await publishNotice(own, { material: false });
  let p = await comeBack();
  await settingsButton(p).waitFor();
  assert.equal(await region(p).count(), 0, 'a non-material version keeps the choice');
  await p.waitForFunction(() => window.analyticsRan === 1);

  const v3 = await publishNotice(own, { material: true });
  p = await comeBack();
  await region(p).waitFor();
  assert.equal(await p.evaluate(() => window.analyticsRan), undefined, 'consent lapsed: the tag waits');
  assert.equal(await p.evaluate(() => window.yinyom.consent('analytics')), undefined);
  await region(p).getByRole('button', { name: 'Manage preferences' }).click();
  const dialog = p.getByRole('dialog');
  assert.equal(await dialog.getByRole('switch', { name: 'Analytics' }).isChecked(), true, 'the earlier choice is pre-filled');
  await dialog.getByRole('button', { name: 'Save preferences' }).click();
  const l = await ledgerConsents(own, anon, (x) => x.analytics?.notice?.version === v3.version);
  assert.equal(l.by.analytics.state, 'granted');
  await p.waitForFunction(() => window.analyticsRan === 1);
  assert.deepEqual(errors, []);
});

test('Thai: a th-TH browser gets the Thai banner with lang="th"; switching to English works and sticks', async () => {
  const { page, errors } = await visit(undefined, { locale: 'th-TH' });
  const th = region(page, NOTICE.texts.th.title);
  await th.waitFor();
  assert.equal(await page.locator('#yinyom').getAttribute('lang'), 'th');
  await th.getByText(NOTICE.texts.th.body).waitFor();
  for (const name of ['ยอมรับทั้งหมด', 'ปฏิเสธทั้งหมด', 'ตั้งค่า']) {
    assert.ok(await th.getByRole('button', { name, exact: true }).isVisible(), name);
  }

  await th.getByRole('button', { name: 'English' }).click();
  const en = region(page, NOTICE.texts.en.title);
  await en.waitFor();
  assert.equal(await page.locator('#yinyom').getAttribute('lang'), 'en');
  assert.equal(await en.getByRole('button', { name: 'English' }).getAttribute('aria-pressed'), 'true');
  assert.equal((await focused(page)).name, 'English', 'focus stays on the language switch');
  await en.getByText(NOTICE.texts.en.body).waitFor();

  await page.reload();
  await region(page, NOTICE.texts.en.title).waitFor();
  const post = page.waitForRequest((r) => r.url().endsWith('/sdk/v1/consents') && r.method() === 'POST');
  await region(page, NOTICE.texts.en.title).getByRole('button', { name: 'Manage preferences' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'ไทย' }).click();
  const dialog = page.getByRole('dialog', { name: 'การตั้งค่าความเป็นส่วนตัว' });
  await dialog.getByText('เปิดใช้งานตลอด').waitFor();
  await dialog.getByRole('switch', { name: 'การวิเคราะห์' }).check();
  await dialog.getByRole('button', { name: 'บันทึกการตั้งค่า' }).click();
  const body = (await post).postDataJSON();
  assert.equal(body.evidence.locale, 'th-TH', 'the locale says which language the visitor read');
  assert.equal(body.evidence.ui_element, 'save_preferences');
  assert.equal(await settingsButton(page, 'ตั้งค่าคุกกี้').getAttribute('aria-label'), 'ตั้งค่าคุกกี้');
  assert.deepEqual(errors, []);
});

test('Texts from the server are shown as text, never run as HTML; the policy is linked', async () => {
  const own = await startServer();
  cleanup.push(() => own.stop());
  const evil = '<img src=x onerror=window.pwned=1>';
  const notice = {
    ...NOTICE,
    texts: {
      en: { title: '<b>Cookies</b><img src=x onerror=window.pwned=2>', body: '<script>window.pwned=3</script>Body' },
      th: { title: '<b>คุกกี้</b>', body: '<script>window.pwned=4</script>' },
    },
    purposes: [...NOTICE.purposes, 'evil'],
  };
  const b = await setupBanner(own, {
    purposes: [...PURPOSES, {
      key: 'evil',
      names: { en: evil, th: evil },
      descriptions: { en: '<script>window.pwned=5</script>', th: '<script>window.pwned=6</script>' },
      basis: 'consent',
      channels: ['web'],
      retention_days: 30,
      banner: { cookies: ['x'] },
    }],
    notice,
  });
  expectStatus(await own.api('PATCH', '/v1/tenant', { policy_url: 'https://shop.example/privacy?a=<b>' }), 200, 'PATCH /v1/tenant policy_url');
  const ownSite = await startSite(testPage({ server: own, siteKey: b.siteKey }));
  cleanup.push(() => ownSite.stop());
  const { page, errors } = await visit(ownSite.url);
  const r = region(page, notice.texts.en.title);
  await r.waitFor();
  await r.getByText(notice.texts.en.body).waitFor();
  assert.equal(await r.getByRole('link', { name: 'Privacy policy' }).getAttribute('href'), 'https://shop.example/privacy?a=<b>',
    'the tenant\'s policy is linked, as an attribute value');
  await r.getByRole('button', { name: 'Manage preferences' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.getByText(evil, { exact: true }).waitFor();
  await dialog.getByRole('switch', { name: evil }).waitFor();
  await dialog.getByText('<script>window.pwned=5</script>').waitFor();
  await sleep(300);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.evaluate(() => document.getElementById('yinyom').shadowRoot.querySelectorAll('img,script,b').length), 0);
  assert.deepEqual(errors, []);
});

test('Accessibility: axe-core finds nothing serious on the banner, the preferences dialog or the settings button', async () => {
  for (const locale of ['en-US', 'th-TH']) {
    const { page } = await visit(undefined, { locale });
    await page.getByRole('region').waitFor();
    let v = await checkA11y(page);
    assert.deepEqual(v, [], `${locale} first layer:\n${describeViolations(v)}`);
    await page.locator('#yinyom section button.s').click();
    await page.getByRole('dialog').waitFor();
    v = await checkA11y(page);
    assert.deepEqual(v, [], `${locale} preferences:\n${describeViolations(v)}`);
    await page.getByRole('dialog').locator('button.s').click();
    await page.locator('#yinyom button.f').waitFor();
    v = await checkA11y(page);
    assert.deepEqual(v, [], `${locale} after the choice:\n${describeViolations(v)}`);
  }
});

test('Unknown site key: no banner, no exception; the server says 404', async () => {
  const bad = await startSite(testPage({ server, siteKey: 'site_doesnotexist000000000' }));
  cleanup.push(() => bad.stop());
  const context = await browser.newContext();
  cleanup.push(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const config = page.waitForResponse((r) => r.url().includes('/sdk/v1/config'));
  await page.goto(bad.url);
  const res = await config;
  assert.equal(res.status(), 404);
  assert.match(res.headers()['content-type'], /application\/problem\+json/);
  await sleep(500);
  assert.equal(await page.locator('#yinyom').count(), 0, 'no banner');
  assert.deepEqual(errors, [], 'no uncaught exception');
  assert.equal(await page.evaluate(() => window.analyticsRan), undefined);
  assert.equal(await page.evaluate(() => window.yinyom.consent('analytics')), undefined);
  // Consent Mode still got its default: tags stay denied.
  assert.equal((await consentCalls(page))[0].kind, 'default');
});

test('A choice made offline is kept and recorded on the next visit', async () => {
  const { page, context, errors } = await visit();
  await region(page).waitFor();
  await context.route('**/sdk/v1/consents', (route) => route.abort('internetdisconnected'));
  await region(page).getByRole('button', { name: 'Reject all', exact: true }).click();
  const anon = await anonymousId(page);
  await eventually(() => page.evaluate(() => JSON.parse(localStorage.getItem('yinyom.queue') || '[]').length === 1),
    { what: 'the choice to wait in the queue' });
  assert.equal((await server.api('GET', `/v1/subjects/${anon}/consents`)).status, 404, 'nothing reached the server');

  await context.unroute('**/sdk/v1/consents');
  await page.reload();
  const { by } = await ledgerConsents(server, anon, (b) => b.analytics && b.ads);
  assert.equal(by.analytics.state, 'denied');
  assert.equal(by.ads.state, 'denied');
  await eventually(() => page.evaluate(() => JSON.parse(localStorage.getItem('yinyom.queue') || '[]').length === 0),
    { what: 'the queue to empty' });
  assert.deepEqual(errors, []);
});

test('The SDK is served by the server and stays small', async () => {
  const src = await fs.readFile(SDK_FILE);
  const gz = zlib.gzipSync(src, { level: 9 }).length;
  assert.ok(gz <= 15360, `yinyom.js is ${gz} bytes gzipped (budget 15360)`);
  const r = await fetch(`${server.url}/sdk/yinyom.js`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /javascript/);
  assert.equal(await r.text(), src.toString('utf8'), 'the server serves this file');
});
