// The IAB TCF v2.2 CMP and GPP in Chromium, against the IAB's own decoders:
// a tenant turns TCF on with a vendor list served from loopback (made by
// tcf-fixture.mjs, never the network); the banner fetches tcf.js only then,
// and every purpose, vendor and legitimate-interest bit of the TC string it
// writes is checked with @iabtechlabtcf/core, and its GPP string with
// @iabgpp/cmpapi, against what the visitor chose, the ledger, and the
// server's own decoding on GET /v1/subjects/{id}.
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { after, before, test } from 'node:test';

import { GppModel } from '@iabgpp/cmpapi';
import { TCString } from '@iabtechlabtcf/core';

import { anonymousId, checkA11y, describeViolations, eventually, expectStatus, launchBrowser, ledgerConsents, setupBanner, startServer, startSite, testPage } from './lib.mjs';
import { makeGvl } from './tcf-fixture.mjs';

const GVL = makeGvl({ version: 42 });
const VENDORS = Object.keys(GVL.vendors).map(Number);
const CONSENT_VENDORS = VENDORS.filter((v) => GVL.vendors[v].purposes.length > 0);
const LI_VENDORS = VENDORS.filter((v) => GVL.vendors[v].legIntPurposes.length > 0 || (GVL.vendors[v].purposes.length === 0 && GVL.vendors[v].specialPurposes.length > 0));
const LI_PURPOSES = [7, 8]; // what the fixture's vendors claim
const MAPPING = { 1: 'analytics', 3: 'ads', 4: 'ads' };

let browser, server, banner, site, gvlServer, gvlUrl, gvlHits = 0, gvlNow = GVL;
const cleanup = [];

before(async () => {
  browser = await launchBrowser();
  server = await startServer();
  banner = await setupBanner(server);
  gvlServer = http.createServer((req, res) => {
    gvlHits++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(gvlNow));
  });
  gvlServer.listen(0, '127.0.0.1');
  await once(gvlServer, 'listening');
  gvlUrl = `http://127.0.0.1:${gvlServer.address().port}/vendor-list.json`;
  site = await startSite({
    '/': testPage({ server, siteKey: banner.siteKey }),
    // A frame that finds the CMP through the locator, as a vendor's ad frame would.
    '/frame.html': `<!doctype html><title>ad</title><script>
      window.ask = (kind, command, parameter) => new Promise((resolve) => {
        let f = window;
        while (f && !(() => { try { return f.frames[kind + 'Locator']; } catch (e) { return null; } })()) f = f === window.top ? null : f.parent;
        if (!f) return resolve('no locator');
        const callId = Math.random().toString(36).slice(2);
        const on = (e) => {
          const d = typeof e.data === 'string' ? JSON.parse(e.data) : e.data;
          const r = d && d[kind + 'Return'];
          if (r && r.callId === callId) { removeEventListener('message', on); resolve(r); }
        };
        addEventListener('message', on);
        const call = { command, parameter, version: kind === '__tcfapi' ? 2 : '1.1', callId };
        f.postMessage(kind === '__tcfapi' ? JSON.stringify({ __tcfapiCall: call }) : { __gppCall: call }, '*');
      });
    </script>`,
  });
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
  await site?.stop();
  await browser?.close();
  await server?.stop();
  gvlServer?.close();
});

async function visit(url = site.url, { gpc = false, locale = 'en-US' } = {}) {
  const context = await browser.newContext({ locale, extraHTTPHeaders: gpc ? { 'Sec-GPC': '1' } : {} });
  cleanup.push(() => context.close());
  if (gpc) await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true }));
  const page = await context.newPage();
  const errors = [];
  const scripts = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('request', (r) => scripts.push(r.url()));
  await page.goto(url);
  return { context, page, errors, scripts };
}

const layer1 = (page) => page.getByRole('region', { name: /partners value your privacy/ });
const cookieOf = async (context) => (await context.cookies()).find((c) => c.name === 'euconsent-v2')?.value;
const ids = (vector) => { const out = []; vector.forEach((on, id) => { if (on) out.push(id); }); return out.sort((a, b) => a - b); };

