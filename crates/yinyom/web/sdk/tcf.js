/*!
 * Yinyom IAB TCF v2.2 CMP and GPP. Apache-2.0.
 *
 * Loaded by yinyom.js only for tenants that enable TCF. Fetches the Global
 * Vendor List from our own origin, draws layer 1 (purposes, stacks, special
 * features, the number of vendors) and layer 2 (per purpose and per vendor
 * consent and legitimate-interest objection, retention, data categories),
 * writes the TC string to the `euconsent-v2` cookie, answers `__tcfapi`
 * and `__gpp` (also across frames, through `__tcfapiLocator` /
 * `__gppLocator` and postMessage), and records the choice through the core
 * script with the TC string as evidence. Texts from the vendor list are
 * only ever inserted as text nodes.
 */
(function () {
  'use strict';
  var W = window, D = document, core = W.__yinyomCore;
  if (!core || W.__yinyomTcf) return;
  W.__yinyomTcf = 1;
  var cfg = core.cfg, T = cfg.tcf, K = 'yinyom.tcf', COOKIE = 'euconsent-v2';
  var LI_OK = [2, 7, 8, 9, 10, 11]; // purposes a vendor may base on legitimate interest (v2.2)
  var gvl = null, model = null, tcString = '', gppString = '', shown = false, tcListeners = [], gppListeners = [], nextId = 1;
  var host, shadow, l1, l2, draft;

  function lsGet(k) { try { return JSON.parse(localStorage.getItem(k)); } catch (e) { return null; } }
  function lsSet(k, v) { try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* memory only */ } }
  function ids(o) { return Object.keys(o || {}).map(Number).sort(function (a, b) { return a - b; }); }
  function has(list, id) { return list.indexOf(id) >= 0; }
  function setOf(list, all) { var o = {}; all.forEach(function (i) { o[i] = has(list, i); }); return o; }

  // ---- encoding: bits → base64url, no padding ------------------------------
  function Bits() { this.b = []; }
  Bits.prototype.int = function (v, n) { for (var i = n - 1; i >= 0; i--) this.b.push(Math.floor(v / Math.pow(2, i)) % 2); return this; };
  Bits.prototype.field = function (on, n) { for (var i = 1; i <= n; i++) this.b.push(has(on, i) ? 1 : 0); return this; };
  Bits.prototype.letters = function (s) { return this.int(s.charCodeAt(0) - 65, 6).int(s.charCodeAt(1) - 65, 6); };
  Bits.prototype.fib = function (v) { // Fibonacci coding (GPP): lowest term first, then a closing 1
    var f = [1, 2], out = [];
    while (f[f.length - 1] + f[f.length - 2] <= v) f.push(f[f.length - 1] + f[f.length - 2]);
    for (var i = f.length - 1; i >= 0; i--) { if (f[i] <= v) { out[i] = 1; v -= f[i]; } else out[i] = 0; }
    while (out.length > 1 && !out[out.length - 1]) out.pop();
    this.b = this.b.concat(out, [1]);
    return this;
  };
  Bits.prototype.vendors = function (on) { // MaxVendorId, then a bitfield or ranges, whichever is shorter
    var max = on.length ? on[on.length - 1] : 0, ranges = [];
    on.forEach(function (id) {
      var r = ranges[ranges.length - 1];
      if (r && r[1] === id - 1) r[1] = id; else ranges.push([id, id]);
    });
    var rangeBits = 12 + ranges.reduce(function (n, r) { return n + (r[0] === r[1] ? 17 : 33); }, 0);
    this.int(max, 16);
    if (rangeBits < max) {
      this.int(1, 1).int(ranges.length, 12);
      var self = this;
      ranges.forEach(function (r) { self.int(r[0] === r[1] ? 0 : 1, 1).int(r[0], 16); if (r[0] !== r[1]) self.int(r[1], 16); });
    } else this.int(0, 1).field(on, max);
    return this;
  };
  Bits.prototype.toString = function () {
    var A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_', b = this.b.slice(), s = '';
    while (b.length % 8) b.push(0); // whole bytes, as the TCF and GPP encoders pad
    for (var i = 0; i < b.length; i += 6) {
      var v = 0;
      for (var j = 0; j < 6; j++) v = v * 2 + (b[i + j] || 0);
      s += A[v];
    }
    return s;
  };

  function encodeTc(m) {
    var ds = function (ms) { return Math.round(ms / 100); };
    var c = new Bits().int(2, 6).int(ds(m.created), 36).int(ds(m.updated), 36)
      .int(T.cmp_id, 12).int(T.cmp_version, 12).int(m.screen, 6).letters(m.lang)
      .int(m.vlv, 12).int(m.pv, 6).int(1, 1).int(0, 1) // service-specific; standard texts
      .field(m.sf, 12).field(m.pc, 24).field(m.pli, 24).int(0, 1).letters(T.publisher_cc)
      .vendors(m.vc).vendors(m.vli).int(0, 12); // no publisher restrictions
    var d = new Bits().int(1, 3).vendors(m.disclosed);
    return c + '.' + d;
  }

  // US National (GPP section 7, version 2): opt-outs follow the choice.
  function usnat(m) {
    var sale = cfg.purposes.filter(function (p) { return p.sale_or_sharing && !p.required; });
    var granted = sale.length ? sale.every(function (p) { return m.own[p.key] === true; }) : has(m.pc, 3) && has(m.pc, 4);
    var out = granted ? 2 : 1; // 1 opted out, 2 did not
    var b = new Bits().int(2, 6).int(1, 2).int(1, 2).int(1, 2).int(1, 2).int(0, 2).int(0, 2)
      .int(out, 2).int(out, 2).int(out, 2);
    for (var i = 0; i < 16 + 3; i++) b.int(0, 2); // sensitive data, known child: not applicable
    b.int(0, 2).int(2, 2).int(0, 2).int(0, 2); // personal data consents; not an MSPA covered transaction
    return { str: b + '.' + new Bits().int(1, 2).int(core.gpc() ? 1 : 0, 1), out: out };
  }
  function gppSections() {
    var s = [];
    if (has(T.gpp, 'tcfeuv2')) s.push([2, 'tcfeuv2']);
    if (has(T.gpp, 'usnat')) s.push([7, 'usnat']);
    return s;
  }
  function encodeGpp(m) {
    var secs = gppSections();
    if (!secs.length || !m) return '';
    var h = new Bits().int(3, 6).int(1, 6).int(secs.length, 12), prev = 0; // one id per entry, no ranges
    secs.forEach(function (s) { h.int(0, 1).fib(s[0] - prev); prev = s[0]; });
    return [String(h)].concat(secs.map(function (s) { return s[0] === 2 ? tcString : usnat(m).str; })).join('~');
  }

  // ---- the model ---------------------------------------------------------
  function vendorIds() { return ids(gvl.vendors); }
  function liPurposes() { // purposes some vendor bases on legitimate interest
    var out = [];
    vendorIds().forEach(function (v) { (gvl.vendors[v].legIntPurposes || []).forEach(function (p) { if (has(LI_OK, p) && !has(out, p)) out.push(p); }); });
    return out.sort(function (a, b) { return a - b; });
  }
  function consentVendors() { return vendorIds().filter(function (v) { return (gvl.vendors[v].purposes || []).length > 0; }); }
  function liVendors() {
    return vendorIds().filter(function (v) {
      var x = gvl.vendors[v];
      return (x.legIntPurposes || []).length > 0 || ((x.purposes || []).length === 0 && (x.specialPurposes || []).length > 0);
    });
  }
  // A choice: consents granted, and legitimate interests not objected to.
  function everything(on) {
    return {
      pc: on ? ids(gvl.purposes) : [], sf: on ? ids(gvl.specialFeatures) : [],
      vc: on ? consentVendors() : [], pli: on ? liPurposes() : [], vli: on ? liVendors() : [], own: {}
    };
  }
  // The tenant's purposes follow the TCF purposes mapped to them; the rest
  // follow the choice as a whole (accept: granted, reject: denied) or the toggles.
  function ownChoices(d, all) {
    var map = {}, out = {};
    Object.keys(T.purposes || {}).forEach(function (id) { (map[T.purposes[id]] = map[T.purposes[id]] || []).push(Number(id)); });
    cfg.purposes.forEach(function (p) {
      if (p.required) return;
      if (map[p.key]) out[p.key] = map[p.key].every(function (id) { return has(d.pc, id); });
      else out[p.key] = all === undefined ? d.own[p.key] === true : all && !(p.sale_or_sharing && core.gpc());
    });
    return out;
  }
  // Global Privacy Control opts out of sale and sharing whatever is pressed:
  // no consent to the TCF purposes that stand for such a purpose.
  function gpcBlocked(id) {
    var key = (T.purposes || {})[id];
    return core.gpc() && cfg.purposes.some(function (p) { return p.key === key && p.sale_or_sharing; });
  }
  function commit(d, ui, all, screen) {
    d.pc = d.pc.filter(function (id) { return !gpcBlocked(id); });
    var now = Date.now(), day = Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), new Date(now).getUTCDate());
    var own = ownChoices(d, all);
    model = {
      created: (model && model.created) || day, updated: day, // v2.2: day-level timestamps
      screen: screen, lang: (core.lang() || 'en').toUpperCase().slice(0, 2), vlv: gvl.vendorListVersion, pv: gvl.tcfPolicyVersion,
      pc: d.pc.slice().sort(num), sf: d.sf.slice().sort(num), pli: d.pli.slice().sort(num),
      vc: d.vc.slice().sort(num), vli: d.vli.slice().sort(num), disclosed: vendorIds(), own: own
    };
    tcString = encodeTc(model);
    gppString = encodeGpp(model);
    lsSet(K, model);
    D.cookie = COOKIE + '=' + tcString + ';max-age=' + 390 * 86400 + ';path=/;SameSite=Lax' + (location.protocol === 'https:' ? ';Secure' : '');
    hide();
    core.choose(own, ui, { tc_string: tcString, gpp_string: gppString || undefined });
    emit('useractioncomplete');
  }
  function num(a, b) { return a - b; }

  // ---- __tcfapi ----------------------------------------------------------
  function tcData(status, lid, only) {
    var m = model || everything(false), vs = only && only.length ? only : vendorIds();
    var pAll = ids(gvl && gvl.purposes), sfAll = ids(gvl && gvl.specialFeatures);
    return {
      tcString: model ? tcString : undefined, tcfPolicyVersion: gvl ? gvl.tcfPolicyVersion : undefined,
      cmpId: T.cmp_id, cmpVersion: T.cmp_version, gdprApplies: true, eventStatus: status, cmpStatus: 'loaded',
      listenerId: lid, isServiceSpecific: true, useNonStandardTexts: false, publisherCC: T.publisher_cc,
      purposeOneTreatment: false,
      purpose: { consents: setOf(m.pc, pAll), legitimateInterests: setOf(m.pli, pAll) },
      vendor: { consents: setOf(m.vc, vs), legitimateInterests: setOf(m.vli, vs) },
      specialFeatureOptins: setOf(m.sf, sfAll),
      publisher: { consents: {}, legitimateInterests: {}, customPurpose: { consents: {}, legitimateInterests: {} }, restrictions: {} }
    };
  }
  function status() { return shown ? 'cmpuishown' : 'tcloaded'; }
  function emit(ev) {
    tcListeners.slice().forEach(function (l) { call(l.cb, [tcData(ev, l.id), true]); });
    var ping = gppPing();
    gppListeners.slice().forEach(function (l) {
      call(l.cb, [{ eventName: ev === 'cmpuishown' ? 'cmpDisplayStatus' : 'signalStatus', listenerId: l.id, data: ev === 'cmpuishown' ? 'visible' : 'ready', pingData: ping }, true]);
      if (ev === 'useractioncomplete') call(l.cb, [{ eventName: 'sectionChange', listenerId: l.id, data: 'tcfeuv2', pingData: ping }, true]);
    });
  }
  function call(fn, args) { try { fn.apply(null, args); } catch (e) { console.error(e); } }

  function tcfapi(cmd, version, cb, param) {
    if (typeof cb !== 'function') return;
    if (version !== 2 && version !== undefined && version !== null && version !== 0) return cb(false, false);
    if (cmd === 'ping') {
      return cb({
        gdprApplies: true, cmpLoaded: !!gvl, cmpStatus: gvl ? 'loaded' : 'stub', displayStatus: shown ? 'visible' : 'hidden',
        apiVersion: '2.2', cmpVersion: T.cmp_version, cmpId: T.cmp_id,
        gvlVersion: gvl ? gvl.vendorListVersion : undefined, tcfPolicyVersion: gvl ? gvl.tcfPolicyVersion : undefined
      }, true);
    }
    if (!gvl) return queue.push([cmd, version, cb, param]); // answered once the vendor list is in
    if (cmd === 'getTCData') return cb(tcData(status(), undefined, param), true);
    if (cmd === 'addEventListener') {
      var l = { id: nextId++, cb: cb };
      tcListeners.push(l);
      return cb(tcData(status(), l.id), true);
    }
    if (cmd === 'removeEventListener') {
      var before = tcListeners.length;
      tcListeners = tcListeners.filter(function (x) { return x.id !== param; });
      return cb(tcListeners.length < before);
    }
    cb(null, false);
  }
  var queue = [];

  // ---- __gpp (CMP API 1.1) -----------------------------------------------
  function gppPing() {
    var secs = gppSections();
    return {
      gppVersion: '1.1', cmpStatus: gvl ? 'loaded' : 'stub', cmpDisplayStatus: shown ? 'visible' : 'hidden',
      signalStatus: gvl ? 'ready' : 'not ready', supportedAPIs: secs.map(function (s) { return s[0] + ':' + s[1]; }),
      cmpId: T.cmp_id, sectionList: model ? secs.map(function (s) { return s[0]; }) : [],
      applicableSections: secs.length ? secs.map(function (s) { return s[0]; }) : [-1], gppString: gppString || undefined,
      parsedSections: model ? gppParsed() : {}
    };
  }
  function gppParsed() {
    var o = {};
    if (has(T.gpp, 'tcfeuv2')) o.tcfeuv2 = tcData('tcloaded');
    if (has(T.gpp, 'usnat')) {
      var u = usnat(model).out;
      o.usnat = { Version: 2, SaleOptOut: u, SharingOptOut: u, TargetedAdvertisingOptOut: u, Gpc: !!core.gpc() };
    }
    return o;
  }
  function gpp(cmd, cb, param) {
    if (typeof cb !== 'function') return;
    if (cmd === 'ping') return cb(gppPing(), true);
    if (cmd === 'addEventListener') {
      var l = { id: nextId++, cb: cb };
      gppListeners.push(l);
      return cb({ eventName: 'listenerRegistered', listenerId: l.id, data: true, pingData: gppPing() }, true);
    }
    if (cmd === 'removeEventListener') {
      var before = gppListeners.length;
      gppListeners = gppListeners.filter(function (x) { return x.id !== param; });
      return cb(gppListeners.length < before, true);
    }
    var sec = model && has(T.gpp, param);
    if (cmd === 'hasSection') return cb(!!sec, true);
    if (cmd === 'getSection') return cb(sec ? gppParsed()[param] : null, true);
    cb(null, false);
  }

  // Frames ask through postMessage to the frame named by the locator.
  function locator(name) {
    if (W.frames[name]) return;
    var f = D.createElement('iframe');
    f.name = name;
    f.title = name;
    f.setAttribute('aria-hidden', 'true');
    f.tabIndex = -1;
    f.style.display = 'none';
    D.body.append(f);
  }
  W.addEventListener('message', function (e) {
    var str = typeof e.data === 'string', d = e.data;
    if (str) { try { d = JSON.parse(d); } catch (x) { return; } }
    if (!d || typeof d !== 'object' || !e.source) return;
    var c = d.__tcfapiCall, g = d.__gppCall, reply = function (o) { e.source.postMessage(str ? JSON.stringify(o) : o, '*'); };
    if (c) {
      W.__tcfapi(c.command, c.version, function (rv, ok) { reply({ __tcfapiReturn: { returnValue: rv, success: ok, callId: c.callId } }); }, c.parameter);
    } else if (g) {
      W.__gpp(g.command, function (rv, ok) { reply({ __gppReturn: { returnValue: rv, success: ok, callId: g.callId } }); }, g.parameter, g.version);
    }
  });
  // Replace the stubs, then answer what they queued.
  var stubTc = (W.__tcfapi && W.__tcfapi.a) || [], stubGpp = (W.__gpp && W.__gpp.a) || [];
  W.__tcfapi = tcfapi;
  if (T.gpp && T.gpp.length) W.__gpp = gpp; else if (W.__gpp && W.__gpp.a) delete W.__gpp;
  stubTc.forEach(function (a) { tcfapi.apply(null, a); });
  if (W.__gpp === gpp) stubGpp.forEach(function (a) { gpp.apply(null, a); });

  // ---- UI ---------------------------------------------------------------
  var UI = {
    en: {
      title: 'We and our {n} partners value your privacy',
      intro: 'We and our {n} partners store and access information on your device and process personal data, such as unique identifiers and browsing data, for the purposes below. You can accept, reject, or choose. Some partners process data on the basis of legitimate interest, which you can object to under "Manage options". Your choice applies to this site and can be changed at any time through the cookie settings button.',
      purposes: 'Purposes', sf: 'Special features', vendors: 'Partners ({n})', accept: 'Accept all', reject: 'Reject all',
      manage: 'Manage options', save: 'Save choices', consent: 'Consent', li: 'Legitimate interest', object: 'Object to legitimate interest',
      retention: 'Retention: {d} days', cats: 'Data collected: ', cookie: 'Cookie lifetime: {d} days', privacy: 'Privacy policy',
      used: 'Used by {n} partners', settings: 'Privacy settings', close: 'Close', sp: 'Special purposes: ', feat: 'Features: ', other: 'Other purposes',
      gpc: 'Global Privacy Control honoured: we do not sell or share your data for advertising.'
    },
    th: {
      title: 'เราและพันธมิตร {n} รายให้ความสำคัญกับความเป็นส่วนตัวของคุณ',
      intro: 'เราและพันธมิตร {n} รายจัดเก็บและเข้าถึงข้อมูลบนอุปกรณ์ของคุณ และประมวลผลข้อมูลส่วนบุคคล เช่น ตัวระบุเฉพาะและข้อมูลการท่องเว็บ เพื่อวัตถุประสงค์ด้านล่าง คุณสามารถยอมรับ ปฏิเสธ หรือเลือกเองได้ พันธมิตรบางรายประมวลผลข้อมูลโดยอาศัยประโยชน์โดยชอบด้วยกฎหมาย ซึ่งคุณคัดค้านได้ที่ "จัดการตัวเลือก" และเปลี่ยนการเลือกได้ทุกเมื่อผ่านปุ่มตั้งค่าคุกกี้',
      purposes: 'วัตถุประสงค์', sf: 'คุณลักษณะพิเศษ', vendors: 'พันธมิตร ({n})', accept: 'ยอมรับทั้งหมด', reject: 'ปฏิเสธทั้งหมด',
      manage: 'จัดการตัวเลือก', save: 'บันทึกตัวเลือก', consent: 'ความยินยอม', li: 'ประโยชน์โดยชอบด้วยกฎหมาย', object: 'คัดค้านประโยชน์โดยชอบด้วยกฎหมาย',
      retention: 'ระยะเวลาเก็บรักษา: {d} วัน', cats: 'ข้อมูลที่เก็บ: ', cookie: 'อายุคุกกี้: {d} วัน', privacy: 'นโยบายความเป็นส่วนตัว',
      used: 'ใช้โดยพันธมิตร {n} ราย', settings: 'การตั้งค่าความเป็นส่วนตัว', close: 'ปิด', sp: 'วัตถุประสงค์พิเศษ: ', feat: 'คุณลักษณะ: ', other: 'วัตถุประสงค์อื่น',
      gpc: 'เราปฏิบัติตามสัญญาณ Global Privacy Control: เราไม่ขายหรือแบ่งปันข้อมูลของคุณเพื่อการโฆษณา'
    }
  };
  function u(k, n) { var l = UI[core.lang()] || UI.en; return l[k].replace(/\{[nd]\}/, n); }
  var CSS = [
    ':host{all:initial}',
    '.yy{font:normal medium/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans Thai","Noto Sans",Tahoma,sans-serif;color:#111827}',
    '*{box-sizing:border-box}', '[hidden]{display:none!important}',
    '.l1{position:fixed;z-index:2147483646;left:0;right:0;bottom:0;max-height:85vh;overflow:auto;padding:16px;background:#fff;border-top:1px solid #6b7280;box-shadow:0 -4px 24px rgba(0,0,0,.18)}',
    '.in{max-width:64rem;margin:0 auto}', 'h2{font-size:1.15em;line-height:1.3;margin:0 0 8px}', 'h3{font-size:1em;margin:12px 0 4px}',
    'p,ul{margin:0 0 8px}', 'ul{padding-left:1.25em}', 'a{color:#1d4ed8}',
    '.row{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}', '.row button{flex:1 1 10em}',
    'button{font:inherit;font-weight:600;min-height:44px;padding:8px 16px;border:2px solid #1d4ed8;border-radius:6px;background:#1d4ed8;color:#fff;cursor:pointer}',
    'button.s{background:#fff;color:#1d4ed8}', ':focus-visible{outline:3px solid #1d4ed8;outline-offset:2px}',
    'dialog:not([open]){display:none}',
    'dialog[open]{display:flex;flex-direction:column;position:fixed;inset:0;margin:auto;height:fit-content;width:min(44rem,calc(100vw - 24px));max-height:calc(100vh - 24px);padding:0;border:0;border-radius:10px;background:#fff;color:#111827;box-shadow:0 8px 40px rgba(0,0,0,.35);z-index:2147483647}',
    'dialog::backdrop{background:rgba(17,24,39,.6)}', '.hd{display:flex;gap:8px;padding:16px 16px 0}', '.hd h2{flex:1}',
    '.bd{padding:0 16px;overflow:auto}', '.ft{padding:8px 16px 16px;border-top:1px solid #d1d5db}',
    '.it{border-top:1px solid #d1d5db;padding:8px 0}', '.it label{display:flex;gap:8px;align-items:center;font-size:.9375em}',
    '.d{color:#374151;font-size:.875em}', 'details summary{cursor:pointer;font-weight:600}',
    'input{width:20px;height:20px;margin:0;accent-color:#1d4ed8}', '.x{min-width:44px;padding:0;border-color:transparent;background:#fff;color:#111827;font-size:1.5em}'
  ].join('\n');
  function h(tag, attrs, kids) {
    var el = D.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v == null || v === false) return;
      if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v); else el.setAttribute(k, v === true ? '' : v);
    });
    [].concat(kids == null ? [] : kids).forEach(function (c) { if (c != null && c !== false) el.append(c); });
    return el;
  }
  function btn(label, fn, key, cls) { return h('button', { type: 'button', 'data-k': key, class: cls, onclick: fn }, label); }
  function name(map, id) { return (map[id] && map[id].name) || String(id); }
  function usedBy(p, key) { return vendorIds().filter(function (v) { return has(gvl.vendors[v][key] || [], p); }).length; }
  function safeUrl(x) { try { return /^https?:$/.test(new URL(x).protocol) ? x : null; } catch (e) { return null; } }

  // Stacks on layer 1: the largest stacks of purposes only whose purposes
  // are all still unlisted, so each purpose shows once; the rest one by
  // one. Special features are always listed by themselves.
  function layer1Items() {
    var left = ids(gvl.purposes), out = [];
    Object.keys(gvl.stacks || {}).map(function (k) { return gvl.stacks[k]; })
      .filter(function (s) { return !(s.specialFeatures || []).length && s.purposes.length > 1; })
      .sort(function (a, b) { return b.purposes.length - a.purposes.length; })
      .forEach(function (s) {
        if (!s.purposes.every(function (p) { return has(left, p); })) return;
        left = left.filter(function (p) { return !has(s.purposes, p); });
        out.push(h('li', { 'data-stack': s.id }, s.name));
      });
    return { purposes: out.concat(left.map(function (p) { return h('li', { 'data-purpose': p }, name(gvl.purposes, p)); })), sf: ids(gvl.specialFeatures) };
  }

  function mount() {
    host = D.createElement('yinyom-tcf');
    shadow = host.attachShadow({ mode: 'open' });
    try { var sh = new CSSStyleSheet(); sh.replaceSync(CSS); shadow.adoptedStyleSheets = [sh]; } catch (e) { shadow.append(h('style', null, CSS)); }
    l1 = h('section', { class: 'l1', 'aria-labelledby': 'yt-t', hidden: true });
    l2 = h('dialog', { 'aria-modal': 'true', 'aria-labelledby': 'yt-2', onclose: onClose, onkeydown: trap });
    shadow.append(h('div', { class: 'yy' }, [l1, l2]));
    D.body.prepend(host);
  }
  function renderL1() {
    var n = vendorIds().length, items = layer1Items();
    l1.textContent = '';
    l1.append(h('div', { class: 'in' }, [
      h('h2', { id: 'yt-t' }, u('title', n)),
      h('p', null, u('intro', n)),
      core.gpc() && Object.keys(T.purposes || {}).some(gpcBlocked) && h('p', { role: 'note', 'data-k': 'gpc' }, u('gpc')),
      h('h3', null, u('purposes')), h('ul', { 'data-k': 'l1-purposes' }, items.purposes),
      items.sf.length > 0 && h('h3', null, u('sf')),
      items.sf.length > 0 && h('ul', { 'data-k': 'l1-sf' }, items.sf.map(function (f) { return h('li', null, name(gvl.specialFeatures, f)); })),
      h('p', null, h('a', { href: '#', 'data-k': 'l1-count', onclick: function (e) { e.preventDefault(); open('yt-vs'); } }, u('vendors', n))),
      h('div', { class: 'row' }, [
        btn(u('accept'), function () { commit(everything(true), 'accept_all', true, 1); }, 'acc'),
        btn(u('reject'), function () { commit(everything(false), 'reject_all', false, 1); }, 'rej'),
        btn(u('manage'), function () { open(); }, 'man', 's')
      ])
    ]));
  }
  function check(label, on, set, key, describedBy) {
    return h('label', null, [h('input', {
      type: 'checkbox', 'data-k': key, checked: !!on, 'aria-describedby': describedBy,
      onchange: function (e) { set(e.target.checked); }
    }), label]);
  }
  function toggle(list, id, on) { var i = list.indexOf(id); if (on && i < 0) list.push(id); if (!on && i >= 0) list.splice(i, 1); }
  function renderL2() {
    var d = draft, dc = gvl.dataCategories || {};
    var purposes = ids(gvl.purposes).map(function (p) {
      var pid = 'yt-p' + p;
      return h('div', { class: 'it', 'data-purpose': p }, [
        h('h3', { id: pid }, name(gvl.purposes, p)),
        h('p', { class: 'd' }, gvl.purposes[p].description || ''),
        (gvl.purposes[p].illustrations || []).length > 0 && h('ul', { class: 'd' }, gvl.purposes[p].illustrations.map(function (x) { return h('li', null, x); })),
        h('p', { class: 'd' }, u('used', usedBy(p, 'purposes') + usedBy(p, 'legIntPurposes'))),
        check(u('consent'), has(d.pc, p), function (on) { toggle(d.pc, p, on); }, 'pc' + p, pid),
        has(liPurposes(), p) && check(u('object'), !has(d.pli, p), function (on) { toggle(d.pli, p, !on); }, 'pli' + p, pid)
      ]);
    });
    var sfs = ids(gvl.specialFeatures).map(function (f) {
      return h('div', { class: 'it' }, [h('h3', { id: 'yt-f' + f }, name(gvl.specialFeatures, f)),
        h('p', { class: 'd' }, gvl.specialFeatures[f].description || ''),
        check(u('consent'), has(d.sf, f), function (on) { toggle(d.sf, f, on); }, 'sf' + f, 'yt-f' + f)]);
    });
    var other = cfg.purposes.filter(function (p) { return !p.required && !Object.keys(T.purposes || {}).some(function (k) { return T.purposes[k] === p.key; }); });
    var own = other.map(function (p) {
      var t = p.names[core.lang()] || p.names.en || p.names.th || p.key;
      return h('div', { class: 'it' }, check(t, d.own[p.key] === true, function (on) { d.own[p.key] = on; }, 'own-' + p.key));
    });
    var vendors = vendorIds().map(function (v) {
      var x = gvl.vendors[v], vid = 'yt-v' + v, r = x.dataRetention || {}, url = (x.urls || [])[0] || {};
      var days = function (s) { return Math.round((s || 0) / 86400); };
      return h('div', { class: 'it', 'data-vendor': v }, [
        h('details', null, [
          h('summary', { id: vid }, x.name),
          h('p', { class: 'd' }, u('purposes') + ': ' + (x.purposes || []).map(function (p) { return name(gvl.purposes, p); }).join(', ')),
          (x.legIntPurposes || []).length > 0 && h('p', { class: 'd' }, u('li') + ': ' + x.legIntPurposes.map(function (p) { return name(gvl.purposes, p); }).join(', ')),
          (x.specialPurposes || []).length > 0 && h('p', { class: 'd' }, u('sp') + x.specialPurposes.map(function (p) { return name(gvl.specialPurposes, p); }).join(', ')),
          (x.features || []).length > 0 && h('p', { class: 'd' }, u('feat') + x.features.map(function (p) { return name(gvl.features, p); }).join(', ')),
          h('p', { class: 'd', 'data-k': 'ret' + v }, u('retention', r.stdRetention == null ? '?' : r.stdRetention)),
          h('p', { class: 'd', 'data-k': 'cat' + v }, u('cats') + (x.dataDeclaration || []).map(function (c) { return name(dc, c); }).join(', ')),
          x.cookieMaxAgeSeconds != null && h('p', { class: 'd' }, u('cookie', days(x.cookieMaxAgeSeconds))),
          safeUrl(url.privacy) && h('p', { class: 'd' }, h('a', { href: url.privacy, target: '_blank', rel: 'noopener' }, u('privacy')))
        ]),
        has(consentVendors(), v) && check(u('consent'), has(d.vc, v), function (on) { toggle(d.vc, v, on); }, 'vc' + v, vid),
        has(liVendors(), v) && check(u('object'), !has(d.vli, v), function (on) { toggle(d.vli, v, !on); }, 'vli' + v, vid)
      ]);
    });
    l2.textContent = '';
    l2.append(
      h('div', { class: 'hd' }, [h('h2', { id: 'yt-2' }, u('settings')),
        h('button', { type: 'button', class: 'x', 'data-k': 'x', 'aria-label': u('close'), onclick: function () { l2.close(); } }, '×')]),
      h('div', { class: 'bd' }, [h('h3', null, u('purposes'))].concat(purposes,
        sfs.length ? [h('h3', null, u('sf'))].concat(sfs) : [],
        info(gvl.specialPurposes, 'sp'), info(gvl.features, 'feat'),
        own.length ? [h('h3', null, u('other'))].concat(own) : [],
        [h('h3', { 'data-k': 'l2-count', id: 'yt-vs', tabindex: '-1' }, u('vendors', vendorIds().length))], vendors)),
      h('div', { class: 'row ft' }, [
        btn(u('accept'), function () { commit(everything(true), 'accept_all', true, 2); }, 'acc2'),
        btn(u('reject'), function () { commit(everything(false), 'reject_all', false, 2); }, 'rej2'),
        btn(u('save'), function () { commit(draft, 'save_preferences', undefined, 2); }, 'save', 's')
      ]));
  }
  // Special purposes and features: disclosed, nothing to choose.
  function info(map, key) {
    var list = ids(map);
    return list.length ? [h('h3', null, u(key).replace(/: $/, ''))].concat(list.map(function (id) {
      return h('details', { class: 'it' }, [h('summary', null, name(map, id)), h('p', { class: 'd' }, map[id].description || '')]);
    })) : [];
  }
  function copy(m) {
    var c = { pc: m.pc.slice(), sf: m.sf.slice(), vc: m.vc.slice(), pli: m.pli.slice(), vli: m.vli.slice(), own: {} };
    var st = core.stored(), ch = (st && st.choices) || {};
    cfg.purposes.forEach(function (p) { c.own[p.key] = ch[p.key] === true; });
    return c;
  }
  function open(at) {
    if (!gvl) { wantOpen = true; return; }
    draft = copy(model || { pc: [], sf: [], vc: [], pli: liPurposes(), vli: liVendors() });
    renderL2();
    if (!l2.open) l2.showModal();
    shown = true;
    var f = at ? shadow.getElementById(at) : l2.querySelector('input');
    if (f) { f.focus(); if (f.scrollIntoView) f.scrollIntoView(); }
    emit('cmpuishown');
  }
  function onClose() { shown = !l1.hidden; }
  function trap(e) {
    if (e.key !== 'Tab') return;
    var f = Array.from(l2.querySelectorAll('button,input,summary,a[href]')).filter(function (x) { return x.getClientRects().length; });
    var a = shadow.activeElement;
    if (e.shiftKey ? a === f[0] : a === f[f.length - 1]) { e.preventDefault(); (e.shiftKey ? f[f.length - 1] : f[0]).focus(); }
  }
  function hide() {
    l1.hidden = true;
    if (l2.open) l2.close();
    shown = false;
  }
  var wantOpen = false;

  // ---- start ------------------------------------------------------------
  function start(list) {
    if (!list || !list.vendors || !list.purposes) throw new Error('unexpected vendor list');
    gvl = list;
    var m = lsGet(K);
    // A choice stands unless the notice asks again or new vendors joined.
    var stale = core.stale || !m || !Array.isArray(m.disclosed) || vendorIds().some(function (v) { return !has(m.disclosed, v); });
    if (m && !stale) {
      model = m;
      tcString = encodeTc(m);
      gppString = encodeGpp(m);
    }
    var go = function () {
      locator('__tcfapiLocator');
      if (W.__gpp === gpp) locator('__gppLocator');
      mount();
      renderL1();
      core.attach({ open: open, withdraw: function () { commit(everything(false), 'withdraw', false, 2); } });
      if (stale) { l1.hidden = false; shown = true; }
      queue.splice(0).forEach(function (a) { tcfapi.apply(null, a); });
      emit(status());
      if (wantOpen) open();
    };
    if (D.body) go(); else D.addEventListener('DOMContentLoaded', go);
  }
  fetch(core.base + T.vendor_list, { credentials: 'omit' })
    .then(function (r) { if (!r.ok) throw new Error('vendor list HTTP ' + r.status); return r.json(); })
    .then(start)
    .catch(function (e) { console.error('Yinyom TCF: ' + (e && e.message)); });
})();
