-- The highest priority tier a tenant's jobs may ask for (1 high, 0 normal, -1 low), so
-- that on a shared deployment one tenant cannot put all its work ahead of the others'.
ALTER TABLE tenants
    ADD COLUMN max_priority smallint NOT NULL DEFAULT 1
    CONSTRAINT tenants_max_priority_tier CHECK (max_priority BETWEEN -1 AND 1);