/** Decode with the IAB's library and compare every bit with `want`. */
function checkTc(str, want) {
  const tc = TCString.decode(str);
  assert.equal(tc.cmpId, 300);
  assert.equal(tc.cmpVersion, 4);
  assert.equal(tc.vendorListVersion, want.vlv || 42);
  assert.equal(tc.policyVersion, 5);
  assert.equal(tc.isServiceSpecific, true);
  assert.equal(tc.publisherCountryCode, 'TH');
  assert.equal(tc.consentLanguage.toUpperCase(), want.lang || 'EN');
  assert.deepEqual(ids(tc.purposeConsents), want.pc, 'purpose consents');
  assert.deepEqual(ids(tc.purposeLegitimateInterests), want.pli, 'purpose LI');
  assert.deepEqual(ids(tc.specialFeatureOptins), want.sf, 'special features');
  assert.deepEqual(ids(tc.vendorConsents), want.vc, 'vendor consents');
  assert.deepEqual(ids(tc.vendorLegitimateInterests), want.vli, 'vendor LI');
  assert.deepEqual(ids(tc.vendorsDisclosed), VENDORS, 'every vendor was disclosed');
  return tc;
}

/** The GPP string, decoded by @iabgpp/cmpapi. */
function checkGpp(gpp, tcString, saleOptOut) {
  const m = new GppModel(gpp);
  assert.equal(m.hasSection('tcfeuv2'), true);
  assert.equal(m.hasSection('usnat'), true);
  assert.equal(m.encodeSection('tcfeuv2').split('.')[0], tcString.split('.')[0], 'the tcfeuv2 section is the TC string');
  const u = m.getSection('usnat');
  assert.equal(u.SaleOptOut, saleOptOut);
  assert.equal(u.SharingOptOut, saleOptOut);
  assert.equal(u.TargetedAdvertisingOptOut, saleOptOut);
  assert.equal(u.SaleOptOutNotice, 1);
  return m;
}

async function serverState(anon, want) {
  const { by, history } = await ledgerConsents(server, anon, (b) => Object.keys(want).every((k) => b[k] && b[k].state === want[k]));
  const subject = expectStatus(await server.api('GET', `/v1/subjects/${anon}`), 200, 'GET subject');
  return { by, history, subject };
}

test('without TCF the banner loads no CMP script and defines no __tcfapi', async () => {
  const { page, scripts, errors } = await visit();
  await page.getByRole('region', { name: 'Cookies' }).waitFor();
  assert.equal(await page.evaluate(() => typeof window.__tcfapi), 'undefined');
  assert.equal(scripts.some((u) => u.includes('/sdk/tcf.js')), false);
  assert.deepEqual(errors, []);

  // Now the tenant turns TCF and GPP on (the contract of the issue, plus a mapping).
  const t = expectStatus(await server.api('PATCH', '/v1/tenant', {
    banner: {
      notice: 'cookies',
      tcf: { cmp_id: 300, cmp_version: 4, vendor_list_url: gvlUrl, publisher_cc: 'TH', purposes: MAPPING },
      gpp: { sections: ['tcfeuv2', 'usnat'] },
    },
  }), 200, 'PATCH tcf');
  assert.equal(t.banner.tcf.cmp_id, 300);
  assert.ok(gvlHits >= 1, 'the server fetched the vendor list');
});

