-- The reconciler looks records up by their workload's name for each engine event.

-- +goose Up
CREATE INDEX resources_engine_name ON resources (engine_name);

-- +goose Down
DROP INDEX resources_engine_name{{on resources}};
