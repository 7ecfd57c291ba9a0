-- Ownership by lease (internal/launch): the process working on a record (a launch, a
-- stop) names itself in lease_owner and renews lease_expires by heartbeat; another
-- takes the record over only once the lease has expired. Records made before this
-- migration have no owner, so any process may take them over.
-- leases holds the named leases of background work (the reconciler's leader).
-- resource_events is a launch's progress, read by the v2 API's event stream from any
-- replica.

-- +goose Up
ALTER TABLE resources ADD COLUMN lease_owner VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE resources ADD COLUMN lease_expires {{time}} NULL;

CREATE TABLE leases (
  name VARCHAR(64) NOT NULL PRIMARY KEY,
  holder VARCHAR(64) NOT NULL,
  expires_at {{time}} NOT NULL
){{table}};

CREATE TABLE resource_events (
  resource_id BIGINT NOT NULL,
  seq INTEGER NOT NULL,
  stage VARCHAR(30) NOT NULL,
  message {{text}} NOT NULL,
  created_at {{time}} NOT NULL,
  PRIMARY KEY (resource_id, seq),
  CONSTRAINT resource_events_resource FOREIGN KEY (resource_id) REFERENCES resources (id) ON DELETE CASCADE
){{table}};

-- +goose Down
DROP TABLE resource_events;
DROP TABLE leases;
ALTER TABLE resources DROP COLUMN lease_expires;
ALTER TABLE resources DROP COLUMN lease_owner;
