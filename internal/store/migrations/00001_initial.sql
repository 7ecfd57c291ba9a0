-- Calipso's application schema, one text for SQLite and MySQL/MariaDB: {{id}}, {{text}},
-- {{time}} and {{table}} are replaced per dialect before goose runs it (store.migrationsFS).

-- +goose Up
CREATE TABLE users (
  id {{id}},
  username VARCHAR(150) NOT NULL,
  uuid CHAR(36) NOT NULL,
  is_admin BOOLEAN NOT NULL DEFAULT FALSE,
  email VARCHAR(254) NOT NULL DEFAULT '',
  uid INTEGER NULL,
  gid INTEGER NULL,
  home VARCHAR(255) NOT NULL DEFAULT '',
  date_joined {{time}} NOT NULL,
  last_login {{time}} NULL,
  experiments_fetched_at {{time}} NULL,
  CONSTRAINT users_username UNIQUE (username),
  CONSTRAINT users_uuid UNIQUE (uuid)
){{table}};

CREATE TABLE experiments (
  id {{id}},
  proposal_id VARCHAR(50) NOT NULL,
  subject VARCHAR(255) NOT NULL DEFAULT '',
  body {{text}} NOT NULL,
  beam_line VARCHAR(200) NOT NULL DEFAULT '',
  uid INTEGER NULL,
  gid INTEGER NULL,
  updated_at {{time}} NOT NULL,
  CONSTRAINT experiments_proposal UNIQUE (proposal_id)
){{table}};

CREATE TABLE sessions (
  id {{id}},
  experiment_id BIGINT NOT NULL,
  session_number VARCHAR(50) NOT NULL,
  subject VARCHAR(255) NOT NULL DEFAULT '',
  body {{text}} NOT NULL,
  start_date {{time}} NULL,
  end_date {{time}} NULL,
  data_set_path {{text}} NOT NULL,
  CONSTRAINT sessions_number UNIQUE (experiment_id, session_number),
  CONSTRAINT sessions_experiment FOREIGN KEY (experiment_id) REFERENCES experiments (id) ON DELETE CASCADE
){{table}};

CREATE TABLE user_experiments (
  id {{id}},
  user_id BIGINT NOT NULL,
  experiment_id BIGINT NOT NULL,
  favorite BOOLEAN NOT NULL DEFAULT FALSE,
  CONSTRAINT user_experiments_pair UNIQUE (user_id, experiment_id),
  CONSTRAINT user_experiments_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT user_experiments_experiment FOREIGN KEY (experiment_id) REFERENCES experiments (id) ON DELETE CASCADE
){{table}};
CREATE INDEX user_experiments_experiment_idx ON user_experiments (experiment_id);

CREATE TABLE images (
  id {{id}},
  public_name VARCHAR(255) NOT NULL,
  image VARCHAR(255) NOT NULL,
  protocol VARCHAR(25) NOT NULL DEFAULT '',
  cpu DOUBLE PRECISION NOT NULL,
  memory VARCHAR(100) NOT NULL,
  hdd VARCHAR(100) NOT NULL,
  resource_type VARCHAR(30) NOT NULL,
  port_hook VARCHAR(255) NOT NULL DEFAULT '',
  log_regex VARCHAR(255) NOT NULL DEFAULT '',
  CONSTRAINT images_public_name UNIQUE (public_name)
){{table}};

CREATE TABLE quotas (
  user_id BIGINT NOT NULL PRIMARY KEY,
  max_simultaneous INTEGER NOT NULL,
  cpu DOUBLE PRECISION NOT NULL,
  memory_bytes BIGINT NOT NULL,
  hdd_bytes BIGINT NOT NULL,
  CONSTRAINT quotas_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
){{table}};

-- A resource is one launch: its quota share is reserved by inserting the row (in the
-- same transaction that checked the quota) and released when it leaves the live
-- states (pending, running, stopping).
CREATE TABLE resources (
  id {{id}},
  user_id BIGINT NOT NULL,
  experiment VARCHAR(255) NOT NULL,
  session_id BIGINT NULL,
  public_name VARCHAR(255) NOT NULL,
  image VARCHAR(255) NOT NULL,
  protocol VARCHAR(25) NOT NULL DEFAULT '',
  resource_type VARCHAR(30) NOT NULL,
  state VARCHAR(20) NOT NULL,
  cpu DOUBLE PRECISION NOT NULL,
  memory_bytes BIGINT NOT NULL,
  hdd_bytes BIGINT NOT NULL,
  engine_name VARCHAR(255) NOT NULL DEFAULT '',
  engine_id VARCHAR(255) NOT NULL DEFAULT '',
  host_port VARCHAR(1024) NOT NULL DEFAULT '',
  guacamole_username VARCHAR(255) NOT NULL DEFAULT '',
  guacamole_password VARCHAR(255) NOT NULL DEFAULT '',
  vnc_password VARCHAR(255) NOT NULL DEFAULT '',
  info {{text}} NOT NULL,
  error {{text}} NOT NULL,
  created_at {{time}} NOT NULL,
  updated_at {{time}} NOT NULL,
  CONSTRAINT resources_user FOREIGN KEY (user_id) REFERENCES users (id)
){{table}};
CREATE INDEX resources_user_state_idx ON resources (user_id, state);
CREATE INDEX resources_state_idx ON resources (state);

CREATE TABLE http_sessions (
  id CHAR(64) NOT NULL PRIMARY KEY,
  username VARCHAR(150) NOT NULL,
  data {{text}} NOT NULL,
  expires_at {{time}} NOT NULL
){{table}};
CREATE INDEX http_sessions_expires_idx ON http_sessions (expires_at);
CREATE INDEX http_sessions_username_idx ON http_sessions (username);

-- What changed, by whom: the original kept the history of every model.
CREATE TABLE audit_log (
  id {{id}},
  at {{time}} NOT NULL,
  actor VARCHAR(150) NOT NULL,
  action VARCHAR(50) NOT NULL,
  object_type VARCHAR(50) NOT NULL,
  object_id VARCHAR(255) NOT NULL,
  detail {{text}} NOT NULL
){{table}};
CREATE INDEX audit_log_object_idx ON audit_log (object_type, object_id);

-- +goose Down
DROP TABLE audit_log;
DROP TABLE http_sessions;
DROP TABLE resources;
DROP TABLE quotas;
DROP TABLE images;
DROP TABLE user_experiments;
DROP TABLE sessions;
DROP TABLE experiments;
DROP TABLE users;
