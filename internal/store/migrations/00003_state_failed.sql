-- A failed resource's state is spelled "failed", as the domain names it (calipso.Failed);
-- the compat API still answers it as "error", the frontend's word.

-- +goose Up
UPDATE resources SET state = 'failed' WHERE state = 'error';

-- +goose Down
UPDATE resources SET state = 'error' WHERE state = 'failed';
