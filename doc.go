// Package calipso is the domain of Calipso, the resource orchestrator behind a
// research facility's user portal: the vocabulary every other package shares.
//
// Failures carry one of the error codes below (Error, ErrorCode); each package
// declares its sentinel errors with NewError, so that the HTTP layer maps every kind
// to a status through one table and no kind of failure becomes a 500 unnoticed.
//
// The packages around it, one per dependency: quotas (quota arithmetic), experiments
// (the user office), provisioner (the engines: docker, kubernetes, static),
// guacamole, federation (Umbrella), settings, internal/store (SQL), internal/launch
// (the lifecycle), internal/server (HTTP) and cmd/calipso (the wiring).
package calipso
