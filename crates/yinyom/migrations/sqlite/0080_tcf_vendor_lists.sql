-- IAB TCF: the Global Vendor Lists a tenant's banner uses, fetched by the
-- server from the tenant's configured URL and served from our own origin.
-- One row per version seen (vendorListVersion); the newest is the one the
-- banner shows, older ones stay so TC strings made under them can be
-- shown with the list they were made under.
CREATE TABLE tcf_vendor_lists (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    version     BIGINT NOT NULL,
    url         TEXT NOT NULL,
    fetched_at  BIGINT NOT NULL,    -- last fetched (micros); the newest is refreshed daily
    body        TEXT NOT NULL,      -- the list as fetched (JSON)
    PRIMARY KEY (tenant, version)
);
