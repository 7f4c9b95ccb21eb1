// The banner's design per tenant (PUT /v1/tenant/banner-design), as a
// visitor meets it: each position (bottom bar, corner box, centred modal) in
// Thai and English, screenshotted into docs/screenshots/, axe-core clean
// (every impact, colour contrast included), usable by keyboard alone, and
// the centred modal keeps focus until a choice is made.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';

import {
  REPO, anonymousId, describeViolations, eventually, expectStatus, focused, launchBrowser,
  ledgerConsents, setupBanner, startServer, startSite, tabTo, testPage,
} from './lib.mjs';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
// With SCREENSHOTS=<dir> (scripts/screenshots) each position is saved as a PNG.
const SHOTS = process.env.SCREENSHOTS ? path.resolve(REPO, process.env.SCREENSHOTS) : null;
const shoot = (page, name) => (SHOTS ? page.screenshot({ path: path.join(SHOTS, name) }) : page.screenshot());
let browser, server, banner, site;
const cleanup = [];

const DESIGNS = {
  bottom_bar: {
    position: 'bottom_bar',
    font_family: 'Georgia, serif',
    radius: 0,
    colors: {
      background: '#f0fdf4', text: '#14532d', accent: '#166534',
      accept_background: '#166534', accept_text: '#ffffff',
      reject_background: '#166534', reject_text: '#ffffff',
    },
    texts: { en: { title: 'Your privacy, your choice' }, th: { title: 'ความเป็นส่วนตัวของคุณ' } },
  },
  corner_box: {
    position: 'corner_box',
    font_size: 15,
    radius: 14,
    colors: {
      background: '#ffffff', text: '#1f2937', accent: '#7c2d12',
      accept_background: '#7c2d12', accept_text: '#ffffff',
      reject_background: '#7c2d12', reject_text: '#ffffff',
    },
    dark: {
      background: '#111827', text: '#f9fafb', accent: '#fcd34d',
      accept_background: '#fcd34d', accept_text: '#111827',
      reject_background: '#fcd34d', reject_text: '#111827',
    },
    texts: { en: { accept: 'Allow all', reject: 'Refuse all' }, th: { accept: 'อนุญาตทั้งหมด', reject: 'ไม่อนุญาตทั้งหมด' } },
  },
  center_modal: {
    position: 'center_modal',
    radius: 10,
    font_size: 17,
    // Outlined buttons, both alike: equal prominence without a fill.
    colors: {
      background: '#ffffff', text: '#111827', accent: '#6d28d9',
      accept_background: '#ffffff', accept_text: '#6d28d9',
      reject_background: '#ffffff', reject_text: '#6d28d9',
    },
    accept: { font_weight: 700 },
    reject: { font_weight: 700 },
  },
};

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
  banner = await setupBanner(server);
  site = await startSite({ '/': testPage({ server, siteKey: banner.siteKey }) });
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
  await site?.stop();
  await browser?.close();
  await server?.stop();
});

async function useDesign(design) {
  return expectStatus(await server.api('PUT', '/v1/tenant/banner-design', design), 200, 'PUT banner-design');
}

/** A fresh visitor: own storage and HTTP cache, so the new design's config is fetched. */
async function visit(contextOptions = {}) {
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1024, height: 640 }, ...contextOptions });
  cleanup.push(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(site.url);
  await page.locator('#yinyom section.b').waitFor();
  return { page, errors };
}

/** Every axe-core violation, whatever its impact. */
async function allViolations(page) {
  const content = await fs.readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.addScriptTag({ content });
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return r.violations;
}

const rgb = (hex) => {
  const n = parseInt(hex.slice(1), 16);
  return `rgb(${n >> 16}, ${(n >> 8) & 255}, ${n & 255})`;
};
const style = (page, sel, prop) => page.locator(`#yinyom ${sel}`).first()
  .evaluate((el, p) => getComputedStyle(el)[p], prop);

const inBanner = (page) => page.evaluate(() => {
  let a = document.activeElement;
  while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
  return !!(a && a.closest && a.closest('section.b'));
});

