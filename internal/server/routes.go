package server

import (
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/calipsoplus/calipso"
)

// routes lists every endpoint. root serves operations (/healthz, /readyz, /metrics)
// and the SAML endpoints at their configured URLs; the returned router is the base path.
func (s *server) routes(root *mux.Router) (api *mux.Router) {
	root.Use(routeName)

	root.Handle("/healthz", handleHealthz()).Methods(http.MethodGet, http.MethodHead)
	root.Handle("/readyz", s.handleReadyz()).Methods(http.MethodGet, http.MethodHead)
	if s.Config.Server.Metrics {
		root.Handle("/metrics", s.metricsHandler()).Methods(http.MethodGet)
	}

	get := []string{http.MethodGet, http.MethodHead}
	if s.SAML != nil {
		md, acs := s.SAML.MetadataURL(), s.SAML.ACSURL()
		root.Handle(md.Path, s.SAML.MetadataHandler()).Methods(get...)
		// The IdP posts cross-site by design; the assertion itself is the proof (csrf()
		// lets this path through).
		root.Handle(acs.Path, s.handleACS()).Methods(http.MethodPost)
		// Single logout: the IdP's answers and its own LogoutRequests, by either binding.
		slo := s.SAML.SLOURL()
		root.Handle(slo.Path, s.handleSLO()).Methods(http.MethodGet, http.MethodPost)
		// The frontend ends an Umbrella user's logout at mod_shib's logout handler, at
		// the host's root; without mod_shib this answers it.
		root.Handle("/Shibboleth.sso/Logout", s.handleShibbolethLogout()).Methods(get...)
	}

	// The base path's subrouter comes after the root routes: mux tries routes in
	// order, and a subrouter with a NotFoundHandler claims every path under its
	// prefix, including SAML URLs configured under the base path.
	api = root.PathPrefix(strings.TrimSuffix(s.Config.BasePath, "/")).Subrouter()
	api.Use(routeName)

	// Session and identity.
	api.Handle("/login/", s.handleLogin()).Methods(http.MethodPost)
	api.Handle("/logout/", s.handleLogout()).Methods(get...)
	api.Handle("/authenticated/", s.handleAuthenticated()).Methods(get...)
	api.Handle("/settings/", s.handleSettings()).Methods(get...)
	api.Handle("/login/type/", s.handleLoginType()).Methods(get...)
	api.Handle("/users/", s.handleUsers()).Methods(get...)
	api.Handle("/users/{username}/", s.handleUser()).Methods(get...)
	api.Handle("/users/{username}/admin", s.handleUserAdmin()).Methods(http.MethodGet, http.MethodPost)

	// Umbrella (federated login).
	api.Handle("/umbrella/login/", s.handleUmbrellaLogin()).Methods(get...)
	api.Handle("/umbrella/frontend/", s.handleUmbrellaFrontend()).Methods(get...)
	api.Handle("/umbrella/session/", s.handleUmbrellaSession()).Methods(get...)
	api.Handle("/umbrella/wuo/", s.handleUmbrellaWUO()).Methods(http.MethodPost)
	api.Handle("/umbrella/logout/", s.handleUmbrellaLogout()).Methods(get...)

	// OpenID Connect (the original's mozilla-django-oidc paths).
	if s.OpenID != nil {
		api.Handle("/oidc/authenticate/", s.handleOIDCAuthenticate()).Methods(get...)
		api.Handle("/oidc/callback/", s.handleOIDCCallback()).Methods(get...)
		api.Handle("/oidc/logout/", s.handleOIDCLogout()).Methods(get...)
	}

	// Experiments.
	api.Handle("/users/{username}/experiments/", s.handleExperiments()).Methods(get...)
	api.Handle("/favorite/{id}/", s.handleFavorite()).Methods(http.MethodPut)
	if s.Catalogue != nil {
		api.Handle("/experiments/{investigation_id}/users", s.handleInvestigationUsers()).Methods(get...)
	}

	// Images and quotas.
	api.Handle("/images/", s.handleImages()).Methods(get...)
	api.Handle("/images/{public_name}/", s.handleImage()).Methods(http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete)
	api.Handle("/quota/{username}/", s.handleQuota()).Methods(http.MethodGet, http.MethodPost, http.MethodPut)
	api.Handle("/used_quota/{username}/", s.handleUsedQuota()).Methods(get...)

	// Resources.
	api.Handle("/resource/run/{username}/{experiment}/{public_name}/", s.handleRun()).Methods(http.MethodGet)
	api.Handle("/resource/stop/{username}/{name}/{public_name}/", s.handleStop()).Methods(http.MethodGet)
	api.Handle("/resource/rm/{username}/{name}/{public_name}/", s.handleRemove()).Methods(http.MethodGet)
	api.Handle("/resource/list/{username}/", s.handleUserContainers()).Methods(get...)
	api.Handle("/users/{username}/containers/", s.handleUserContainers()).Methods(get...)
	api.Handle("/containers/", s.handleAllContainers(nil)).Methods(get...)
	api.Handle("/activecontainers/", s.handleAllContainers(calipso.LiveStates)).Methods(get...)
	api.Handle("/containers/{id}", s.handleContainer()).Methods(get...)
	api.Handle("/containers/{id}/", s.handleContainer()).Methods(get...)

	// v2: launches answered at once, with their progress as Server-Sent Events.
	api.Handle("/api/v2/resources", s.handleV2Launch()).Methods(http.MethodPost)
	api.Handle("/api/v2/resources", s.handleV2Resources()).Methods(get...)
	api.Handle("/api/v2/resources/{id}", s.handleV2Resource()).Methods(get...)
	api.Handle("/api/v2/resources/{id}/events", s.handleV2Events()).Methods(http.MethodGet)
	api.Handle("/api/v2/resources/{id}/connection", s.handleV2Connection()).Methods(get...)
	api.Handle("/api/v2/resources/{id}/extensions", s.handleV2Extensions()).Methods(http.MethodGet, http.MethodHead, http.MethodPost)
	api.Handle("/api/v2/extensions", s.handleV2PendingExtensions()).Methods(get...)
	api.Handle("/api/v2/extensions/{id}", s.handleV2DecideExtension()).Methods(http.MethodPost)

	// v2: identity and access (bearer API tokens and OpenID JWTs, or the session).
	api.Handle("/api/v2/me", s.handleV2Me()).Methods(get...)
	api.Handle("/api/v2/tokens", s.handleV2Tokens()).Methods(http.MethodGet, http.MethodHead, http.MethodPost)
	api.Handle("/api/v2/tokens/{id}", s.handleV2Token()).Methods(http.MethodDelete)
	api.Handle("/api/v2/users/{username}/roles", s.handleV2UserRoles()).Methods(http.MethodGet, http.MethodHead, http.MethodPut)
	api.Handle("/api/v2/openapi.yaml", s.handleOpenAPI()).Methods(get...)
	return api
}