test('Accept all: layer 1 lists purposes, stacks, special features and the vendor count; every bit is set as the IAB library reads it', async () => {
  const { context, page, errors, scripts } = await visit();
  await layer1(page).waitFor();
  assert.ok(scripts.some((u) => u.endsWith('/sdk/tcf.js')), 'the CMP script was fetched');
  assert.ok(scripts.some((u) => u.includes('/sdk/v1/tcf/vendor-list')), 'the vendor list came from our origin');
  assert.equal(scripts.some((u) => u.startsWith(gvlUrl)), false, 'never from the configured URL');
  const l1 = await layer1(page).innerText();
  assert.match(l1, /12 partners/);
  assert.match(l1, /Advertising based on limited data and advertising measurement/, 'a stack');
  assert.match(l1, /Create profiles for personalised advertising/, 'a purpose outside the stacks');
  assert.match(l1, /Use precise geolocation data/, 'special features');
  // "Reject all" is a button like "Accept all", side by side.
  const acc = await page.getByRole('button', { name: 'Accept all' }).boundingBox();
  const rej = await page.getByRole('button', { name: 'Reject all' }).boundingBox();
  assert.equal(Math.round(acc.height), Math.round(rej.height));
  assert.equal(Math.round(acc.width), Math.round(rej.width));

  const v1 = await checkA11y(page);
  assert.deepEqual(v1, [], `layer 1: ${describeViolations(v1)}`);

  const ping = await page.evaluate(() => new Promise((r) => window.__tcfapi('ping', 2, r)));
  assert.equal(ping.cmpId, 300);
  assert.equal(ping.cmpLoaded, true);
  assert.equal(ping.apiVersion, '2.2');
  assert.equal(ping.gvlVersion, 42);
  assert.equal(ping.displayStatus, 'visible');
  // A listener hears the choice.
  await page.evaluate(() => {
    window.tcEvents = [];
    window.__tcfapi('addEventListener', 2, (d, ok) => window.tcEvents.push([d.eventStatus, ok, d.tcString, d.listenerId]));
  });

  await page.getByRole('button', { name: 'Accept all' }).click();
  await eventually(async () => (await cookieOf(context)) !== undefined, { what: 'the euconsent-v2 cookie' });
  const str = await cookieOf(context);
  checkTc(str, { pc: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], pli: LI_PURPOSES, sf: [1, 2], vc: CONSENT_VENDORS, vli: LI_VENDORS });
  const events = await page.evaluate(() => window.tcEvents);
  assert.equal(events[0][0], 'cmpuishown');
  assert.deepEqual(events[events.length - 1].slice(0, 3), ['useractioncomplete', true, str]);
  const data = await page.evaluate(() => new Promise((r) => window.__tcfapi('getTCData', 2, (d, ok) => r([d, ok]))));
  assert.equal(data[1], true);
  assert.equal(data[0].tcString, str);
  assert.equal(data[0].purpose.consents[3], true);
  assert.equal(data[0].vendor.consents[1], true);
  // removeEventListener answers true for a live listener, false after.
  const removed = await page.evaluate((id) => Promise.all([1, 2].map(() => new Promise((r) => window.__tcfapi('removeEventListener', 2, r, id)))), events[0][3]);
  assert.deepEqual(removed, [true, false]);

  const gpp = await page.evaluate(() => new Promise((r) => window.__gpp('ping', (d) => r(d))));
  assert.equal(gpp.cmpStatus, 'loaded');
  assert.deepEqual(gpp.supportedAPIs, ['2:tcfeuv2', '7:usnat']);
  checkGpp(gpp.gppString, str, 2);
  assert.equal(await page.evaluate(() => new Promise((r) => window.__gpp('hasSection', r, 'usnat'))), true);
  const usnat = await page.evaluate(() => new Promise((r) => window.__gpp('getSection', r, 'usnat')));
  assert.equal(usnat.SaleOptOut, 2);

  const anon = await anonymousId(page);
  const { history, subject } = await serverState(anon, { analytics: 'granted', ads: 'granted' });
  const e = history[history.length - 1].evidence;
  assert.equal(e.tc_string, str, 'the TC string is the evidence');
  assert.equal(e.gpp_string, gpp.gppString);
  assert.equal(subject.tcf.tc_string, str);
  assert.deepEqual(subject.tcf.decoded.core.purposes_consent, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.deepEqual(subject.tcf.decoded.core.vendor_legitimate_interests, LI_VENDORS);
  assert.deepEqual(subject.tcf.purposes, { analytics: true, ads: true });
  assert.deepEqual(errors, []);
});

