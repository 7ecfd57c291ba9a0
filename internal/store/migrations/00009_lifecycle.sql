-- Resources end by policy (issue: lifecycle policies). expires_at: when the record's
-- lifetime ends; idle_since: since when every activity signal says idle; warned_at:
-- when its user was last warned of an action; started_at and ended_at: when it became
-- running and when it left the live states, for accounting. Extensions are requests
-- for more lifetime, granted within the role's limit or by an admin.

-- +goose Up
ALTER TABLE resources ADD COLUMN expires_at {{time}} NULL;
ALTER TABLE resources ADD COLUMN idle_since {{time}} NULL;
ALTER TABLE resources ADD COLUMN warned_at {{time}} NULL;
ALTER TABLE resources ADD COLUMN started_at {{time}} NULL;
ALTER TABLE resources ADD COLUMN ended_at {{time}} NULL;
CREATE INDEX resources_expires_idx ON resources (state, expires_at);

CREATE TABLE extensions (
  id {{id}},
  resource_id BIGINT NOT NULL,
  requested_by VARCHAR(150) NOT NULL,
  seconds BIGINT NOT NULL,
  reason VARCHAR(1000) NOT NULL,
  state VARCHAR(20) NOT NULL,
  decided_by VARCHAR(150) NOT NULL DEFAULT '',
  created_at {{time}} NOT NULL,
  decided_at {{time}} NULL,
  CONSTRAINT extensions_resource FOREIGN KEY (resource_id) REFERENCES resources (id) ON DELETE CASCADE
){{table}};
CREATE INDEX extensions_resource_idx ON extensions (resource_id);
CREATE INDEX extensions_state_idx ON extensions (state);

-- +goose Down
DROP TABLE extensions;
DROP INDEX resources_expires_idx{{on resources}};
ALTER TABLE resources DROP COLUMN ended_at;
ALTER TABLE resources DROP COLUMN started_at;
ALTER TABLE resources DROP COLUMN warned_at;
ALTER TABLE resources DROP COLUMN idle_since;
ALTER TABLE resources DROP COLUMN expires_at;