for (const [position, design] of Object.entries(DESIGNS)) {
  test(`${position}: Thai and English screenshots, the design applied, axe-core finds nothing`, async () => {
    await useDesign(design);
    for (const [locale, lang] of [['en-US', 'en'], ['th-TH', 'th']]) {
      const { page, errors } = await visit({ locale });
      const section = page.locator('#yinyom section.b');
      assert.equal(await page.locator('#yinyom').evaluate((h) => h.lang), lang);
      // The design's colours, radius and weights reach the buttons.
      assert.equal(await style(page, 'section.b', 'backgroundColor'), rgb(design.colors.background));
      assert.equal(await style(page, 'section.b button.ac', 'backgroundColor'), rgb(design.colors.accept_background));
      assert.equal(await style(page, 'section.b button.rj', 'color'), rgb(design.colors.reject_text));
      for (const p of ['fontSize', 'fontWeight', 'backgroundColor', 'color']) {
        assert.equal(await style(page, 'section.b button.ac', p), await style(page, 'section.b button.rj', p),
          `Accept and Reject share ${p}`);
      }
      assert.equal(await style(page, 'section.b button.ac', 'borderTopLeftRadius'), `${design.radius}px`);
      // A button filled like the banner is outlined in its text colour, so it still reads as a button.
      const c = design.colors, edge = c.accept_background === c.background ? c.accept_text : c.accept_background;
      assert.equal(await style(page, 'section.b button.ac', 'borderTopColor'), rgb(edge));
      const texts = (design.texts || {})[lang] || {};
      if (texts.title) assert.equal(await section.locator('h2').textContent(), texts.title);
      if (texts.accept) {
        await section.getByRole('button', { name: texts.accept, exact: true }).waitFor();
        await section.getByRole('button', { name: texts.reject, exact: true }).waitFor();
      }
      const box = await section.boundingBox();
      if (position === 'bottom_bar') assert.ok(box.x === 0 && box.width === 1024 && box.y + box.height === 640, JSON.stringify(box));
      if (position === 'corner_box') assert.ok(box.x > 400 && box.x + box.width <= 1024 - 15 && box.width < 500, JSON.stringify(box));
      if (position === 'center_modal') {
        assert.ok(Math.abs(box.x + box.width / 2 - 512) < 2 && Math.abs(box.y + box.height / 2 - 320) < 2, JSON.stringify(box));
        assert.equal(await section.getAttribute('role'), 'dialog');
        assert.equal(await section.getAttribute('aria-modal'), 'true');
      }
      await shoot(page, `banner-${position.replace('_', '-')}-${lang}.png`);
      const v = await allViolations(page);
      assert.deepEqual(v, [], `${position} ${locale}:\n${describeViolations(v)}`);
      // The preferences dialog wears the same design, as cleanly.
      await section.locator('button.s').click();
      await page.locator('#yinyom dialog[open]').waitFor();
      const inDialog = await allViolations(page);
      assert.deepEqual(inDialog, [], `${position} ${locale} preferences:\n${describeViolations(inDialog)}`);
      assert.deepEqual(errors, []);
    }
  });
}

test('Dark mode: the design\'s dark colours follow the visitor\'s system, still axe-clean', async () => {
  const d = DESIGNS.corner_box;
  await useDesign(d);
  const { page } = await visit({ colorScheme: 'dark' });
  assert.equal(await style(page, 'section.b', 'backgroundColor'), rgb(d.dark.background));
  assert.equal(await style(page, 'section.b button.ac', 'color'), rgb(d.dark.accept_text));
  assert.equal(await style(page, 'section.b h2', 'color'), rgb(d.dark.text));
  await shoot(page, 'banner-corner-box-dark-en.png');
  const v = await allViolations(page);
  assert.deepEqual(v, [], describeViolations(v));
  const { page: light } = await visit({ colorScheme: 'light' });
  assert.equal(await style(light, 'section.b', 'backgroundColor'), rgb(d.colors.background));
});

test('Keyboard only, each position: Tab reaches Reject and Accept, Enter records the choice', async () => {
  for (const [position, design] of Object.entries(DESIGNS)) {
    await useDesign(design);
    for (const [choice, label, want] of [['reject', 'Reject all', 'denied'], ['accept', 'Accept all', 'granted']]) {
      const { page } = await visit();
      const name = ((design.texts || {}).en || {})[choice] || label;
      await tabTo(page, name);
      await page.keyboard.press('Enter');
      await page.locator('#yinyom section.b').waitFor({ state: 'hidden' });
      const anon = await anonymousId(page);
      const { by } = await ledgerConsents(server, anon, (x) => x.analytics);
      assert.equal(by.analytics.state, want, `${position} ${choice}: ${JSON.stringify(by.analytics)}`);
      // Focus is not dropped on <body>: it lands on the settings button.
      assert.equal((await focused(page)).name, 'Cookie settings', position);
    }
  }
});

