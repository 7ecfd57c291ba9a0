-- Every change to what a user sees on their experiments page (an experiment or
-- session they take part in, a link, a favourite) bumps their experiments_version,
-- in the same transaction: a page cached under an older version is never served.

-- +goose Up
ALTER TABLE users ADD COLUMN experiments_version BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE users DROP COLUMN experiments_version;
