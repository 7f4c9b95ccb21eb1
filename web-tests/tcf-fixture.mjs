// A small Global Vendor List in the v3 format (TCF v2.2), made for tests:
// the framework's 11 purposes, 2 special purposes, 3 features, 2 special
// features, 2 stacks, 11 data categories, and vendors whose declarations vary
// with their id. Never fetched from the network.

/** A deterministic PRNG (mulberry32), so a seed reproduces a case. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PURPOSES = [
  'Store and/or access information on a device',
  'Use limited data to select advertising',
  'Create profiles for personalised advertising',
  'Use profiles to select personalised advertising',
  'Create profiles to personalise content',
  'Use profiles to select personalised content',
  'Measure advertising performance',
  'Measure content performance',
  'Understand audiences through statistics or combinations of data from different sources',
  'Develop and improve services',
  'Use limited data to select content',
];

function named(list) {
  const out = {};
  list.forEach((name, i) => {
    const id = i + 1;
    out[id] = { id, name, description: `${name} (test description).`, illustrations: [] };
  });
  return out;
}

/**
 * A vendor list with vendors `ids` (default 1-12). Vendor declarations are a
 * function of the id: every vendor asks consent for purpose 1, odd ids also
 * for 2-4, ids divisible by 3 claim legitimate interest for 7-8 (flexible),
 * even ids use special feature 1.
 */
export function makeGvl({ version = 42, ids = Array.from({ length: 12 }, (_, i) => i + 1) } = {}) {
  const vendors = {};
  for (const id of ids) {
    const purposes = [1];
    if (id % 2 === 1) purposes.push(2, 3, 4);
    const legIntPurposes = id % 3 === 0 ? [7, 8] : [];
    vendors[id] = {
      id,
      name: `Test Vendor ${id}`,
      purposes,
      legIntPurposes,
      flexiblePurposes: legIntPurposes.slice(),
      specialPurposes: [1],
      features: id % 4 === 0 ? [1] : [],
      specialFeatures: id % 2 === 0 ? [1] : [],
      cookieMaxAgeSeconds: 86400 * (id % 5 + 1),
      usesCookies: true,
      cookieRefresh: false,
      usesNonCookieAccess: false,
      deviceStorageDisclosureUrl: `https://vendor${id}.example/devices.json`,
      dataRetention: { stdRetention: 30 * id, purposes: { 1: 10 + id }, specialPurposes: {} },
      urls: [{ langId: 'en', privacy: `https://vendor${id}.example/privacy`, legIntClaim: `https://vendor${id}.example/li` }],
      dataDeclaration: [1, 2, (id % 9) + 3],
    };
  }
  return {
    gvlSpecificationVersion: 3,
    vendorListVersion: version,
    tcfPolicyVersion: 5,
    lastUpdated: '2026-11-26T16:00:00Z',
    purposes: named(PURPOSES),
    specialPurposes: named(['Ensure security, prevent and detect fraud, and fix errors', 'Deliver and present advertising and content']),
    features: named(['Match and combine data from other data sources', 'Link different devices', 'Identify devices based on information transmitted automatically']),
    specialFeatures: named(['Use precise geolocation data', 'Actively scan device characteristics for identification']),
    stacks: {
      1: { id: 1, purposes: [], specialFeatures: [1, 2], name: 'Precise geolocation data, and identification through device scanning', description: 'Stack 1 (test).' },
      2: { id: 2, purposes: [2, 7], specialFeatures: [], name: 'Advertising based on limited data and advertising measurement', description: 'Stack 2 (test).' },
    },
    dataCategories: named(['IP addresses', 'Device characteristics', 'Device identifiers', 'Probabilistic identifiers', 'Authentication-derived identifiers',
      'Browsing and interaction data', 'User-provided data', 'Non-precise location data', 'Precise location data', 'Users\u2019 profiles', 'Privacy choices']),
    vendors,
  };
}
