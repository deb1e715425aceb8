-- name: insert_tenant
INSERT INTO tenants (id, name, webhook_secret) VALUES ($1, $2, $3) RETURNING *;

-- name: get_tenant
SELECT * FROM tenants WHERE id = $1;

-- name: insert_api_key
INSERT INTO api_keys (id, tenant_id, prefix, key_hash) VALUES ($1, $2, $3, $4);

-- name: tenant_for_key
SELECT t.* FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL;

-- name: insert_asset
INSERT INTO assets (id, tenant_id, object_key, name, content_type, size, sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *;

-- name: get_asset
SELECT * FROM assets WHERE id = $1 AND tenant_id = $2;

-- name: list_assets
SELECT * FROM assets WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2;

-- name: list_tenants
SELECT t.id, t.name, t.created_at, t.max_priority,
       count(k.id) FILTER (WHERE k.revoked_at IS NULL) AS active_keys
FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id
GROUP BY t.id ORDER BY t.created_at, t.id;

-- name: list_keys
SELECT id, prefix, created_at, revoked_at FROM api_keys
WHERE tenant_id = $1 ORDER BY created_at, id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = now()
WHERE id = $1 AND revoked_at IS NULL RETURNING id;

-- name: get_key
SELECT id, tenant_id, prefix, created_at, revoked_at FROM api_keys WHERE id = $1;

-- name: set_max_priority
UPDATE tenants SET max_priority = $2 WHERE id = $1 RETURNING *;
