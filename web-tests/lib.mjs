// Shared harness for the browser tests: a real `yinyom serve` on a fresh data
// directory, a customer's test site on another origin, Debian's Chromium
// driven by playwright-core, and axe-core for accessibility checks.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SDK_FILE = path.join(REPO, 'crates/yinyom/web/sdk/yinyom.js');
export const OWNER_KEY = 'yy_test_owner';

/** A port nobody listens on right now (the OS picks it). */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Start `yinyom serve` (binary from $YINYOM_BIN, else target/debug/yinyom) on
 * a free loopback port with a fresh data directory; resolves once /readyz is
 * 200. `api(method, path, body)` calls it with the owner key and resolves to
 * `{status, headers, body}` (body parsed when JSON).
 */
export async function startServer({ env = {}, key = OWNER_KEY } = {}) {
  const bin = process.env.YINYOM_BIN || path.join(REPO, 'target/debug/yinyom');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'yinyom-web-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(bin, ['serve'], {
    env: {
      ...process.env,
      YINYOM_BOOTSTRAP_API_KEY: key,
      YINYOM_DATA_DIR: dir,
      YINYOM_LISTEN: `127.0.0.1:${port}`,
      YINYOM_PUBLIC_URL: url,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Keep the tail of the server's output to explain a failed start.
  let log = '';
  const keep = (d) => { log = (log + d).slice(-20000); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exited = null;
  // Never leave a server behind, even when the test process dies.
  const reap = () => child.kill('SIGKILL');
  process.on('exit', reap);
  child.on('exit', (code, sig) => { exited = { code, sig }; process.off('exit', reap); });
  child.on('error', (e) => { exited = { error: e.message }; });

  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await once(child, 'exit').catch(() => {});
      clearTimeout(t);
    }
    await fs.rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 30000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`yinyom serve (${bin}) exited early: ${JSON.stringify(exited)}\n${log}`);
    }
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`yinyom serve not ready within 30 s\n${log}`);
    }
    await sleep(100);
  }

  async function api(method, p, body) {
    const r = await fetch(url + p, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed = text;
    try { parsed = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    return { status: r.status, headers: r.headers, body: parsed };
  }

  return { url, key, dir, stop, api, log: () => log };
}

/** Fail with the request and the server's answer unless the status is `want`. */
export function expectStatus(res, want, what) {
  if (res.status !== want) {
    throw new Error(`${what}: expected HTTP ${want}, got ${res.status}: ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

// The cookie categories the banner shows (bodies of POST /v1/purposes).
export const PURPOSES = [
  {
    key: 'necessary',
    names: { th: 'คุกกี้ที่จำเป็น', en: 'Strictly necessary' },
    descriptions: { th: 'ทำให้เว็บไซต์ทำงานได้ เช่น ตะกร้าสินค้าและการเข้าสู่ระบบ', en: 'Makes the site work: basket, sign-in, security.' },
    basis: 'contract',
    channels: ['web'],
    retention_days: 365,
    banner: {},
  },
  {
    key: 'analytics',
    names: { th: 'การวิเคราะห์', en: 'Analytics' },
    descriptions: { th: 'ช่วยให้เราเข้าใจการใช้งานเว็บไซต์', en: 'Helps us understand how the site is used' },
    basis: 'consent',
    channels: ['web'],
    retention_days: 365,
    banner: { consent_mode: ['analytics_storage'], sale_or_sharing: false, cookies: ['_ga', '_ga_*'] },
  },
  {
    key: 'ads',
    names: { th: 'การโฆษณา', en: 'Advertising' },
    descriptions: { th: 'แสดงโฆษณาที่ตรงกับความสนใจของคุณ และแบ่งปันข้อมูลกับพันธมิตรโฆษณา', en: 'Shows ads that match your interests and shares data with ad partners' },
    basis: 'consent',
    channels: ['web'],
    retention_days: 365,
    banner: {
      consent_mode: ['ad_storage', 'ad_user_data', 'ad_personalization'],
      sale_or_sharing: true,
      cookies: ['_fbp'],
    },
  },
];

// The cookie notice (body of POST /v1/notices); `material` is set per call.
export const NOTICE = {
  key: 'cookies',
  texts: {
    th: { title: 'คุกกี้', body: 'เราใช้คุกกี้เพื่อให้เว็บไซต์ทำงาน วิเคราะห์การใช้งาน และแสดงโฆษณา เลือกได้ว่าจะอนุญาตคุกกี้ประเภทใด' },
    en: { title: 'Cookies', body: 'We use cookies to run the site, understand how it is used and show ads. Choose which ones you allow.' },
  },
  purposes: ['analytics', 'ads'],
  material: false,
};

/** Publish a notice version (`material: true` requires renewal). */
export async function publishNotice(server, { material = false, notice = NOTICE } = {}) {
  return expectStatus(await server.api('POST', '/v1/notices', { ...notice, material }), 201,
    `POST /v1/notices ${notice.key} material=${material}`);
}

/**
 * Create the purposes, publish the notice and point the tenant's banner at
 * it. Resolves to `{siteKey, notice, tenant}`.
 */
export async function setupBanner(server, { purposes = PURPOSES, notice = NOTICE } = {}) {
  for (const p of purposes) {
    expectStatus(await server.api('POST', '/v1/purposes', p), 201, `POST /v1/purposes ${p.key}`);
  }
  const published = await publishNotice(server, { notice, material: notice.material });
  const tenant = expectStatus(await server.api('PATCH', '/v1/tenant', { banner: { notice: notice.key } }), 200,
    'PATCH /v1/tenant banner');
  const siteKey = tenant && tenant.banner && tenant.banner.site_key;
  if (typeof siteKey !== 'string' || !siteKey.startsWith('site_')) {
    throw new Error(`PATCH /v1/tenant: no banner.site_key in ${JSON.stringify(tenant)}`);
  }
  return { siteKey, notice: published, tenant };
}

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
  });
}

/**
 * A customer's site on its own loopback port (another origin than the
 * server, so the banner's calls are cross-origin). `pages` is the HTML of
 * every path, or an object {path: content} (`.js` paths are served as
 * JavaScript); resolves to `{url, stop()}`.
 */
export async function startSite(pages) {
  const srv = http.createServer((req, res) => {
    const p = new URL(req.url, 'http://x').pathname;
    const html = typeof pages === 'string' ? pages : pages[p];
    if (html === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found');
    }
    const type = p.endsWith('.js') ? 'application/javascript' : 'text/html; charset=utf-8';
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(html);
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const url = `http://127.0.0.1:${srv.address().port}/`;
  return {
    url,
    stop: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }),
  };
}

/**
 * The test page: a gtag stub before the SDK tag, a script that may run only
 * with analytics consent, and `_ga`, `_ga_TEST` cookies as Google Analytics would set.
 */
export function testPage({ server, siteKey, lang, title = 'Test shop', extra = '' }) {
  const langAttr = lang ? ` data-lang="${lang}"` : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${title}</title>
<script>
window.dataLayer = window.dataLayer || [];
function gtag(){dataLayer.push(arguments);}
document.cookie = '_ga=x; path=/';
document.cookie = '_ga_TEST=y; path=/';
</script>
<script src="${server.url}/sdk/yinyom.js" data-site-key="${siteKey}"${langAttr} async></script>
</head>
<body>
<main>
<h1>${title}</h1>
<p>Products and things.</p>
<p><a href="#" data-yinyom-open>Cookie preferences</a></p>
</main>
<script type="text/plain" data-yinyom-purpose="analytics">window.analyticsRan=(window.analyticsRan||0)+1</script>
${extra}
</body>
</html>`;
}

/**
 * The serious and critical axe-core violations on the page (or within
 * `context`, an axe context such as '#yinyom').
 */
export async function checkA11y(page, context) {
  const content = await fs.readFile(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.addScriptTag({ content });
  const result = await page.evaluate(
    (ctx) => window.axe.run(ctx || document, { resultTypes: ['violations'] }),
    context || null,
  );
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** Violations as a readable message for an assertion. */
export function describeViolations(violations) {
  return violations
    .map((v) => `${v.id} (${v.impact}): ${v.help}\n  ${v.nodes.map((n) => JSON.stringify(n.target)).join('\n  ')}`)
    .join('\n');
}

/** The focused element, looking into shadow roots: {tag, name, role}. */
export function focused(page) {
  return page.evaluate(() => {
    let a = document.activeElement;
    while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
    if (!a) return null;
    let name = a.getAttribute('aria-label') || '';
    if (!name && a.id) {
      const root = a.getRootNode();
      const label = root.querySelector && root.querySelector(`label[for="${a.id}"]`);
      if (label) name = label.textContent;
    }
    if (!name) name = a.textContent;
    return { tag: a.tagName.toLowerCase(), name: name.trim(), role: a.getAttribute('role') };
  });
}

/** Press Tab until the focused element's accessible name is `name`. */
export async function tabTo(page, name, { max = 40, shift = false } = {}) {
  const seen = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(shift ? 'Shift+Tab' : 'Tab');
    const f = await focused(page);
    seen.push(f && f.name);
    if (f && f.name === name) return f;
  }
  throw new Error(`Tab never reached ${JSON.stringify(name)}; focus went through ${JSON.stringify(seen)}`);
}

/** The `gtag('consent', …)` calls in the page's dataLayer, in order. */
export function consentCalls(page) {
  return page.evaluate(() => (window.dataLayer || [])
    .map((e) => Array.from(e))
    .filter((a) => a[0] === 'consent')
    .map((a) => ({ kind: a[1], signals: a[2] })));
}

/** The visitor's anonymous id, as the SDK keeps it. */
export function anonymousId(page) {
  return page.evaluate(() => window.yinyom && window.yinyom.anonymousId());
}

/**
 * Poll `fn` until it returns a truthy value, or throw after `timeout` ms;
 * `what` (a string, or a function of the last value) explains the wait.
 */
export async function eventually(fn, { timeout = 5000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { last = e; }
    if (Date.now() > deadline) {
      const why = typeof what === 'function' ? what(last) : what;
      throw new Error(`timed out waiting for ${why}; last: ${last instanceof Error ? last.stack : JSON.stringify(last)}`);
    }
    await sleep(interval);
  }
}

/**
 * The subject's consents and ledger history (`GET /v1/subjects/{id}/consents
 * ?history=true`) once `want(by)` holds, `by` mapping purpose → its current
 * (channel-less) consent; the banner records asynchronously, so this waits.
 * Resolves to `{by, history, body}`.
 */
export async function ledgerConsents(server, anon, want = () => true, opts = {}) {
  let res;
  const byPurpose = (body) => Object.fromEntries(
    (body.consents || []).filter((c) => c.channel == null).map((c) => [c.purpose, c]));
  await eventually(async () => {
    res = await server.api('GET', `/v1/subjects/${encodeURIComponent(anon)}/consents?history=true`);
    if (res.status !== 200) return false;
    // The server reads the history and the current states one after the
    // other: wait for an answer where the history has every state's entry.
    const h = res.body.history || [];
    return (res.body.consents || []).every((c) => h.some((e) => e.seq === c.seq)) && want(byPurpose(res.body), res.body);
  }, { what: () => `the ledger of ${anon} (last answer: HTTP ${res && res.status} ${JSON.stringify(res && res.body)})`, ...opts });
  return { body: res.body, by: byPurpose(res.body), history: res.body.history || [] };
}
