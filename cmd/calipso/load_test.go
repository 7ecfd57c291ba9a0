package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"testing"
)

// TestLoadToolAgainstServer runs cmd/calipso-load against a real server with two
// users and checks the report and that the run left nothing behind.
func TestLoadToolAgainstServer(t *testing.T) {
	s := newLiveServer(t, 3, "bo")
	s.start()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(t.Context(), loadBinary.build(t, "../calipso-load", "calipso-load"),
		"--url", s.base, "--users", crashUser+":"+crashPassword+",bo:bo-secret",
		"--concurrency", "4", "--requests", "40", "--mix", "4,3,2", "--image", crashImage)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("calipso-load: %v\n%s%s", err, out.String(), errOut.String())
	}
	report := out.String()
	for _, op := range []string{"login", "read", "launch"} {
		if !regexp.MustCompile(`(?m)^\s*` + op + `\s+[1-9][0-9]*\s+`).MatchString(report) {
			t.Errorf("report has no successful %s:\n%s", op, report)
		}
	}
	if n := len(s.containers()); n != 0 {
		t.Errorf("%d containers left after the run\n%s\nserver log:\n%s", n, report, s.logs)
	}
	t.Log("\n" + report)
}
