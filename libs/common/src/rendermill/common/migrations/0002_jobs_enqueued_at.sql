-- When the job's first queue message was sent. A queue that cannot be searched for a
-- job's message (SQS) tells a job whose message was never sent (the gateway died between
-- commit and send) by this being NULL.
ALTER TABLE jobs ADD COLUMN enqueued_at timestamptz;
UPDATE jobs SET enqueued_at = created_at WHERE status <> 'queued' OR attempt > 0;
