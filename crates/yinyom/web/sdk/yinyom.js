/*!
 * Yinyom consent banner SDK. Apache-2.0.
 *
 *   <script src="https://YINYOM/sdk/yinyom.js" data-site-key="site_…" async></script>
 *
 * Optional attributes: data-lang="th|en" (force the UI language),
 * data-floating="false" (no floating "cookie settings" button; then give the
 * page its own element with data-yinyom-open so people can change their mind).
 * Put it before the Google tag so the Consent Mode default comes first.
 *
 * Plain ES2018, no dependencies, no build step. Texts from the server are
 * only ever inserted as text nodes, never parsed as HTML.
 */
(function () {
  'use strict';
  var W = window, D = document, N = navigator;
  if (W.yinyom && W.yinyom.version) return; // loaded twice: the first one rules

  var VERSION = '1';
  var CM = ['ad_storage', 'analytics_storage', 'ad_user_data', 'ad_personalization'];
  var K_CONSENT = 'yinyom.consent', K_ANON = 'yinyom.anon', K_QUEUE = 'yinyom.queue',
    K_GPC = 'yinyom.gpc', K_LANG = 'yinyom.lang';

  // ---- storage (may throw: disabled storage, sandboxed frames) ----------
  function lsGet(k) { try { return localStorage.getItem(k); } catch (e) { return null; } }
  function lsSet(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* memory only */ } }
  function lsJSON(k) { try { return JSON.parse(lsGet(k)); } catch (e) { return null; } }
  function cookie(n) {
    var m = D.cookie.match(new RegExp('(?:^|; ?)' + n + '=([^;]*)'));
    if (!m) return null;
    try { return decodeURIComponent(m[1]); } catch (e) { return m[1]; }
  }
  function own(o, k) { return !!o && Object.prototype.hasOwnProperty.call(o, k); }

  // ---- Google Consent Mode v2: the default must be set synchronously,
  // before any Google tag reads it, so this runs first.
  function gtagFn() {
    if (typeof W.gtag === 'function') return W.gtag;
    if (W.dataLayer && typeof W.dataLayer.push === 'function') {
      return function () { W.dataLayer.push(arguments); };
    }
    return null;
  }
  function denied() {
    var s = {};
    CM.forEach(function (k) { s[k] = 'denied'; });
    return s;
  }
  var lastCM = '';
  function updateCM(signals) {
    var j = JSON.stringify(signals), g = gtagFn();
    if (j === lastCM || !g) return; // same as already pushed: no noise
    lastCM = j;
    try { g('consent', 'update', signals); } catch (e) { /* the page's gtag broke */ }
  }

  var stored = lsJSON(K_CONSENT);
  if (!stored || typeof stored !== 'object' || !stored.choices || typeof stored.choices !== 'object') stored = null;
  if (gtagFn()) {
    var def = denied();
    def.wait_for_update = 500;
    try { gtagFn()('consent', 'default', def); } catch (e) { /* ignore */ }
    // A choice made earlier applies at once; the config check below revokes
    // it if the notice changed materially since.
    if (stored && stored.cm) updateCM(stored.cm);
  }

  // ---- where we come from -----------------------------------------------
  var script = D.currentScript ||
    D.querySelector('script[data-site-key][src*="/sdk/yinyom.js"]') ||
    D.querySelector('script[src*="/sdk/yinyom.js"]');
  if (!script) return;
  var src = script.src, at = src.indexOf('/sdk/yinyom.js');
  var base = at > 0 ? src.slice(0, at) : new URL(src).origin; // keeps a proxy's path prefix
  var siteKey = script.getAttribute('data-site-key');
  var noFloat = script.getAttribute('data-floating') === 'false';

  // ---- anonymous id: Segment's if present, so the collector links the two
  function uuid() {
    var c = W.crypto;
    if (c.randomUUID) return c.randomUUID(); // secure contexts only
    var b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var x = Array.from(b, function (v) { return (v + 256).toString(16).slice(1); }).join('');
    return [x.slice(0, 8), x.slice(8, 12), x.slice(12, 16), x.slice(16, 20), x.slice(20)].join('-');
  }
  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i; // what the server takes
  function anonId() {
    var a = (lsGet('ajs_anonymous_id') || cookie('ajs_anonymous_id') || '').replace(/^"+|"+$/g, '');
    if (UUID.test(a)) return a;
    a = lsGet(K_ANON) || cookie('yinyom_anon');
    if (!UUID.test(a)) a = uuid();
    lsSet(K_ANON, a);
    D.cookie = 'yinyom_anon=' + encodeURIComponent(a) + ';max-age=31536000;path=/;SameSite=Lax' +
      (location.protocol === 'https:' ? ';Secure' : '');
    return a;
  }
  var anon = anonId();

  // ---- recording: every choice goes through a queue kept in localStorage,
  // so a failed POST is retried on the next load instead of being lost.
  var memQ = [], flushing = false;
  function queue(fn) {
    var q = lsJSON(K_QUEUE);
    if (!Array.isArray(q)) q = memQ;
    if (fn) {
      q = fn(q);
      memQ = q;
      lsSet(K_QUEUE, JSON.stringify(q));
    }
    return q;
  }
  function flush() {
    var item = queue()[0];
    if (flushing || !item) return;
    flushing = true;
    var done = function () {
      queue(function (q) { return q.filter(function (i) { return i.id !== item.id; }); });
      flushing = false;
      flush();
    };
    fetch(base + '/sdk/v1/consents', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(item.body),
      credentials: 'omit',
      keepalive: true // survives the page being left right after the click
    }).then(function (r) {
      if (r.status >= 500 || r.status === 408 || r.status === 429) {
        flushing = false; // stays queued for the next load
        return;
      }
      // Any other refusal will never succeed: say so and drop it.
      if (!r.ok) console.error('Yinyom: consent not recorded, HTTP ' + r.status);
      return r.text().then(done, done); // read to the end, so the request completes
    }, function () {
      flushing = false; // offline: stays queued
    });
  }
  W.addEventListener('online', flush);
  flush();

  // ---- state once the config is in --------------------------------------
  var cfg = null, eff = null, lang = 'en', listeners = [], wantOpen = false, tcf = null;
  var host, shadow, ui, bannerEl, dialogEl, floatEl, draft = {}, returnFocus = null;

  function optional() { return cfg.purposes.filter(function (p) { return !p.required; }); }
  function gpcOn() { return N.globalPrivacyControl === true || cfg.gpc === true; }
  function effective(choices) {
    var e = {};
    cfg.purposes.forEach(function (p) { e[p.key] = !!p.required || (own(choices, p.key) && choices[p.key] === true); });
    return e;
  }
  // A signal is granted iff every banner purpose that lists it is granted.
  function signals(e) {
    var s = denied(), all = {};
    cfg.purposes.forEach(function (p) {
      (p.consent_mode || []).forEach(function (k) { all[k] = all[k] !== false && e[p.key]; });
    });
    Object.keys(all).forEach(function (k) { s[k] = all[k] ? 'granted' : 'denied'; });
    return s;
  }
  function stale() {
    var n = cfg.notice;
    if (!stored) return true;
    if (stored.k && stored.k !== n.key) return true;
    if (!(stored.v >= (n.renewal_version || 0))) return true; // made before a material change
    // A purpose added since was never asked about.
    return optional().some(function (p) { return typeof stored.choices[p.key] !== 'boolean'; });
  }
  function pickLang() {
    var ok = function (l) { return l === 'th' || l === 'en'; };
    var a = (script.getAttribute('data-lang') || '').toLowerCase();
    if (ok(a)) return a;
    a = (stored && stored.lang) || lsGet(K_LANG);
    if (ok(a)) return a;
    a = (N.language || '').toLowerCase();
    if (a.indexOf('th') === 0) return 'th';
    if (a.indexOf('en') === 0) return 'en';
    a = cfg.tenant && cfg.tenant.default_lang;
    return ok(a) ? a : 'en';
  }
  function tx(map) {
    if (!map) return '';
    return map[lang] || map[lang === 'th' ? 'en' : 'th'] || Object.keys(map).map(function (k) { return map[k]; })[0] || '';
  }
  function locale() {
    var b = N.language || '';
    // The language the person read, as a tag the server takes.
    return b.toLowerCase().indexOf(lang) === 0 && /^[A-Za-z0-9-]{1,35}$/.test(b) ? b : lang;
  }
  function save() { lsSet(K_CONSENT, JSON.stringify(stored)); }

  function record(actions, ui, extra) {
    if (!actions.length) return;
    var body = {
      site_key: siteKey,
      anonymous_id: anon,
      notice: { key: cfg.notice.key, version: cfg.notice.version },
      actions: actions,
      evidence: {
        // No query or fragment: they may carry personal data.
        page_url: /^https?:/.test(location.protocol) ? location.href.split(/[?#]/)[0].slice(0, 2000) : undefined,
        ui_element: ui,
        locale: locale(),
        gpc: gpcOn()
      }
    };
    Object.assign(body.evidence, extra); // the TCF script's tc_string, gpp_string
    queue(function (q) { return q.concat({ id: uuid(), body: body }).slice(-50); });
    flush();
  }
  function actionsFor(choices, keys) {
    var prev = (stored && stored.choices) || {};
    return keys.map(function (k) {
      // Switching off what was granted is a withdrawal, not a refusal.
      return { purpose: k, action: choices[k] ? 'grant' : prev[k] === true ? 'withdraw' : 'deny' };
    });
  }

  // GPC is an opt-out of sale/sharing: record it once per notice version,
  // without a click, unless the person already chose under GPC.
  function autoGpc(isStale) {
    if (!gpcOn()) return;
    var mark = cfg.notice.key + ':' + cfg.notice.version;
    var sale = optional().filter(function (p) { return p.sale_or_sharing; }).map(function (p) { return p.key; });
    if (!sale.length || lsGet(K_GPC) === mark || (stored && stored.g && !isStale)) return;
    record(actionsFor({}, sale), 'gpc');
    if (stored) {
      sale.forEach(function (k) { stored.choices[k] = false; });
      stored.g = 1;
      stored.cm = signals(effective(stored.choices));
      save();
    }
    lsSet(K_GPC, mark);
  }

  // ---- applying a choice --------------------------------------------------
  function apply(choices) {
    eff = effective(choices);
    updateCM(signals(eff));
    scrub();
    unblock(D);
    var detail = Object.assign({}, eff);
    listeners.slice().forEach(function (fn) {
      try { fn(detail); } catch (e) { console.error(e); }
    });
    W.dispatchEvent(new CustomEvent('yinyom:change', { detail: detail }));
  }

  function choose(choices, uiElement, extra) {
    choices = gpcMask(choices);
    record(actionsFor(choices, optional().map(function (p) { return p.key; })), uiElement, extra);
    stored = {
      v: cfg.notice.version, k: cfg.notice.key, choices: choices, at: Date.now(), lang: lang,
      cm: signals(effective(choices)), g: gpcOn() ? 1 : undefined
    };
    save();
    apply(choices);
    var a = shadow.activeElement, inBanner = a && bannerEl.contains(a);
    bannerEl.hidden = true;
    floatEl.hidden = noFloat;
    closePrefs(); // puts focus back itself
    if (inBanner && !noFloat) floatEl.focus(); // the banner went away under the focus: don't drop it on <body>
  }
  function all(on) {
    var c = {};
    optional().forEach(function (p) { c[p.key] = on; });
    return c;
  }
  // GPC wins over any button: sale/sharing stays off (the server enforces it too).
  function gpcMask(c) {
    optional().forEach(function (p) { if (p.sale_or_sharing && gpcOn()) c[p.key] = false; });
    return c;
  }
  function gpcNote() { return gpcOn() && optional().some(function (p) { return p.sale_or_sharing; }); }
  function acceptAll() { choose(all(true), 'accept_all'); }
  function rejectAll() { choose(all(false), 'reject_all'); }
  function savePrefs() { choose(Object.assign(all(false), draft), 'save_preferences'); }

  // Script blocking: <script type="text/plain" data-yinyom-purpose="a b">
  // runs, once, when every listed purpose is granted.
  var SEL = 'script[type="text/plain"][data-yinyom-purpose]';
  function unblock(root) {
    if (!eff) return;
    var list = Array.from(root.querySelectorAll ? root.querySelectorAll(SEL) : []);
    if (root.matches && root.matches(SEL)) list.push(root);
    list.forEach(function (old) {
      var need = old.getAttribute('data-yinyom-purpose').split(/\s+/).filter(Boolean);
      if (!need.length || !need.every(function (k) { return eff[k] === true; }) || !old.parentNode) return;
      var s = D.createElement('script');
      Array.from(old.attributes).forEach(function (a) {
        if (!/^(type|data-type|data-yinyom-purpose)$/i.test(a.name)) s.setAttribute(a.name, a.value);
      });
      if (old.getAttribute('data-type')) s.type = old.getAttribute('data-type');
      if (old.nonce) s.nonce = old.nonce; // the attribute reads empty once parsed
      if (!old.hasAttribute('async')) s.async = false; // keep document order
      s.text = old.text;
      old.parentNode.replaceChild(s, old); // the inert original is gone: never twice
    });
  }
  new MutationObserver(function (ms) {
    if (!eff) return;
    ms.forEach(function (m) {
      m.addedNodes.forEach(function (n) { if (n.nodeType === 1) unblock(n); });
    });
  }).observe(D.documentElement, { childList: true, subtree: true });

  // Delete the cookies of every purpose not granted (exact name, or prefix
  // with a trailing *), on this host and its parent domains. HttpOnly ones
  // are out of reach of scripts.
  function scrub() {
    var keep = [], drop = [];
    cfg.purposes.forEach(function (p) { [].push.apply(eff[p.key] ? keep : drop, p.cookies || []); });
    if (!drop.length) return;
    var match = function (pats, n) {
      return pats.some(function (c) { return c.slice(-1) === '*' ? n.indexOf(c.slice(0, -1)) === 0 : n === c; });
    };
    var h = location.hostname, parts = h.split('.'), doms = [''], paths = ['/'], acc = '/';
    if (!/^[\d.]+$|:/.test(h)) {
      for (var i = 0; i < parts.length - 1; i++) doms.push(';domain=.' + parts.slice(i).join('.'));
    }
    location.pathname.split('/').slice(1, -1).forEach(function (s) { paths.push(acc + s); acc += s + '/'; });
    D.cookie.split(';').forEach(function (c) {
      var n = c.split('=')[0].trim();
      if (!n || !match(drop, n) || match(keep, n)) return;
      doms.forEach(function (d) {
        paths.forEach(function (p) { D.cookie = n + '=;expires=Thu, 01 Jan 1970 00:00:00 GMT;max-age=0;path=' + p + d; });
      });
    });
  }

  // ---- UI ---------------------------------------------------------------
  var UI = {
    en: {
      accept: 'Accept all', reject: 'Reject all', manage: 'Manage preferences', save: 'Save preferences',
      always: 'Always active', prefs: 'Privacy preferences', policy: 'Privacy policy', close: 'Close',
      lang: 'Language', settings: 'Cookie settings', cookies: 'Cookies: ', title: 'Cookies',
      gpc: 'Global Privacy Control honoured: we do not sell or share your data for advertising.'
    },
    th: {
      accept: 'ยอมรับทั้งหมด', reject: 'ปฏิเสธทั้งหมด', manage: 'ตั้งค่า', save: 'บันทึกการตั้งค่า',
      always: 'เปิดใช้งานตลอด', prefs: 'การตั้งค่าความเป็นส่วนตัว', policy: 'นโยบายความเป็นส่วนตัว', close: 'ปิด',
      lang: 'ภาษา', settings: 'ตั้งค่าคุกกี้', cookies: 'คุกกี้: ', title: 'คุกกี้',
      gpc: 'เราปฏิบัติตามสัญญาณ Global Privacy Control: เราไม่ขายหรือแบ่งปันข้อมูลของคุณเพื่อการโฆษณา'
    }
  };
  var CSS = [
    ':host{all:initial}',
    '.yy{--a:var(--yinyom-accent,#1d4ed8);--f:var(--yinyom-text,#111827);--g:var(--yinyom-background,#fff);' +
      'font:normal medium/1.5 system-ui;font-size:var(--fs,medium);' +
      'font-family:var(--ff,system-ui),-apple-system,"Segoe UI",Roboto,"Noto Sans Thai","Noto Sans",Tahoma,sans-serif;color:var(--f)}',
    '*{box-sizing:border-box}',
    '[hidden]{display:none!important}',
    '.vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}',
    '.b{position:fixed;z-index:2147483646;left:0;right:0;bottom:0;max-height:85vh;overflow:auto;padding:16px;' +
      'background:var(--g);color:var(--f);border-top:1px solid #6b7280;box-shadow:0 -4px 24px rgba(0,0,0,.18)}',
    '.b.cb{left:auto;right:16px;bottom:16px;width:min(26rem,calc(100vw - 32px));border:1px solid #6b7280;border-radius:var(--r,6px)}',
    '.b.md{top:0;margin:auto;height:fit-content;width:min(36rem,calc(100vw - 32px));border:0;border-radius:var(--r,6px);' +
      'box-shadow:0 0 0 100vmax rgba(17,24,39,.6)}',
    '.lo{max-height:2.5em;max-width:10em;margin:0 0 8px}',
    '.in{max-width:64rem;margin:0 auto}',
    '.hd{display:flex;flex-wrap:wrap;align-items:flex-start;gap:8px 12px}',
    'h2{flex:1;font-size:1.15em;line-height:1.3;font-weight:700;margin:0 0 8px}',
    'p{margin:0 0 12px;white-space:pre-line}',
    'a{color:var(--a);text-decoration:underline}',
    '.row{display:flex;flex-wrap:wrap;gap:8px}',
    '.row button{flex:1 1 10em}',
    'button{font:inherit;font-weight:600;margin:0;min-height:44px;padding:8px 16px;border:2px solid var(--a);' +
      'border-radius:var(--r,6px);background:var(--a);color:var(--g);cursor:pointer}',
    '.ac{background:var(--ab,var(--a));border-color:var(--ad,var(--a));color:var(--at,var(--g));font-weight:var(--aw,600);font-size:var(--as,1em)}',
    '.rj{background:var(--rb,var(--a));border-color:var(--rd,var(--a));color:var(--rt,var(--g));font-weight:var(--rw,600);font-size:var(--rs,1em)}',
    'button.s,.lg button{background:var(--g);color:var(--a)}',
    '.lg{display:flex;gap:4px}',
    '.lg button{min-height:32px;padding:2px 10px;font-size:.875em}',
    '.lg button[aria-pressed=true]{background:var(--a);color:var(--g)}',
    ':focus-visible{outline:3px solid var(--a);outline-offset:2px}',
    'dialog:not([open]){display:none}',
    'dialog[open]{display:flex;flex-direction:column;position:fixed;inset:0;margin:auto;height:fit-content;' +
      'width:min(36rem,calc(100vw - 24px));max-height:calc(100vh - 24px);padding:0;border:0;border-radius:10px;' +
      'background:var(--g);color:var(--f);box-shadow:0 8px 40px rgba(0,0,0,.35);z-index:2147483647}',
    'dialog::backdrop{background:rgba(17,24,39,.6)}',
    'dialog .hd{padding:16px 16px 0}',
    '.bd{padding:0 16px;overflow:auto}',
    '.ft{padding:12px 16px 16px;border-top:1px solid #d1d5db}',
    '.x{min-width:44px;padding:0;border-color:transparent;background:var(--g);color:var(--f);font-size:1.5em;line-height:1}',
    '.p{border-top:1px solid #d1d5db;padding:12px 0}',
    '.ph{display:flex;align-items:center;gap:12px}',
    '.ph label{flex:1;font-weight:600}',
    '.d,.ck{color:var(--f);font-size:.9375em;margin:4px 0 0}',
    '.ck{font-size:.8125em}',
    '.al{color:var(--f);font-size:.875em;font-weight:600}',
    '.gpc{border-left:4px solid var(--a);padding:8px 12px;margin:12px 0 4px}',
    '.sw{-webkit-appearance:none;appearance:none;flex:none;width:44px;height:24px;margin:0;border-radius:12px;cursor:pointer;' +
      'background:#6b7280 radial-gradient(circle,#fff 8px,transparent 9px) no-repeat 0 50%/24px 24px}',
    '.sw:checked{background-color:var(--a);background-position:100% 50%}',
    '.sw:disabled{cursor:not-allowed;opacity:.65}',
    '@media (forced-colors:active){.sw{-webkit-appearance:auto;appearance:auto}}',
    '.f{position:fixed;z-index:2147483645;left:16px;bottom:16px;width:48px;height:48px;padding:0;border-radius:50%;' +
      'display:flex;align-items:center;justify-content:center;box-shadow:0 2px 10px rgba(0,0,0,.3)}',
    '.f svg{width:28px;height:28px;fill:currentColor}',
    '@media print{.b,.f{display:none}}'
  ].join('\n');

  // The tenant's design as custom properties (values checked by the server,
  // and again here: nothing but colours, numbers and font names gets in).
  function theme(d) {
    var hex = /^#[0-9a-f]{3}([0-9a-f]{3})?$/i, v = [];
    var n = function (x, lo, hi) { return typeof x === 'number' && x >= lo && x <= hi; };
    var pal = function (p) {
      var m = { background: 'g', text: 'f', accent: 'a', accept_background: 'ab', accept_text: 'at', reject_background: 'rb', reject_text: 'rt' };
      return Object.keys(m).filter(function (k) { return p && hex.test(p[k]); }).map(function (k) { return '--' + m[k] + ':' + p[k]; }).join(';');
    };
    // A button filled like the banner gets an outline in its text colour.
    var edge = function (p) {
      return p ? ['accept', 'reject'].map(function (b) {
        var f = p[b + '_background'], t = p[b + '_text'];
        return hex.test(f) && hex.test(t) ? ';--' + b[0] + 'd:' + (f.toLowerCase() === String(p.background).toLowerCase() ? t : f) : '';
      }).join('') : '';
    };
    v.push(pal(d.colors) + edge(d.colors));
    if (n(d.font_size, 12, 24)) v.push('--fs:' + d.font_size + 'px');
    if (n(d.radius, 0, 32)) v.push('--r:' + d.radius + 'px');
    if (/^[\w ,'"-]{1,200}$/.test(d.font_family || '')) v.push('--ff:' + d.font_family);
    ['accept', 'reject'].forEach(function (b) {
      var s = d[b] || {}, k = '--' + b[0];
      if (n(s.font_size, 12, 24)) v.push(k + 's:' + s.font_size + 'px');
      if (n(s.font_weight, 400, 900)) v.push(k + 'w:' + s.font_weight);
    });
    return '.yy{' + v.join(';') + '}' + (d.dark ? '@media (prefers-color-scheme:dark){.yy{' + pal(d.dark) + edge(d.dark) + '}}' : '');
  }
  function design() { return (cfg && cfg.design) || {}; }
  function modal() { return design().position === 'center_modal'; }

  // Elements from plain data: strings become text nodes, never HTML.
  function h(tag, attrs, kids) {
    var el = D.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    });
    [].concat(kids == null ? [] : kids).forEach(function (c) {
      if (c != null && c !== false) el.append(c);
    });
    return el;
  }
  function fill(el, kids) { // replaceChildren, which older Safari lacks
    el.textContent = '';
    kids.forEach(function (k) { el.append(k); });
  }
  function btn(label, fn, key, cls) {
    return h('button', { type: 'button', class: cls, 'data-k': key, onclick: fn }, label);
  }
  function icon() {
    var ns = 'http://www.w3.org/2000/svg', s = D.createElementNS(ns, 'svg'), p = D.createElementNS(ns, 'path');
    s.setAttribute('viewBox', '0 0 24 24');
    s.setAttribute('aria-hidden', 'true');
    s.setAttribute('focusable', 'false');
    p.setAttribute('fill-rule', 'evenodd');
    p.setAttribute('d', 'M21.95 11A10 10 0 1 1 13 2.05a3.5 3.5 0 0 0 4 4.5 3.5 3.5 0 0 0 4.95 4.45z' +
      'M8 7a1.5 1.5 0 1 0 0 3 1.5 1.5 0 1 0 0-3zM8.5 14a1.5 1.5 0 1 0 0 3 1.5 1.5 0 1 0 0-3z' +
      'M14 11.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 1 0 0-3z');
    s.append(p);
    return s;
  }
  function safeUrl(u) {
    try { return /^https?:$/.test(new URL(u, location.href).protocol) ? u : null; } catch (e) { return null; }
  }
  function langSwitch() {
    return h('div', { class: 'lg', role: 'group', 'aria-label': UI[lang].lang }, ['th', 'en'].map(function (l) {
      return h('button', {
        type: 'button', lang: l, 'data-k': 'lang-' + l, 'aria-pressed': String(l === lang),
        onclick: function () { setLanguage(l); }
      }, l === 'th' ? 'ไทย' : 'English');
    }));
  }

  function mount() {
    host = D.createElement('yinyom-consent'); // a custom tag: no page rule for div/section hits it
    host.id = 'yinyom';
    shadow = host.attachShadow({ mode: 'open' }); // isolates the banner from the page's CSS
    try {
      var sheet = new CSSStyleSheet(); // not subject to a CSP's style-src
      sheet.replaceSync(CSS + theme(design()));
      shadow.adoptedStyleSheets = [sheet];
    } catch (e) {
      var st = D.createElement('style');
      if (script.nonce) st.nonce = script.nonce;
      st.textContent = CSS + theme(design());
      shadow.append(st);
    }
    var pos = { corner_box: 'b cb', center_modal: 'b md' }[design().position] || 'b';
    // The centred modal is a dialog: Tab stays inside it until a choice is made.
    bannerEl = h('section', {
      class: pos, 'aria-labelledby': 'yy-bt', 'aria-describedby': 'yy-bb', hidden: true,
      role: modal() ? 'dialog' : null, 'aria-modal': modal() ? 'true' : null,
      onkeydown: function (e) { if (modal() && e.key === 'Tab') cycle(bannerEl, e); }
    });
    // role/aria-modal are implicit on a modal <dialog>; stated for browsers without one.
    dialogEl = h('dialog', {
      role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'yy-pt', class: 'm',
      onclose: onClosed, onkeydown: trap
    });
    floatEl = h('button', { type: 'button', class: 'f', 'data-k': 'float', hidden: true, onclick: function () { openPrefs(); } }, icon());
    ui = h('div', { class: 'yy' }, [bannerEl, dialogEl, floatEl]);
    shadow.append(ui);
    D.body.prepend(host); // first in the tab order and the reading order
  }

  function render() {
    var dt = (design().texts || {})[lang] || {}, u = Object.assign({}, UI[lang]);
    ['accept', 'reject', 'manage', 'save'].forEach(function (k) { if (dt[k]) u[k] = dt[k]; });
    var t = cfg.notice.texts || {}, nt = t[lang] || t.en || t.th || {}, logo = design().logo_url && safeUrl(design().logo_url);
    var focused = shadow.activeElement && shadow.activeElement.getAttribute('data-k');
    host.lang = ui.lang = lang;
    var link = safeUrl(nt.url || (cfg.tenant && cfg.tenant.policy_url));
    fill(bannerEl, [h('div', { class: 'in' }, [
      logo && h('img', { class: 'lo', src: logo, alt: '' }),
      h('div', { class: 'hd' }, [h('h2', { id: 'yy-bt' }, dt.title || nt.title || u.title), langSwitch()]),
      h('p', { id: 'yy-bb' }, nt.body || ''),
      gpcNote() && h('p', { class: 'gpc', role: 'note' }, u.gpc),
      link && h('p', null, h('a', { href: link, target: '_blank', rel: 'noopener' }, u.policy)),
      h('div', { class: 'row' }, [
        btn(u.accept, acceptAll, 'acc', 'ac'), btn(u.reject, rejectAll, 'rej', 'rj'),
        btn(u.manage, function () { openPrefs(); }, 'man', 's')
      ])
    ])]);
    if (dialogEl.open) fillPrefs();
    floatEl.setAttribute('aria-label', u.settings);
    floatEl.title = u.settings;
    var back = focused && shadow.querySelector('[data-k="' + focused + '"]');
    if (back) back.focus(); // a language switch keeps the person's place
  }

  function fillPrefs() {
    var dt = (design().texts || {})[lang] || {}, u = Object.assign({}, UI[lang]);
    ['accept', 'reject', 'save'].forEach(function (k) { if (dt[k]) u[k] = dt[k]; });
    var note = gpcNote();
    fill(dialogEl, [
      h('div', { class: 'hd' }, [
        h('h2', { id: 'yy-pt' }, u.prefs), langSwitch(),
        h('button', { type: 'button', class: 'x', 'data-k': 'x', onclick: closePrefs }, [
          h('span', { 'aria-hidden': 'true' }, '×'), h('span', { class: 'vh' }, u.close)
        ])
      ]),
      h('div', { class: 'bd' }, [note && h('p', { class: 'gpc', role: 'note', id: 'yy-gpc' }, u.gpc)].concat(cfg.purposes.map(function (p, i) {
        var id = 'yy-p' + i, desc = tx(p.descriptions), cookies = p.cookies || [], gpc = p.sale_or_sharing && note;
        return h('div', { class: 'p' }, [
          h('div', { class: 'ph' }, [
            h('label', { for: id }, tx(p.names) || p.key),
            p.required && h('span', { class: 'al', id: id + 'a' }, u.always),
            h('input', {
              type: 'checkbox', role: 'switch', class: 'sw', id: id, 'data-k': 'p' + i,
              checked: !!p.required || (draft[p.key] === true && !gpc),
              disabled: !!p.required || gpc,
              'aria-describedby': [p.required && id + 'a', gpc && 'yy-gpc', desc && id + 'd'].filter(Boolean).join(' ') || null,
              onchange: function (e) { draft[p.key] = e.target.checked; }
            })
          ]),
          desc && h('p', { class: 'd', id: id + 'd' }, desc),
          cookies.length > 0 && h('p', { class: 'ck' }, u.cookies + cookies.join(', '))
        ]);
      }))),
      h('div', { class: 'row ft' }, [
        btn(u.accept, acceptAll, 'acc2', 'ac'), btn(u.reject, rejectAll, 'rej2', 'rj'), btn(u.save, savePrefs, 'save', 's')
      ])
    ]);
  }

  function deepActive() {
    var a = D.activeElement;
    while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
    return a;
  }
  function openPrefs() {
    if (!cfg || !host) { wantOpen = true; return; }
    if (tcf) { tcf.open(); return; }
    if (dialogEl.open) return;
    returnFocus = deepActive();
    var c = (stored && stored.choices) || {}; // a re-prompt starts from the earlier choice
    draft = {};
    optional().forEach(function (p) { draft[p.key] = c[p.key] === true; });
    fillPrefs();
    floatEl.hidden = true;
    if (dialogEl.showModal) dialogEl.showModal(); else dialogEl.setAttribute('open', '');
    (dialogEl.querySelector('input:not([disabled])') || dialogEl.querySelector('button')).focus();
  }
  function closePrefs() {
    if (!dialogEl.open && !dialogEl.hasAttribute('open')) return;
    if (dialogEl.close) dialogEl.close(); // fires "close" → onClosed
    else { dialogEl.removeAttribute('open'); onClosed(); }
  }
  function onClosed() {
    floatEl.hidden = noFloat || !bannerEl.hidden;
    var r = returnFocus;
    returnFocus = null;
    if (r && r.isConnected && r.getClientRects().length) r.focus();
    else if (!floatEl.hidden) floatEl.focus();
  }
  // Keep Tab inside the modal; Esc closes it (also where <dialog> is missing).
  function trap(e) {
    if (e.key === 'Escape') {
      e.preventDefault();
      closePrefs();
      return;
    }
    if (e.key === 'Tab') cycle(dialogEl, e);
  }
  function focusables(el) {
    return Array.from(el.querySelectorAll('button,input,a[href]')).filter(function (x) {
      return !x.disabled && x.getClientRects().length;
    });
  }
  function cycle(el, e) {
    var f = focusables(el), a = shadow.activeElement, first = f[0], last = f[f.length - 1];
    if (e.shiftKey ? a === first || !el.contains(a) : a === last || !el.contains(a)) {
      e.preventDefault();
      (e.shiftKey ? last : first).focus();
    }
  }
  // Focus that leaves the centred modal (a click on the page, a screen
  // reader's jump) is brought back to it.
  D.addEventListener('focusin', function (e) {
    if (host && cfg && modal() && !bannerEl.hidden && !dialogEl.open && e.target !== host) {
      (focusables(bannerEl)[0] || bannerEl).focus();
    }
  });

  function setLanguage(l) {
    if (l !== 'th' && l !== 'en') return;
    lang = l;
    lsSet(K_LANG, l);
    if (stored) { stored.lang = l; save(); }
    if (host) render();
  }

  // ---- public API -------------------------------------------------------
  W.yinyom = {
    version: VERSION,
    open: function () { openPrefs(); },
    consent: function (purpose) {
      if (eff && own(eff, purpose)) return eff[purpose];
      if (cfg && cfg.purposes.some(function (p) { return p.key === purpose && p.required; })) return true;
      return undefined;
    },
    // 'change': fn(choices) whenever choices apply: on load from a stored
    // choice, and after every choice. Returns a function that unsubscribes.
    on: function (ev, fn) {
      if (ev === 'change' && typeof fn === 'function') listeners.push(fn);
      return function () { listeners = listeners.filter(function (f) { return f !== fn; }); };
    },
    setLanguage: setLanguage,
    // Withdraw everything (e.g. from a "withdraw consent" link on the policy page).
    withdraw: function () { if (tcf) tcf.withdraw(); else if (host) choose(all(false), 'withdraw'); },
    anonymousId: function () { return anon; }
  };
  D.addEventListener('click', function (e) {
    var t = e.target && e.target.closest && e.target.closest('[data-yinyom-open]');
    if (t) { e.preventDefault(); openPrefs(); }
  });

  // ---- start ------------------------------------------------------------
  function start(c) {
    if (!c || !c.notice || !Array.isArray(c.purposes)) throw new Error('unexpected config');
    cfg = c;
    lang = pickLang();
    var isStale = stale();
    autoGpc(isStale);
    if (!isStale) apply(stored.choices);
    else if (stored) updateCM(denied()); // consent given before a material change lapses
    if (c.tcf) loadTcf(isStale);
    var show = function () {
      mount();
      bannerEl.hidden = !isStale || !!c.tcf; // the TCF script draws its own layers
      floatEl.hidden = isStale || noFloat;
      render();
      if (modal() && !bannerEl.hidden) focusables(bannerEl)[0].focus();
      if (wantOpen) openPrefs();
    };
    if (D.body) show(); else D.addEventListener('DOMContentLoaded', show);
  }
  // IAB TCF/GPP: stubs that queue calls at once, then the CMP script, which
  // this script fetches only for tenants that enable TCF. It draws its own
  // layers and records through `choose`, with the TC string as evidence.
  function loadTcf(isStale) {
    ['__tcfapi', '__gpp'].forEach(function (n) {
      if (typeof W[n] !== 'function') W[n] = function () { (W[n].a = W[n].a || []).push(arguments); };
    });
    W.__yinyomCore = {
      cfg: cfg, base: base, stale: isStale, noFloat: noFloat,
      stored: function () { return stored; }, lang: function () { return lang; }, gpc: gpcOn,
      choose: function (c, u, x) { choose(c, u, x); },
      attach: function (h) { tcf = h; if (wantOpen) h.open(); }
    };
    var s = D.createElement('script');
    s.src = base + cfg.tcf.script;
    if (script.nonce) s.nonce = script.nonce;
    D.head.append(s);
  }
  if (!siteKey) {
    console.error('Yinyom: the script tag needs data-site-key');
    return;
  }
  fetch(base + '/sdk/v1/config?site_key=' + encodeURIComponent(siteKey), { credentials: 'omit' })
    .then(function (r) {
      if (!r.ok) throw new Error('no banner config for this site key (HTTP ' + r.status + ')');
      return r.json();
    })
    .then(start)
    .catch(function (e) { console.error('Yinyom: ' + (e && e.message)); });
})();
