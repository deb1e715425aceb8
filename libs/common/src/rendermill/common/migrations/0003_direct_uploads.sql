-- Direct uploads: the client PUTs a file's parts straight to the store by expiring URLs,
-- then completes the upload, which turns it into an asset with the same id (and object
-- key). A row outlives its upload: `cleanup_at` is when the store's leftovers of an upload
-- that did not complete (its parts, a refused object) are next due to be removed, NULL
-- once nothing can be left.
CREATE TABLE direct_uploads (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    object_key       text NOT NULL,
    name             text NOT NULL,
    content_type     text NOT NULL,
    size             bigint NOT NULL CHECK (size > 0),
    -- As the client declared it (the gateway never reads the bytes); NULL if it did not.
    sha256           text,
    part_size        bigint NOT NULL CHECK (part_size > 0),
    part_count       integer NOT NULL CHECK (part_count > 0),
    -- The store's id of the multipart upload the parts go to.
    store_upload_id  text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'completing', 'completed', 'aborted',
                                       'expired', 'failed')),
    expires_at       timestamptz NOT NULL,
    cleanup_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX direct_uploads_pending ON direct_uploads (expires_at) WHERE status = 'pending';
CREATE INDEX direct_uploads_completing ON direct_uploads (updated_at) WHERE status = 'completing';
CREATE INDEX direct_uploads_cleanup ON direct_uploads (cleanup_at) WHERE cleanup_at IS NOT NULL;
