-- An image may bound the processes and threads of its workloads (calipso.Image.PidsLimit);
-- 0, every existing image's value, means the settings' workloads.pids_limit.

-- +goose Up
ALTER TABLE images ADD COLUMN pids_limit BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE images DROP COLUMN pids_limit;
