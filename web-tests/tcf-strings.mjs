// TC strings encoded by the IAB's own library (@iabtechlabtcf/core), each
// with the library's decoding of it: the oracle for the Rust decoder
// (crates/yinyom-core/tests/tcf_oracle.rs runs this at test time, and falls
// back to the committed output in crates/yinyom-core/tests/tcf-strings.json
// when node is missing).
//
//   node tcf-strings.mjs [seed] [count]   → JSON on stdout
import { GVL, PurposeRestriction, TCModel, TCString } from '@iabtechlabtcf/core';
import { makeGvl, rng } from './tcf-fixture.mjs';

/** What the library decoded, in the Rust decoder's field names. */
export function normalise(tc) {
  const ids = (v) => { const out = []; v.forEach((on, id) => { if (on) out.push(id); }); return out.sort((a, b) => a - b); };
  const pr = tc.publisherRestrictions;
  const restrictions = pr.getRestrictions().map((r) => ({
    purpose: r.purposeId,
    restriction_type: r.restrictionType,
    vendors: pr.getVendors(r).slice().sort((a, b) => a - b),
  })).sort((a, b) => a.purpose - b.purpose || a.restriction_type - b.restriction_type);
  return {
    core: {
      version: tc.version,
      created: tc.created.getTime(),
      last_updated: tc.lastUpdated.getTime(),
      cmp_id: Number(tc.cmpId),
      cmp_version: Number(tc.cmpVersion),
      consent_screen: Number(tc.consentScreen),
      consent_language: tc.consentLanguage.toUpperCase(),
      vendor_list_version: Number(tc.vendorListVersion),
      policy_version: Number(tc.policyVersion),
      is_service_specific: tc.isServiceSpecific,
      use_non_standard_texts: tc.useNonStandardTexts,
      special_feature_opt_ins: ids(tc.specialFeatureOptins),
      purposes_consent: ids(tc.purposeConsents),
      purposes_li_transparency: ids(tc.purposeLegitimateInterests),
      purpose_one_treatment: tc.purposeOneTreatment,
      publisher_cc: tc.publisherCountryCode.toUpperCase(),
      vendor_consents: ids(tc.vendorConsents),
      vendor_legitimate_interests: ids(tc.vendorLegitimateInterests),
      publisher_restrictions: restrictions,
    },
    disclosed_vendors: ids(tc.vendorsDisclosed),
    publisher_tc: {
      purposes_consent: ids(tc.publisherConsents),
      purposes_li_transparency: ids(tc.publisherLegitimateInterests),
      num_custom_purposes: tc.numCustomPurposes,
      custom_purposes_consent: ids(tc.publisherCustomConsents),
      custom_purposes_li_transparency: ids(tc.publisherCustomLegitimateInterests),
    },
  };
}

function subset(r, list, p = 0.5) { return list.filter(() => r() < p); }

/** One random TC model over a random vendor list, encoded. */
export function randomCase(r) {
  // Dense low ids favour a bitfield; a few high ids favour ranges.
  const sparse = r() < 0.5;
  const ids = sparse ? [2, 3, 500, 501, 502, 503, 3000, 3001 + Math.floor(r() * 2000)] : Array.from({ length: 5 + Math.floor(r() * 40) }, (_, i) => i + 1);
  const json = makeGvl({ version: 1 + Math.floor(r() * 4000), ids });
  const tc = new TCModel(new GVL(json));
  const pick = (l) => l[Math.floor(r() * l.length)];
  tc.cmpId = 2 + Math.floor(r() * 4000);
  tc.cmpVersion = 1 + Math.floor(r() * 4000);
  tc.consentScreen = Math.floor(r() * 64);
  tc.consentLanguage = pick(['EN', 'TH', 'DE', 'FR', 'ZH']);
  tc.publisherCountryCode = pick(['TH', 'DE', 'GB', 'AA', 'ZZ']);
  tc.isServiceSpecific = r() < 0.7;
  tc.purposeOneTreatment = r() < 0.3;
  tc.useNonStandardTexts = r() < 0.3;
  const day = Date.UTC(2020, 0, 1) + Math.floor(r() * 2500) * 86400000;
  tc.created = new Date(day);
  tc.lastUpdated = new Date(day + Math.floor(r() * 1e6) * 100);
  tc.purposeConsents.set(subset(r, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
  tc.purposeLegitimateInterests.set(subset(r, [2, 7, 8, 9, 10, 11]));
  tc.specialFeatureOptins.set(subset(r, [1, 2]));
  const all = ids.filter(() => true);
  const dense = r() < 0.5;
  tc.vendorConsents.set(subset(r, all, dense ? 0.9 : 0.3));
  tc.vendorLegitimateInterests.set(subset(r, all, dense ? 0.9 : 0.3));
  if (r() < 0.5) tc.setAllVendorsDisclosed(); else tc.vendorsDisclosed.set(subset(r, all));
  for (const v of subset(r, all, 0.3)) tc.publisherRestrictions.add(v, new PurposeRestriction(1, 0));
  for (const v of subset(r, all.filter((v) => v % 3 === 0), 0.6)) {
    tc.publisherRestrictions.add(v, new PurposeRestriction(7, r() < 0.5 ? 1 : 2));
  }
  tc.publisherConsents.set(subset(r, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
  tc.publisherLegitimateInterests.set(subset(r, [2, 7, 8, 9, 10]));
  const custom = Math.floor(r() * 5);
  if (custom) {
    const cp = {};
    for (let i = 1; i <= custom; i++) cp[i] = { id: i, name: `Custom ${i}`, description: '' };
    tc.customPurposes = cp;
    tc.publisherCustomConsents.set(subset(r, Object.keys(cp).map(Number)));
    tc.publisherCustomLegitimateInterests.set(subset(r, Object.keys(cp).map(Number)));
  }
  const string = TCString.encode(tc);
  return { string, decoded: normalise(TCString.decode(string)) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const seed = Number(process.argv[2] || Date.now() % 2 ** 31);
  const count = Number(process.argv[3] || 200);
  const r = rng(seed);
  const cases = [];
  for (let i = 0; i < count; i++) cases.push(randomCase(r));
  process.stdout.write(JSON.stringify({ seed, cases }) + '\n');
}
