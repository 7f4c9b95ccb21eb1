-- Banner designs: every version a tenant saved (colours, font, position,
-- texts...), newest = current (also copied in tenants.body). A design is
-- presentation only: it never changes a notice version.
CREATE TABLE banner_designs (
    tenant      TEXT NOT NULL REFERENCES tenants(id),
    version     BIGINT NOT NULL,
    design      TEXT NOT NULL,      -- JSON (yinyom_core::banner::BannerDesign)
    created_by  TEXT NOT NULL,      -- API key or console login id
    created_at  BIGINT NOT NULL,    -- micros
    PRIMARY KEY (tenant, version)
);