test('Layer 2: per purpose and per vendor consent and objection, retention and data categories; the string, GPP and the ledger follow', async () => {
  const { context, page, errors } = await visit();
  await layer1(page).waitFor();
  // The partner count on layer 1 leads to the vendors of layer 2.
  await page.getByRole('link', { name: 'Partners (12)' }).click();
  const dialog = page.getByRole('dialog', { name: 'Privacy settings' });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.querySelector('yinyom-tcf').shadowRoot.activeElement.id), 'yt-vs');
  const all = await dialog.innerText();
  assert.match(all, /Special purposes\s+Ensure security, prevent and detect fraud, and fix errors/);
  assert.match(all, /Features\s+Match and combine data from other data sources/);
  // Vendor 3: retention and data categories from the vendor list.
  const v3 = dialog.locator('[data-vendor="3"]');
  await v3.locator('summary').click();
  assert.match(await v3.innerText(), /Retention: 90 days/);
  assert.match(await v3.innerText(), /Data collected: IP addresses, Device characteristics, Browsing and interaction data/);
  assert.match(await v3.innerText(), /Legitimate interest: Measure advertising performance, Measure content performance/);

  const v2 = await checkA11y(page);
  assert.deepEqual(v2, [], `layer 2: ${describeViolations(v2)}`);

  const box = (k) => dialog.locator(`input[data-k="${k}"]`);
  await box('pc1').check();
  await box('pc3').check();
  await box('pli7').check(); // object to purpose 7's legitimate interest
  await box('sf2').check();
  await box('vc2').check();
  await box('vc5').check();
  await box('vli3').check(); // object to vendor 3's legitimate interest
  await page.evaluate(() => {
    window.gppEvents = [];
    window.__gpp('addEventListener', (e, ok) => window.gppEvents.push([e.eventName, ok, e.pingData && e.pingData.gppString]));
  });
  await dialog.getByRole('button', { name: 'Save choices' }).click();
  await eventually(async () => (await cookieOf(context)) !== undefined, { what: 'the euconsent-v2 cookie' });
  const str = await cookieOf(context);
  checkTc(str, { pc: [1, 3], pli: [8], sf: [2], vc: [2, 5], vli: LI_VENDORS.filter((v) => v !== 3) });
  const gpp = await page.evaluate(() => new Promise((r) => window.__gpp('ping', (d) => r(d))));
  checkGpp(gpp.gppString, str, 1); // ads (sale/sharing) was not granted: opted out
  const gppEvents = await page.evaluate(() => window.gppEvents);
  assert.deepEqual(gppEvents[0].slice(0, 2), ['listenerRegistered', true]);
  assert.ok(gppEvents.some((e) => e[0] === 'sectionChange' && e[2] === gpp.gppString), JSON.stringify(gppEvents));

  // Purpose 4 (mapped to ads with 3) had no consent, so ads is denied.
  const anon = await anonymousId(page);
  const { subject } = await serverState(anon, { analytics: 'granted', ads: 'denied' });
  assert.deepEqual(subject.tcf.purposes, { analytics: true, ads: false });
  assert.deepEqual(subject.tcf.decoded.core.vendor_consents, [2, 5]);

  // The settings button reopens layer 2 with the choice as made.
  await page.getByRole('button', { name: 'Cookie settings', exact: true }).click();
  await dialog.waitFor();
  assert.equal(await box('pc3').isChecked(), true);
  assert.equal(await box('pc4').isChecked(), false);
  assert.equal(await box('vli3').isChecked(), true, 'the objection is remembered');
  assert.deepEqual(errors, []);
});

