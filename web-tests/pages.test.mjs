// The server-rendered pages in Chromium: the preference center a subject
// opens from a signed link, and the admin console staff log in to. With
// SCREENSHOTS=<dir> (scripts/screenshots) the pages are saved as PNGs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';

import {
  REPO, checkA11y, describeViolations, expectStatus, launchBrowser, setupBanner, startServer, startSite, testPage,
} from './lib.mjs';

const SHOTS = process.env.SCREENSHOTS ? path.resolve(REPO, process.env.SCREENSHOTS) : null;

async function shot(page, name) {
  if (!SHOTS) return;
  await fs.mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const EVIL = '<img src=x onerror="window.pwned=1">';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  await setupBanner(server);
  for (const p of [
    {
      key: 'marketing.email', basis: 'consent', channels: ['email', 'sms', 'line'], retention_days: 730,
      names: { th: 'ข่าวสารและโปรโมชั่น', en: 'News and offers' },
      descriptions: { th: 'ส่งข่าวสาร ส่วนลด และกิจกรรมทางอีเมล SMS และ LINE', en: 'News, discounts and events by email, SMS and LINE' },
    },
    {
      key: 'profiling', basis: 'consent', retention_days: 365,
      names: { th: 'การวิเคราะห์ความสนใจ', en: `Interest profiling ${EVIL}` },
      descriptions: { th: 'แนะนำสินค้าจากประวัติการซื้อ', en: 'Product suggestions from what you bought' },
    },
  ]) {
    expectStatus(await server.api('POST', '/v1/purposes', p), 201, `purpose ${p.key}`);
  }
  expectStatus(await server.api('POST', '/v1/notices', {
    key: 'marketing', purposes: ['marketing.email', 'profiling'],
    texts: {
      th: { title: 'ประกาศความเป็นส่วนตัวสำหรับการตลาด', body: 'เราจะใช้ข้อมูลติดต่อของคุณเพื่อส่งข่าวสาร' },
      en: { title: 'Marketing privacy notice', body: 'We use your contact details to send you news.' },
    },
  }), 201, 'notice');
  expectStatus(await server.api('PATCH', '/v1/tenant', {
    name: 'ร้านสุขใจ · Sukjai Shop', default_lang: 'th',
    dpo: { name: 'Khun Dao', email: 'dpo@sukjai.example' },
  }), 200, 'tenant');
  expectStatus(await server.api('PUT', '/v1/subjects/cust-42', {
    identifiers: { email: 'malee@example.com', phone: '0812345678' },
    attributes: { country: 'TH', first_name: 'มาลี' },
  }), 200, 'subject');
  expectStatus(await server.api('POST', '/v1/consents', {
    subject: 'cust-42', source: 'web', notice: { key: 'marketing', version: 1 },
    actions: [
      { purpose: 'marketing.email', channel: 'email', action: 'grant' },
      { purpose: 'marketing.email', channel: 'sms', action: 'deny' },
    ],
  }), 201, 'consent');
  for (const [email, role] of [['dpo@sukjai.example', 'admin'], ['clerk@sukjai.example', 'user']]) {
    expectStatus(await server.api('POST', '/v1/staff', {
      email, role, name: role, password: 'correct horse battery staple',
    }), 201, `staff ${email}`);
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function decision(subject, purpose, channel) {
  const q = new URLSearchParams({ subject, purpose, ...(channel ? { channel } : {}) });
  return expectStatus(await server.api('GET', `/v1/decisions?${q}`), 200, 'decision');
}

describe('preference center', () => {
  test('a withdrawal made on the page changes the decision API at once; receipts download; requests file', async () => {
    const link = expectStatus(await server.api('POST', '/v1/subjects/cust-42/preference-link', {}), 201, 'link');
    assert.equal((await decision('cust-42', 'marketing.email', 'email')).allowed, true);
    const ctx = await browser.newContext({ locale: 'th-TH', acceptDownloads: true, bypassCSP: true });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(link.url);
    assert.equal(await page.getAttribute('html', 'lang'), 'th');
    await page.getByRole('heading', { name: 'ข่าวสารและโปรโมชั่น' }).waitFor();
    const email = page.getByRole('switch', { name: 'อีเมล' });
    assert.equal(await email.isChecked(), true, 'the email consent shows as given');
    assert.equal(await page.getByRole('switch', { name: 'SMS' }).isChecked(), false);
    await shot(page, 'preference-center');

    const a11y = await checkA11y(page);
    assert.deepEqual(a11y, [], describeViolations(a11y));

    // English, with the escaped purpose name shown as text.
    await page.getByRole('link', { name: 'English' }).click();
    await page.getByRole('heading', { name: `Interest profiling ${EVIL}` }).waitFor();
    assert.equal(await page.evaluate(() => window.pwned), undefined, 'purpose names are never markup');

    // Withdraw email with one switch: the decision API answers no at once.
    await page.getByRole('switch', { name: 'Email' }).uncheck();
    await page.getByRole('button', { name: 'Save my choices' }).click();
    await page.getByRole('status').filter({ hasText: 'saved' }).waitFor();
    const d = await decision('cust-42', 'marketing.email', 'email');
    assert.deepEqual([d.allowed, d.reason], [false, 'withdrawn']);
    assert.equal(await page.getByRole('switch', { name: 'Email' }).isChecked(), false);
    // Granting back is as easy.
    await page.getByRole('switch', { name: 'LINE' }).check();
    await page.getByRole('button', { name: 'Save my choices' }).click();
    await page.getByRole('status').filter({ hasText: 'saved' }).waitFor();
    assert.equal((await decision('cust-42', 'marketing.email', 'line')).allowed, true);

    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: /Download your consent receipts/ }).click(),
    ]);
    const receipts = JSON.parse(await fs.readFile(await download.path(), 'utf8'));
    assert.ok(receipts.receipts.length >= 2, JSON.stringify(receipts));
    assert.equal(receipts.receipts[0].jws.split('.').length, 3);

    await page.getByLabel('What you would like').selectOption('erasure');
    await page.getByRole('button', { name: 'Send the request' }).click();
    await page.getByRole('status').filter({ hasText: 'We received your request' }).waitFor();
    const reqs = expectStatus(await server.api('GET', '/v1/requests?subject=cust-42'), 200, 'requests');
    assert.equal(reqs.requests[0].kind, 'erasure');
    assert.equal(reqs.requests[0].via, 'preference_center');
    assert.deepEqual(errors, []);
    await ctx.close();
  });

  test('a tampered link opens nothing', async () => {
    const link = expectStatus(await server.api('POST', '/v1/subjects/cust-42/preference-link', { ttl_hours: 1 }), 201, 'link');
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    // Flip one character of the signature.
    const at = link.url.lastIndexOf('.') + 1;
    const tampered = link.url.slice(0, at) + (link.url[at] === 'A' ? 'B' : 'A') + link.url.slice(at + 1);
    const res = await page.goto(tampered);
    assert.equal(res.status(), 404);
    await page.getByRole('heading', { name: 'ลิงก์ไม่ถูกต้อง' }).waitFor();
    await ctx.close();
  });
});

