-- Roles beyond the default one and admin (users.is_admin): granted by an admin or the
-- CLI (source "granted"), or mapped at login from the identity provider (source
-- "oidc", "saml", "office"), which replaces that source's rows each time.
-- api_tokens are personal API tokens: only the SHA-256 of the secret is kept.

-- +goose Up
CREATE TABLE user_roles (
  user_id BIGINT NOT NULL,
  role VARCHAR(64) NOT NULL,
  source VARCHAR(20) NOT NULL,
  PRIMARY KEY (user_id, role, source),
  CONSTRAINT user_roles_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
){{table}};

CREATE TABLE api_tokens (
  id {{id}},
  user_id BIGINT NOT NULL,
  name VARCHAR(100) NOT NULL,
  secret_hash CHAR(64) NOT NULL,
  scope VARCHAR(255) NOT NULL,
  created_by VARCHAR(150) NOT NULL,
  created_at {{time}} NOT NULL,
  expires_at {{time}} NOT NULL,
  last_used_at {{time}} NULL,
  revoked_at {{time}} NULL,
  CONSTRAINT api_tokens_secret UNIQUE (secret_hash),
  CONSTRAINT api_tokens_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
){{table}};
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE user_roles;