test('Centred modal: focus starts inside and stays there (Tab, Shift+Tab, a click outside); Escape does not dismiss it', async () => {
  await useDesign(DESIGNS.center_modal);
  const { page } = await visit();
  await eventually(() => inBanner(page), { what: 'focus in the modal at once' });
  for (let i = 0; i < 14; i++) {
    await page.keyboard.press('Tab');
    assert.ok(await inBanner(page), `Tab ${i + 1} stays in the modal (on ${JSON.stringify(await focused(page))})`);
  }
  for (let i = 0; i < 14; i++) {
    await page.keyboard.press('Shift+Tab');
    assert.ok(await inBanner(page), `Shift+Tab ${i + 1} stays in the modal`);
  }
  // The page's own link is out of reach while the modal is up.
  await page.evaluate(() => document.querySelector('[data-yinyom-open]').focus());
  assert.ok(await inBanner(page), 'focus moved to the page comes back to the modal');
  // Escape is what it is on the standard banner's first layer: no choice, so nothing.
  await page.keyboard.press('Escape');
  assert.ok(await page.locator('#yinyom section.b').isVisible(), 'Escape does not dismiss a consent question');
  assert.ok(await inBanner(page));
  // The preferences dialog opens from it and Escape closes that, back to the modal.
  await tabTo(page, 'Manage preferences');
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Privacy preferences' });
  await dialog.waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await focused(page)).name, 'Manage preferences');
  await tabTo(page, 'Reject all');
  await page.keyboard.press('Enter');
  await page.locator('#yinyom section.b').waitFor({ state: 'hidden' });
  // Once chosen, the page is the visitor's again.
  await page.evaluate(() => document.querySelector('[data-yinyom-open]').focus());
  assert.equal(await page.evaluate(() => document.activeElement.hasAttribute('data-yinyom-open')), true);
});

test('A design the server refuses is never served: the banner keeps the last good one', async () => {
  await useDesign(DESIGNS.bottom_bar);
  const bad = structuredClone(DESIGNS.bottom_bar);
  bad.colors.reject_background = bad.colors.background; // Reject melts into the banner
  bad.colors.reject_text = '#166534';
  const r = await server.api('PUT', '/v1/tenant/banner-design', bad);
  assert.equal(r.status, 422);
  assert.equal(r.body.field, 'colors.reject_background');
  const { page } = await visit();
  assert.equal(await style(page, 'section.b button.rj', 'backgroundColor'), rgb(DESIGNS.bottom_bar.colors.reject_background));
});

test('Console: the design page previews a draft, shows a refusal at its field, saves; axe-clean', async () => {
  expectStatus(await server.api('POST', '/v1/staff', {
    email: 'designer@example.com', name: 'Designer', role: 'admin', password: 'correct horse battery staple',
  }), 201, 'POST /v1/staff');
  const before = expectStatus(await server.api('GET', '/v1/tenant/banner-design'), 200, 'GET design').version;
  // bypassCSP lets axe-core in; the console allows no script of its own.
  const context = await browser.newContext({ locale: 'en-GB', bypassCSP: true });
  cleanup.push(() => context.close());
  const page = await context.newPage();
  await page.goto(`${server.url}/admin/login?lang=en`);
  await page.getByLabel('Email').fill('designer@example.com');
  await page.getByLabel('Password').fill('correct horse battery staple');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  await page.getByRole('link', { name: 'Banner design' }).click();
  await page.getByRole('heading', { name: 'Banner design' }).waitFor();
  let v = await allViolations(page);
  assert.deepEqual(v, [], describeViolations(v));

  // A Reject that melts into the banner: refused, the reason shown at the field.
  await page.locator('#colors\\.reject_background').fill('#ffffff');
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/admin/banner') && r.request().method() === 'POST'),
    page.getByRole('button', { name: 'Save' }).click(),
  ]);
  assert.equal(res.status(), 422);
  await page.getByRole('alert').filter({ hasText: 'colors.reject_' }).waitFor();
  assert.equal(await page.locator('[aria-invalid="true"]').count(), 1);
  assert.equal(expectStatus(await server.api('GET', '/v1/tenant/banner-design'), 200, 'GET').version, before);

  // Preview a centred modal with a Thai title, then save it.
  await page.locator('#colors\\.reject_background').fill('#1d4ed8');
  await page.getByLabel('Position').selectOption('center_modal');
  await page.locator('#texts\\.th\\.title').fill('เลือกคุกกี้ของคุณ');
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.getByText('Preview only: not saved yet.').waitFor();
  await page.getByText('เลือกคุกกี้ของคุณ').first().waitFor();
  v = await allViolations(page);
  assert.deepEqual(v, [], describeViolations(v));
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('heading', { name: 'Banner design' }).waitFor();
  const saved = expectStatus(await server.api('GET', '/v1/tenant/banner-design'), 200, 'GET design');
  assert.equal(saved.version, before + 1);
  assert.equal(saved.design.position, 'center_modal');
  assert.equal(saved.design.texts.th.title, 'เลือกคุกกี้ของคุณ');
  // A visitor gets it.
  const { page: visitor } = await visit({ locale: 'th-TH' });
  assert.equal(await visitor.locator('#yinyom section.b h2').textContent(), 'เลือกคุกกี้ของคุณ');
  assert.equal(await visitor.locator('#yinyom section.b').getAttribute('aria-modal'), 'true');
});
