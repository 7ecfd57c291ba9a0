-- A login through SAML keeps what names it at the identity provider (a hash of the
-- NameID, and the SessionIndex), so that the IdP's single logout finds its sessions.

-- +goose Up
ALTER TABLE http_sessions ADD COLUMN sso_subject CHAR(64) NOT NULL DEFAULT '';
ALTER TABLE http_sessions ADD COLUMN sso_session VARCHAR(255) NOT NULL DEFAULT '';
CREATE INDEX http_sessions_sso_idx ON http_sessions (sso_subject);

-- +goose Down
DROP INDEX http_sessions_sso_idx{{on http_sessions}};
ALTER TABLE http_sessions DROP COLUMN sso_session;
ALTER TABLE http_sessions DROP COLUMN sso_subject;
