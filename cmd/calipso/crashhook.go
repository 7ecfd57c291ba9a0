//go:build crashtest

package main

import "github.com/calipsoplus/calipso/cmd/calipso/internal/crashhook"

// The crash tests' build (crash_test.go builds with -tags crashtest) arms the hook
// that CALIPSO_CRASH_AT names; other builds have no hook at all.
func init() {
	startHook = func(a *app, getenv func(string) string) error {
		return crashhook.Install(getenv, a.log, a.launch, a.engines, a.cfg.Docker.URL)
	}
}