async function login(page, email) {
  await page.goto(`${server.url}/admin/login?lang=en`);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill('correct horse battery staple');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
}

describe('admin console', () => {
  test('an admin logs in, sees the dashboard with charts, edits purposes, sees contact points in clear', async () => {
    // Some activity for the charts: banner choices and a suppressed message.
    const { siteKey } = { siteKey: (await server.api('GET', '/v1/tenant')).body.banner.site_key };
    // Choices made over the last days (as an import of history would carry).
    const day = 86400000;
    for (let i = 0; i < 24; i++) {
      const anon = `0f8fad5b-d9cb-469f-a165-7086772895${String(i).padStart(2, '0')}`;
      const at = new Date(Date.now() - (i % 8) * day - 3600000).toISOString();
      expectStatus(await server.api('POST', '/v1/consents', {
        subject: anon, source: 'web', notice: { key: 'cookies', version: 1 }, occurred_at: at,
        actions: [
          { purpose: 'analytics', action: i % 3 ? 'grant' : 'deny' },
          { purpose: 'ads', action: i % 2 || i % 8 < 3 ? 'grant' : 'deny' },
        ],
      }), 201, 'history');
    }
    assert.ok(siteKey);
    // bypassCSP lets axe-core in; the pages allow no script of their own.
    const ctx = await browser.newContext({ locale: 'en-GB', bypassCSP: true });
    const page = await ctx.newPage();
    await login(page, 'dpo@sukjai.example');
    const chart = page.getByRole('img', { name: /consent rate/i });
    await chart.waitFor();
    // Drawn, not only present: points are the chart's own children, with a size.
    const points = chart.locator(':scope > circle');
    assert.ok(await points.count() >= 2, 'a point per purpose and channel and day');
    const box = await points.first().boundingBox();
    assert.ok(box && box.width > 0, 'the points are rendered');
    await shot(page, 'admin-dashboard');
    const a11y = await checkA11y(page);
    assert.deepEqual(a11y, [], describeViolations(a11y));

    // Purposes editor: a name with markup is stored and shown as text.
    await page.getByRole('link', { name: 'Purposes' }).click();
    await page.getByLabel('Key (e.g. marketing.email)').fill('loyalty');
    await page.getByLabel('Name (English)').fill(`Loyalty ${EVIL}`);
    await page.getByLabel('Retention (days)').fill('400');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('cell', { name: `Loyalty ${EVIL}` }).waitFor();
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    const stored = expectStatus(await server.api('GET', '/v1/purposes/loyalty'), 200, 'purpose');
    assert.equal(stored.retention_days, 400);

    // Subject lookup by email, in clear for an admin.
    await page.getByRole('link', { name: 'Subjects' }).click();
    await page.getByLabel('Customer id, email or phone number').fill('malee@example.com');
    await page.getByRole('button', { name: 'Search' }).click();
    await page.getByRole('heading', { name: 'Subject cust-42' }).waitFor();
    assert.ok((await page.locator('td.contact').allTextContents()).some((t) => t.includes('malee@example.com')));
    await page.getByRole('link', { name: "Verify the ledger's hash chain" }).click();
    await page.getByText('Intact').waitFor();
    await ctx.close();
  });

  test('a user sees contact points masked unless the subject consented on that channel', async () => {
    const ctx = await browser.newContext({ locale: 'en-GB' });
    const page = await ctx.newPage();
    await login(page, 'clerk@sukjai.example');
    await page.goto(`${server.url}/admin/subjects/cust-42`);
    const cells = await page.locator('td.contact').allTextContents();
    // Email: consent withdrawn above → masked. Phone: SMS denied, LINE is
    // not a phone channel → masked too.
    assert.ok(cells.some((t) => t.includes('m***@example.com')), JSON.stringify(cells));
    assert.ok(!cells.some((t) => t.includes('malee@example.com')), JSON.stringify(cells));
    assert.ok(cells.some((t) => /08x-xxx-5678/.test(t)), JSON.stringify(cells));
    // The audit log is not for this role.
    assert.equal(await page.getByRole('link', { name: 'Audit log' }).count(), 0);
    const res = await page.goto(`${server.url}/admin/audit`);
    assert.equal(res.status(), 403);
    await ctx.close();
  });

  test('a form posted from another site is refused (CSRF), and nothing changes', async () => {
    const ctx = await browser.newContext({ locale: 'en-GB' });
    const page = await ctx.newPage();
    await login(page, 'dpo@sukjai.example');
    // The attacker's page posts to the console with the victim's cookies
    // (SameSite=Strict keeps them off; without a token it fails anyway).
    const evil = await startSite(`<!doctype html><form id=f method=post action="${server.url}/admin/purposes">
      <input name=key value=evil><input name=name_en value=Evil><input name=retention_days value=1></form>
      <script>document.getElementById('f').submit()</script>`);
    await page.goto(evil.url);
    await page.waitForURL(/\/admin\//);
    assert.notEqual(await page.getByRole('heading', { name: 'Purposes' }).count(), 1, 'the form did not go through');
    const p = await server.api('GET', '/v1/purposes/evil');
    assert.equal(p.status, 404, 'no purpose was created');
    await evil.stop();
    await ctx.close();
  });
});

describe('screens for the README', () => {
  test('the banner, first layer and preferences', { skip: !SHOTS }, async () => {
    const { body: tenant } = await server.api('GET', '/v1/tenant');
    const site = await startSite(testPage({ server, siteKey: tenant.banner.site_key, title: 'ร้านสุขใจ' }));
    const ctx = await browser.newContext({ locale: 'th-TH', viewport: { width: 1100, height: 700 } });
    const page = await ctx.newPage();
    await page.goto(site.url);
    await page.getByRole('button', { name: 'ยอมรับทั้งหมด' }).waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'banner.png') });
    await page.getByRole('button', { name: 'ตั้งค่า' }).first().click();
    await page.getByRole('dialog').waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'banner-preferences.png') });
    await ctx.close();
    await site.stop();
  });
});