test('Reject all: no consent, legitimate interests objected to; a frame asks through the locators', async () => {
  const { context, page, errors } = await visit();
  await layer1(page).waitFor();
  await page.getByRole('button', { name: 'Reject all' }).click();
  await eventually(async () => (await cookieOf(context)) !== undefined, { what: 'the euconsent-v2 cookie' });
  const str = await cookieOf(context);
  checkTc(str, { pc: [], pli: [], sf: [], vc: [], vli: [] });
  const anon = await anonymousId(page);
  await serverState(anon, { analytics: 'denied', ads: 'denied' });

  // The same answers across frames, through __tcfapiLocator / __gppLocator.
  await page.evaluate(() => {
    const f = document.createElement('iframe');
    f.src = '/frame.html';
    f.id = 'ad';
    document.body.append(f);
    return new Promise((r) => f.addEventListener('load', r));
  });
  const frame = page.frameLocator('#ad');
  const handle = await page.$('#ad');
  const ad = await handle.contentFrame();
  const ping = await ad.evaluate(() => window.ask('__tcfapi', 'ping'));
  assert.equal(ping.success, true);
  assert.equal(ping.returnValue.cmpId, 300);
  const tcData = await ad.evaluate(() => window.ask('__tcfapi', 'getTCData'));
  assert.equal(tcData.returnValue.tcString, str);
  const gpp = await ad.evaluate(() => window.ask('__gpp', 'getSection', 'usnat'));
  assert.equal(gpp.returnValue.SaleOptOut, 1);
  assert.ok(frame);

  // A reload keeps the choice: no layer 1, same string.
  await page.reload();
  await page.waitForFunction(() => typeof window.__tcfapi === 'function' && !window.__tcfapi.a);
  const again = await page.evaluate(() => new Promise((r) => window.__tcfapi('getTCData', 2, (d) => r(d))));
  assert.equal(again.tcString, str);
  assert.equal(again.eventStatus, 'tcloaded');
  assert.equal(await layer1(page).isVisible(), false);

  // A new version of the list with a vendor the visitor was never shown:
  // the server fetches it when the settings are saved, and the banner asks again.
  gvlNow = makeGvl({ version: 43, ids: [...VENDORS, 13] });
  expectStatus(await server.api('PATCH', '/v1/tenant', {
    banner: {
      notice: 'cookies',
      tcf: { cmp_id: 300, cmp_version: 4, vendor_list_url: gvlUrl, publisher_cc: 'TH', purposes: MAPPING },
      gpp: { sections: ['tcfeuv2', 'usnat'] },
    },
  }), 200, 'PATCH tcf again');
  // Once the browser's copies (config 1 minute, list 1 hour) have expired.
  await (await context.newCDPSession(page)).send('Network.clearBrowserCache');
  await page.reload();
  await layer1(page).waitFor();
  assert.match(await layer1(page).innerText(), /13 partners/);
  assert.deepEqual(errors, []);
});

test('Global Privacy Control: Accept all grants no TCF purpose that stands for sale or sharing; Thai texts', async () => {
  // The fixture's vendors again, as a newer version (versions only go up).
  gvlNow = { ...GVL, vendorListVersion: 44 };
  expectStatus(await server.api('PATCH', '/v1/tenant', {
    banner: { notice: 'cookies', tcf: { cmp_id: 300, cmp_version: 4, vendor_list_url: gvlUrl, publisher_cc: 'TH', purposes: MAPPING } },
  }), 200, 'PATCH tcf');
  const { context, page, errors } = await visit(site.url, { gpc: true, locale: 'th-TH' });
  const l1 = page.getByRole('region', { name: /ให้ความสำคัญกับความเป็นส่วนตัว/ });
  await l1.waitFor();
  assert.match(await l1.innerText(), /Global Privacy Control/);
  await page.getByRole('button', { name: 'ยอมรับทั้งหมด' }).click();
  await eventually(async () => (await cookieOf(context)) !== undefined, { what: 'the euconsent-v2 cookie' });
  const str = await cookieOf(context);
  // Purposes 3 and 4 stand for ads (sale or sharing): no consent.
  checkTc(str, { pc: [1, 2, 5, 6, 7, 8, 9, 10, 11], pli: LI_PURPOSES, sf: [1, 2], vc: CONSENT_VENDORS, vli: LI_VENDORS, lang: 'TH', vlv: 44 });
  const anon = await anonymousId(page);
  await serverState(anon, { analytics: 'granted', ads: 'denied' });
  assert.deepEqual(errors, []);
});
